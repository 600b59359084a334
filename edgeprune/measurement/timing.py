"""Timing primitives: a thin timing loop, statistics, repeated rounds and paired comparisons.

The loop only calls a prepared zero-argument callable between two clock reads, so the harness
adds almost nothing to the runtime's own time (benchmarks/runtimes.py shows it against a bare loop).
Comparisons interleave rounds of every candidate so drift (thermal, noisy neighbours) hits all of
them alike; a speedup is the median of per-round p50 ratios, with the min-max spread over rounds.
Short rounds follow drift best, but each switch between candidates disturbs the next one, so every
round of a comparison starts with a short untimed settle (see `SETTLE_S`).
"""
from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from edgeprune.errors import BenchmarkError, ConfigError

Clock = Callable[[], int]  # nanoseconds

# Untimed calls at the start of every round of an interleaved comparison, in seconds. Why: ONNX Runtime's
# intra-op threads keep spinning after a run, so the first 5-7 calls of the next session (EfficientNet-Lite0,
# 2 cores) ran 2x slow; with 10 calls per round that bias moved a 1.27x speedup to 1.05x. A 0.15 s settle
# removed it (1.26-1.29x at 10 calls per round), and then 20 rounds of 20 calls measured the ratio with under
# half the spread of 5 rounds of 80 (sd 0.017 vs 0.038 over repeats; OpenVINO 0.011 vs 0.033, where
# the machine's speed steps between seconds rather than between calls).
SETTLE_S = 0.15


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Latency statistics in milliseconds over n timed calls."""

    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise BenchmarkError("no timed iterations", hint="raise iters or seconds")
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(int(a.size), float(a.mean()), std, float(a.min()), float(p50), float(p90), float(p95), float(p99), float(a.max()))


@dataclasses.dataclass(frozen=True)
class Timing:
    """Raw timings of one candidate: every sample, and the p50 of each round."""

    samples_ms: tuple[float, ...]
    round_p50_ms: tuple[float, ...]
    warmup: int
    settle_s: float = 0.0  # untimed seconds at the start of every round

    @property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms)


@dataclasses.dataclass
class BenchResult:
    name: str
    backend: str
    batch: int
    stats: LatencyStats
    round_p50_ms: list[float]
    warmup: int
    compile_time_s: float | None = None
    settle_s: float = 0.0  # untimed seconds at the start of every round (bench.SETTLE_S in comparisons)
    peak_rss_mb: float | None = None  # whole process, so far
    load_rss_mb: float | None = None  # what loading this session added
    artifact_bytes: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    env: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Inferences (samples) per second at the mean latency."""
        return self.batch * 1000.0 / self.stats.mean if self.stats.mean > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["throughput"] = self.throughput
        return d


@dataclasses.dataclass(frozen=True)
class Speedup:
    """Speedup of `candidate` over `baseline`: median of per-round p50 ratios and its spread."""

    baseline: str
    candidate: str
    median: float
    min: float
    max: float
    rounds: int
    ci_low: float | None = None  # distribution-free ~95% interval of the median (median_interval)
    ci_high: float | None = None

    def __str__(self) -> str:
        return f"{self.median:.2f}x (rounds {self.min:.2f}-{self.max:.2f}, n={self.rounds})"


def _check_counts(warmup: int, iters: int | None, seconds: float | None, rounds: int, settle_s: float = 0.0) -> None:
    if settle_s < 0:
        raise ConfigError(f"settle_s must be >= 0, got {settle_s}", hint="pass settle_s=0.15 (seconds)")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}", hint="pass --warmup 20")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}", hint="pass --rounds 5")
    if seconds is None and (iters is None or iters < rounds):
        raise ConfigError(f"iters must be >= rounds ({rounds}), got {iters}", hint="pass --iters 200")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}", hint="pass --seconds 10")


def _settle(fn: Callable[[], Any], seconds: float, clock: Clock) -> None:
    """Call `fn` untimed until `seconds` have passed (at least once when seconds > 0)."""
    if seconds <= 0:
        return
    deadline = clock() + int(seconds * 1e9)
    while True:
        fn()
        if clock() >= deadline:
            return


def _time_calls(fn: Callable[[], Any], n: int | None, seconds: float | None, clock: Clock) -> list[float]:
    """Time `fn` n times, or until `seconds` have passed; one sample (ms) per call."""
    out: list[float] = []
    deadline = None if seconds is None else clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        out.append((t1 - t0) / 1e6)
        if n is not None and len(out) >= n:
            return out
        if deadline is not None and t1 >= deadline:
            return out


def measure_many(
    fns: Sequence[Callable[[], Any]],
    *,
    warmup: int = 20,
    iters: int | None = 200,
    seconds: float | None = None,
    rounds: int = 5,
    settle_s: float = 0.0,
    clock: Clock = time.perf_counter_ns,
    progress: Callable[[int, int], None] | None = None,
) -> list[Timing]:
    """Time several candidates in interleaved rounds. `iters`/`seconds` are per candidate, split over rounds;
    each candidate's round starts with `settle_s` seconds of untimed calls (not counted in `iters`)."""
    _check_counts(warmup, iters, seconds, rounds, settle_s)
    per_round = None if seconds is not None else max(1, iters // rounds)
    round_seconds = None if seconds is None else seconds / rounds
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    p50s: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        for i, fn in enumerate(fns):
            _settle(fn, settle_s, clock)
            got = _time_calls(fn, per_round, round_seconds, clock)
            samples[i].extend(got)
            p50s[i].append(float(np.median(got)))
        if progress:
            progress(r + 1, rounds)
    return [Timing(tuple(s), tuple(p), warmup, settle_s) for s, p in zip(samples, p50s)]


def measure(fn: Callable[[], Any], **kwargs) -> Timing:
    """Time one zero-argument callable (see `measure_many` for the arguments)."""
    return measure_many([fn], **kwargs)[0]


def bare_loop_ms(fn: Callable[[], Any], iters: int) -> float:
    """Mean ms per call of a loop with a single clock read on each side: the overhead reference."""
    t0 = time.perf_counter_ns()
    for _ in range(iters):
        fn()
    return (time.perf_counter_ns() - t0) / 1e6 / iters


def speedup(baseline: BenchResult, candidate: BenchResult) -> Speedup:
    if len(baseline.round_p50_ms) != len(candidate.round_p50_ms):
        raise BenchmarkError("speedup needs the same number of rounds on both sides", hint="benchmark them together")
    ratios = [b / c for b, c in zip(baseline.round_p50_ms, candidate.round_p50_ms) if c > 0]
    if not ratios:
        raise BenchmarkError(f"no usable rounds to compare '{candidate.name}' with '{baseline.name}'")
    low, high = median_interval(ratios)
    return Speedup(baseline.name, candidate.name, statistics.median(ratios), min(ratios), max(ratios), len(ratios),
                   low, high)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median of `values`: order statistics x_(k) and x_(n+1-k) with the
    largest k for which P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. Why order statistics: per-round
    ratios on a shared machine are skewed (a busy round is slow, never fast), so a normal interval would
    lie. Below 6 values no k qualifies at 95% and the interval is the whole range (min, max)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise BenchmarkError("no values to take a median interval of")
    tail, k, below = (1 - confidence) / 2, 0, 0.0
    while k < n // 2 and below + math.comb(n, k) / 2 ** n <= tail:
        below += math.comb(n, k) / 2 ** n
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def compare(results: Sequence[BenchResult]) -> list[Speedup]:
    """Speedup of every result over the first one."""
    return [speedup(results[0], r) for r in results[1:]]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import sys

    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def random_inputs(specs, batch: int | None = None, seed: int = 0, seq_len: int = 128) -> dict[str, np.ndarray]:
    """Inputs for timing when none are given. Integer inputs get values a tokenizer would give
    (ids in a small vocab range, all-ones masks, zero token types) so kernels do real work."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        lead = spec.shape[0] if spec.shape else None
        if batch is not None and isinstance(lead, int) and lead > 0 and lead != batch:
            # A static batch dim would silently override --batch and make throughput wrong.
            raise ConfigError(f"input '{spec.name}' has a static batch of {lead}, asked for batch {batch}",
                              hint=f"pass --batch {lead}, or export with --dynamic-batch")
        shape = spec.concrete_shape(batch=batch or 1, default_dim=seq_len)
        dtype = np.dtype(spec.dtype)
        name = spec.name.lower()
        if dtype.kind in "iu":
            if "mask" in name:
                out[spec.name] = np.ones(shape, dtype=dtype)
            elif "type" in name or "position" in name:
                out[spec.name] = np.zeros(shape, dtype=dtype)
            else:
                out[spec.name] = rng.integers(1000, 2000, size=shape).astype(dtype)
        elif dtype == np.bool_:
            out[spec.name] = np.ones(shape, dtype=bool)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
    return out
