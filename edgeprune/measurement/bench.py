"""Benchmarking compiled runtime sessions: interleaved rounds over `edgeprune.measurement.timing`'s loop.

The primitives (timing loop, statistics, random inputs) live in `timing`, which imports no backend, so
that backends can time themselves without an import cycle; they are re-exported here as the public API.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from edgeprune.measurement.timing import (  # noqa: F401  (re-exported: edgeprune.benchmark, .measure, ...)
    SETTLE_S,
    Clock,
    LatencyStats,
    Timing,
    BenchResult,
    Speedup,
    measure_many,
    measure,
    bare_loop_ms,
    speedup,
    median_interval,
    compare,
    peak_rss_mb,
    random_inputs,
)
from edgeprune.backends import DEFAULT

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile


def _result(name: str, backend, timing: Timing, batch: int) -> BenchResult:
    from edgeprune.env import environment

    return BenchResult(
        name=name,
        backend=backend.name,
        batch=batch,
        stats=timing.stats,
        round_p50_ms=list(timing.round_p50_ms),
        warmup=timing.warmup,
        compile_time_s=backend.compile_time_s,
        settle_s=timing.settle_s,
        peak_rss_mb=round(peak_rss_mb(), 1),
        load_rss_mb=None if backend.load_rss_mb is None else round(backend.load_rss_mb, 1),
        artifact_bytes=backend.artifact_size_bytes(),
        options=backend.describe(),
        env=environment(),
    )


def benchmark_sessions(
    sessions: Sequence[tuple[str, Any, Mapping[str, np.ndarray]]],
    *,
    batch: int | None = None,
    warmup: int = 20,
    iters: int | None = 200,
    seconds: float | None = None,
    rounds: int = 5,
    settle_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[BenchResult]:
    """Benchmark compiled backends side by side: (label, backend, inputs) each, interleaved rounds.
    `settle_s` defaults to SETTLE_S when there is more than one session (a lone session never switches)."""
    runners = [backend.runner(inputs) for _, backend, inputs in sessions]
    settle = (SETTLE_S if len(sessions) > 1 else 0.0) if settle_s is None else settle_s
    timings = measure_many(runners, warmup=warmup, iters=iters, seconds=seconds, rounds=rounds, settle_s=settle,
                           progress=progress)
    return [_result(label, backend, t, batch or _lead_dim(feeds)) for (label, backend, feeds), t in zip(sessions, timings)]


def _lead_dim(feeds: Mapping[str, np.ndarray]) -> int:
    """Batch of a feed dict: the leading dim of its first input (1 for scalars)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def benchmark(model_or_path, backend: str = DEFAULT, inputs=None, *, warmup: int = 20, iters: int | None = 200,
              seconds: float | None = None, rounds: int = 5, threads: int | None = None, batch: int | None = None,
              options=None, input_shapes=None, name: str | None = None, profile: DeviceProfile | None = None) -> BenchResult:
    """Benchmark a model (module, model spec, .onnx/.xml/.pt2 path) on one runtime; see `edgeprune.measurement.session`."""
    from edgeprune.measurement.session import open_session

    label, sess = open_session(model_or_path, backend, threads=threads, batch=batch or 1, options=options,
                               input_shapes=input_shapes, profile=profile)
    feeds = sess.prepare_inputs(inputs, batch=batch)
    return benchmark_sessions([(name or label, sess, feeds)], batch=batch, warmup=warmup, iters=iters,
                              seconds=seconds, rounds=rounds)[0]
