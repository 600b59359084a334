"""Where a measurement runs: here (the default), or wherever a sweep sends it.

optimize measures in a few places (the dense model, the latency tables, the anchors, each attempt, each precision
candidate). Each goes through `on_target(fn, *args)`. Outside a sweep that is a plain call. Inside one,
`edgeprune.sweeper` installs a placer that runs `fn` as a Ray task on the node that holds the target, owning that
node's CPUs (see edgeprune/sweeper/stages.py). The CPU-heavy work around it (tracing, pruning, compensation,
recovery, export) stays in the config's own task, wherever Ray put it.

Files are the only thing a measurement reads from disk: every `Path` argument is shipped with the call (with the
files beside it that a runtime loads with it: ONNX external data, an OpenVINO .bin), so the target node does not
need the CPU node's disk.
"""
from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

_PLACER: contextvars.ContextVar[Callable[..., Any] | None] = contextvars.ContextVar("edgeprune_placer", default=None)


def on_target(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), run where the target is: here unless a sweep installed a placer."""
    placer = _PLACER.get()
    return fn(*args, **kwargs) if placer is None else placer(fn, args, kwargs)


@contextlib.contextmanager
def placed(placer: Callable[[Callable[..., Any], tuple, dict], Any]) -> Iterator[None]:
    """Within this block, on_target(fn, ...) calls placer(fn, args, kwargs) instead of fn(...)."""
    token = _PLACER.set(placer)
    try:
        yield
    finally:
        _PLACER.reset(token)


def time_files(labelled_paths: Sequence[tuple[str, Path]], runtime: str, feeds, threads: int | None, *,
               warmup: int, iters: int, rounds: int):
    """BenchResults of the given artifacts (ONNX / IR files) timed side by side in interleaved rounds, on the target."""
    return on_target(time_here, list(labelled_paths), runtime, feeds, threads, warmup=warmup, iters=iters, rounds=rounds)


def time_here(labelled_paths: Sequence[tuple[str, Path]], runtime: str, feeds, threads: int | None, *,
              warmup: int, iters: int, rounds: int):
    """time_files' body: compile each file on `runtime` here and time them together (measurement.bench)."""
    from edgeprune.measurement.bench import benchmark_sessions

    return benchmark_sessions(compile_files(labelled_paths, runtime, feeds, threads), warmup=warmup, iters=iters,
                              rounds=rounds)


def compile_files(labelled_paths: Sequence[tuple[str, Path]], runtime: str, feeds, threads: int | None):
    """(label, compiled session, prepared inputs) per file, here: what benchmark_sessions times."""
    from edgeprune.backends import BackendOptions, get_backend

    out = []
    for label, path in labelled_paths:
        sess = get_backend(runtime, BackendOptions(threads=threads)).compile(Path(path))
        out.append((label, sess, sess.prepare_inputs(feeds)))
    return out


def companions(path: Path) -> list[Path]:
    """The files a runtime loads together with `path`: itself, ONNX external data, an OpenVINO IR's weights."""
    found = [path]
    for extra in (path.with_suffix(".bin"), Path(str(path) + ".data"), path.with_suffix(".data")):
        if path.suffix in (".xml", ".onnx") and extra.is_file() and extra not in found:
            found.append(extra)
    return found
