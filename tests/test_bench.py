"""Benchmark statistics are exact on a fake clock and sane on a real one."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeprune.measurement.bench import BenchResult, LatencyStats, compare, measure, measure_many, random_inputs, speedup
from edgeprune.backends import TensorSpec
from edgeprune.errors import BenchmarkError, ConfigError


class FakeClock:
    """A clock the timed callable advances by known amounts: timings are then exact."""

    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now

    def advance_ms(self, ms):
        self.now += int(ms * 1e6)


def test_stats_exact_on_fake_clock():
    clock = FakeClock()
    durations = iter([100.0] * 3 + [float(i) for i in range(1, 101)])  # 3 warmup calls, then 1..100 ms
    timing = measure(lambda: clock.advance_ms(next(durations)), warmup=3, iters=100, rounds=4, clock=clock)
    st = timing.stats
    ref = np.arange(1, 101, dtype=float)
    assert st.n == 100
    assert st.mean == pytest.approx(50.5)
    assert st.min == 1.0 and st.max == 100.0
    assert st.p50 == pytest.approx(np.percentile(ref, 50))
    assert st.p90 == pytest.approx(np.percentile(ref, 90))
    assert st.p99 == pytest.approx(np.percentile(ref, 99))
    assert st.std == pytest.approx(ref.std(ddof=1))
    # 4 rounds of 25 calls: round medians of 1..25, 26..50, ...
    assert timing.round_p50_ms == (13.0, 38.0, 63.0, 88.0)


def test_seconds_budget_on_fake_clock():
    clock = FakeClock()
    timing = measure(lambda: clock.advance_ms(10), warmup=0, iters=None, seconds=1.0, rounds=2, clock=clock)
    assert timing.stats.n == 100  # 2 rounds x 0.5 s / 10 ms
    assert timing.stats.p50 == pytest.approx(10.0)


def test_the_default_clock_is_the_monotonic_ns_counter():
    # the fake-clock tests above prove ns -> ms; this pins which real clock feeds them (no real time is asserted)
    import inspect

    assert inspect.signature(measure_many).parameters["clock"].default is time.perf_counter_ns  # measure() wraps it


def test_interleaved_speedup_with_spread():
    clock = FakeClock()
    slow, fast = (lambda: clock.advance_ms(20)), (lambda: clock.advance_ms(10))
    timings = measure_many([slow, fast], warmup=1, iters=30, rounds=3, clock=clock)
    results = [BenchResult(n, "x", 1, t.stats, list(t.round_p50_ms), 1) for n, t in zip(["slow", "fast"], timings)]
    (s,) = compare(results)
    assert s.median == pytest.approx(2.0) and s.min == pytest.approx(2.0) and s.rounds == 3
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.0), pytest.approx(2.0))
    assert results[1].throughput == pytest.approx(100.0)


def _switch_penalised(clock, steady_ms, penalty_calls):
    """Two candidates where each one's first `penalty_calls` calls after the other ran take 3x (ORT's spinning
    threads of the previous session do this on a real machine)."""
    last = {"who": None, "streak": 0}

    def make(who):
        def call():
            last["streak"] = last["streak"] + 1 if last["who"] == who else 1
            last["who"] = who
            clock.advance_ms(steady_ms[who] * (3 if last["streak"] <= penalty_calls else 1))
        return call
    return [make(0), make(1)]


def test_settle_keeps_switch_penalty_out_of_short_rounds():
    clock = FakeClock()
    fns = _switch_penalised(clock, {0: 20.0, 1: 10.0}, penalty_calls=6)
    # 10 calls a round: without a settle 6 of 10 are penalised, the p50 is 3x steady and the ratio collapses
    raw = measure_many(fns, warmup=0, iters=100, rounds=10, clock=clock)
    assert raw[0].round_p50_ms[0] == pytest.approx(60.0)
    settled = measure_many(fns, warmup=0, iters=100, rounds=10, settle_s=0.4, clock=clock)
    assert settled[0].round_p50_ms == (20.0,) * 10 and settled[1].round_p50_ms == (10.0,) * 10
    assert settled[0].stats.n == 100 and settled[0].stats.max == 20.0  # settle calls are never timed samples
    assert (raw[0].settle_s, settled[1].settle_s) == (0.0, 0.4)  # results say how they were measured


def test_settle_defaults_on_for_comparisons_only(monkeypatch):
    import edgeprune.measurement.bench as bench

    seen = []
    monkeypatch.setattr(bench, "measure_many", lambda fns, **kw: seen.append(kw["settle_s"]) or [])
    monkeypatch.setattr(bench, "_result", lambda *a: None)

    class Sess:
        def runner(self, feeds):
            return lambda: None
    bench.benchmark_sessions([("a", Sess(), {})], iters=10, rounds=2)
    bench.benchmark_sessions([("a", Sess(), {}), ("b", Sess(), {})], iters=10, rounds=2)
    bench.benchmark_sessions([("a", Sess(), {}), ("b", Sess(), {})], iters=10, rounds=2, settle_s=0.0)
    assert seen == [0.0, bench.SETTLE_S, 0.0]
    with pytest.raises(ConfigError, match="settle_s"):
        measure_many([lambda: None], iters=10, rounds=2, settle_s=-1)


def test_median_interval_order_statistics():
    from edgeprune.measurement.bench import median_interval

    # n=20: P(Bin(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577, so k = 6: x_(6) and x_(15)
    assert median_interval([float(i) for i in range(1, 21)]) == (6.0, 15.0)
    assert median_interval([float(i) for i in range(20, 0, -1)]) == (6.0, 15.0)  # order of rounds is irrelevant
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few rounds for 95%: the whole range
    assert median_interval([float(i) for i in range(1, 11)]) == (2.0, 9.0)  # n=10: P(Bin <= 1) = 0.011, k = 2
    assert median_interval([1.0] * 9 + [10.0]) == (1.0, 1.0)  # one busy round cannot widen it
    with pytest.raises(BenchmarkError):
        median_interval([])


def test_speedup_needs_matching_rounds():
    st = LatencyStats.from_samples([1.0, 2.0])
    with pytest.raises(BenchmarkError):
        speedup(BenchResult("a", "x", 1, st, [1.0, 1.0], 0), BenchResult("b", "x", 1, st, [1.0], 0))


@pytest.mark.parametrize("kwargs, field", [({"warmup": -1}, "warmup"), ({"rounds": 0}, "rounds"),
                                            ({"iters": 2, "rounds": 5}, "iters"), ({"iters": None, "seconds": -1.0}, "seconds")])
def test_bad_counts_are_config_errors(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        measure(lambda: None, **kwargs)


def test_random_inputs_look_like_tokenizer_output():
    specs = [TensorSpec("input_ids", ("batch", "seq"), "int64"), TensorSpec("attention_mask", ("batch", "seq"), "int64"),
             TensorSpec("token_type_ids", ("batch", "seq"), "int64"), TensorSpec("x", (2, 3), "float32")]
    feeds = random_inputs(specs, batch=2, seq_len=16)
    assert feeds["input_ids"].shape == (2, 16) and feeds["input_ids"].min() >= 1000
    assert feeds["attention_mask"].sum() == 32 and feeds["token_type_ids"].sum() == 0
    assert feeds["x"].shape == (2, 3) and feeds["x"].dtype == np.float32


def test_static_batch_mismatch_is_refused():
    with pytest.raises(ConfigError, match="static batch of 1"):
        random_inputs([TensorSpec("x", (1, 3), "float32")], batch=8)
