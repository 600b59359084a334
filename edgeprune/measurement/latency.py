"""Latency model per (device profile, runtime): measured tables, roofline estimates, imported tables.

A prunable layer is described by its GEMM geometry (M tokens/pixels x K in x N out, or a conv).
- measured: the layer alone as a tiny ONNX graph (built with onnx.helper: no exporter round-trip, so a
  sweep over widths takes seconds), timed on the host runtime, cached on disk keyed by
  (profile, runtime, runtime version, threads, shape). Only valid when the host is the target.
- roofline: t = max(MACs / (peak * eta_c), bytes / (BW * eta_m)) + t_launch, with widths rounded up
  to the profile's channel multiple (a width between two multiples costs the upper one: staircase).
- imported: a JSON table measured on the target by the bundle runner.
Whole-model prediction = measured dense total - sum(dense layer times) + sum(layer times at new widths):
the layers we do not prune keep their measured cost.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from edgeprune.precisions import bytes_per_element
from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    from edgeprune.targets.target import Target


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """GEMM view of a layer: out[M, N] = in[M, K] @ W[K, N]. Convs: M = batch*H_out*W_out, K = C_in*kh*kw/groups."""

    m: int
    k: int
    n: int
    kind: str = "linear"  # linear | conv
    kernel: int = 1
    groups: int = 1
    spatial: int = 1  # conv output H = W (square), for measuring the real conv

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    def with_widths(self, k: int | None = None, n: int | None = None) -> "LayerShape":
        return dataclasses.replace(self, k=k or self.k, n=n or self.n)

    def key(self) -> str:
        return f"{self.kind}:{self.m}x{self.k}x{self.n}:k{self.kernel}:g{self.groups}:s{self.spatial}"


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple) if multiple > 1 else x


@dataclasses.dataclass(frozen=True)
class Roofline:
    """Analytic latency from peak compute and bandwidth; eta are efficiencies fitted from measurements."""

    peak_ops: float  # multiply-adds count as 2 ops
    bandwidth: float  # bytes/s
    channel_multiple: int = 1
    bytes_per_element: int = 4
    eta_compute: float = 0.35
    eta_memory: float = 0.6
    launch_s: float = 5e-6
    relative: bool = False  # True: no peak figure in the profile, times are MAC-proportional units

    def layer_s(self, shape: LayerShape) -> float:
        k, n = _round_up(shape.k, self.channel_multiple), _round_up(shape.n, self.channel_multiple)
        ops = 2.0 * shape.m * k * n
        bytes_moved = self.bytes_per_element * (shape.m * k + k * n + shape.m * n)
        return max(ops / (self.peak_ops * self.eta_compute), bytes_moved / (self.bandwidth * self.eta_memory)) + self.launch_s

    def fitted(self, shapes: list[LayerShape], measured_s: list[float]) -> "Roofline":
        """Scale both efficiencies by the median measured/predicted ratio (one free parameter, robust)."""
        ratios = [m / self.layer_s(s) for s, m in zip(shapes, measured_s) if m > 0]
        if not ratios:
            return self
        r = float(np.median(ratios))
        return dataclasses.replace(self, eta_compute=self.eta_compute / r, eta_memory=self.eta_memory / r)


def roofline_for(target: Target, precision: str = "fp32") -> Roofline:
    """A Roofline from the target device's peak compute and memory bandwidth, on its runtime's width staircase."""
    peak = target.profile.peak_ops(precision)
    bw = target.profile.bandwidth_bytes_per_s()
    multiple = target.channel_multiple(precision)
    bpe = bytes_per_element(precision)
    if not peak:
        # CPU profiles carry no sourced clock, hence no peak. Speedup budgets only need relative cost, so
        # fall back to cost proportional to MACs on the channel-multiple staircase (memory term off);
        # absolute milliseconds from it mean nothing and are labelled so (Roofline.relative).
        return Roofline(1e12, float("inf"), int(multiple or 1), bpe, eta_compute=1.0, launch_s=0.0, relative=True)
    if not bw:
        raise ConfigError(f"profile '{target.name}' has a peak {precision} figure but no memory bandwidth",
                          hint="add memory.bandwidth to the profile, or measure on the target")
    return Roofline(float(peak), float(bw), int(multiple or 1), bpe)


# -- measured tables ------------------------------------------------------------------------------

def _linear_graph(shape: LayerShape, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((shape.k, shape.n)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(shape.n).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape.m, shape.k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape.m, shape.n])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _conv_graph(shape: LayerShape, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c_in = shape.k // (shape.kernel * shape.kernel) * shape.groups
    w = rng.standard_normal((shape.n, c_in // shape.groups, shape.kernel, shape.kernel)).astype(np.float32)
    pad = shape.kernel // 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[pad] * 4, group=shape.groups)
    s = shape.spatial
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, s, s])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, shape.n, s, s])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune")) / "latency"


@dataclasses.dataclass
class LatencyTable:
    """Layer latencies (seconds) keyed by LayerShape.key(), for one (profile, runtime, version, threads)."""

    profile: str
    runtime: str
    version: str | None
    threads: int | None
    source: str  # measured | imported | roofline
    entries: dict[str, float] = dataclasses.field(default_factory=dict)

    def get(self, shape: LayerShape) -> float | None:
        return self.entries.get(shape.key())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "latency table") -> "LatencyTable":
        try:
            doc = json.loads(text)
            table = cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls)})
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{where} is not a latency table: {type(err).__name__}: {err}",
                              hint="use a table written by edgeprune (LatencyTable.to_json or the bundle runner)") from err
        if not all(isinstance(v, (int, float)) and v >= 0 for v in table.entries.values()):
            raise ConfigError(f"{where}: every entry must be a non-negative number of seconds")
        return table

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"latency table not found: {p}", hint="check the path")
        return cls.from_json(p.read_text(), where=str(p))

    def cache_path(self) -> Path:
        key = hashlib.sha1(f"{self.profile}|{self.runtime}|{self.version}|{self.threads}".encode()).hexdigest()[:16]
        return cache_dir() / f"{self.runtime}-{key}.json"

    def save(self, path: str | os.PathLike | None = None) -> Path:
        from edgeprune._io import write_text_atomic

        return write_text_atomic(path or self.cache_path(), self.to_json())


def open_table(profile: str, runtime: str, threads: int | None = None, fresh: bool = False) -> LatencyTable:
    """The on-disk cached table for (profile, runtime, installed version, threads), empty if none yet
    (or if `fresh`: then measuring overwrites the cache)."""
    from edgeprune.backends import get_backend_class

    version = get_backend_class(runtime).version()
    table = LatencyTable(profile, runtime, version, threads, "measured")
    path = table.cache_path()
    if path.is_file() and not fresh:
        try:
            cached = LatencyTable.load(path)
            table.entries.update(cached.entries)
        except ConfigError:
            pass  # a corrupt cache is rebuilt, never trusted
    return table


def host_target(target: Target | None) -> Target:
    """`target`, checked to be this machine (None: Target.host()); timing anything else here would be a lie."""
    from edgeprune.targets.target import Target

    target = Target.host() if target is None else target
    if not target.on_host:
        raise ConfigError(f"cannot time for {target.describe()} on this machine",
                          hint="time on the device itself (edgeprune bundle / bench-remote), or use the host profile")
    return target


def measure_layers(shapes: Iterable[LayerShape], target: Target | None = None, *, threads: int | None = None,
                   iters: int = 30, rounds: int = 3, table: LatencyTable | None = None, save: bool = True,
                   fresh: bool = False) -> LatencyTable:
    """Time each shape alone on the target's runtime (p50 seconds); shapes already in the cache are not re-timed
    unless `fresh` (used when the cached table disagrees with a whole-model measurement). The target must be this
    machine (None: Target.host()): a device elsewhere is estimated, never timed here."""
    import tempfile

    import onnx

    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.measurement.bench import measure

    target = host_target(target)
    runtime = target.runtime
    table = table or open_table(target.name, runtime, threads, fresh=fresh)
    todo = [s for s in dict.fromkeys(shapes) if table.get(s) is None]
    with tempfile.TemporaryDirectory() as tmp:
        for i, shape in enumerate(todo):
            path = Path(tmp) / f"l{i}.onnx"
            onnx.save(_conv_graph(shape) if shape.kind == "conv" else _linear_graph(shape), path)
            sess = get_backend(runtime, BackendOptions(threads=threads)).compile(path)
            fn = sess.runner(sess.prepare_inputs(None))
            timing = measure(fn, warmup=5, iters=iters, rounds=rounds)
            # The least round median: other load on the machine only ever adds time, so the minimum
            # over rounds is the estimate least disturbed by it (one noisy entry misleads the planner).
            table.entries[shape.key()] = float(np.min(timing.round_p50_ms)) / 1000.0
    if save and todo:
        table.save()
    return table


@dataclasses.dataclass(frozen=True)
class ModelLatency:
    """Whole-model prediction: measured dense total with the prunable layers' share replaced."""

    dense_total_s: float
    dense_layers_s: Mapping[str, float]  # layer name -> dense seconds

    def predict(self, layer_s: Mapping[str, float]) -> float:
        fixed = self.dense_total_s - sum(self.dense_layers_s.values())
        return max(0.0, fixed) + sum(layer_s.get(n, t) for n, t in self.dense_layers_s.items())


@dataclasses.dataclass(frozen=True)
class WholeModelFit:
    """Monotone piecewise-linear map from the table's whole-model estimate to measured seconds.

    Why: summing isolated layers misses what scales with the widths but is not a GEMM (softmax over
    heads, GELU over FFN width, depthwise/elementwise ops, per-op dispatch), so on ONNX Runtime the
    table over-predicts heavily pruned models (+71% at 2x on MiniLM). The fix is NetAdapt's: time the
    whole model at a few widths (dense + uniformly pruned anchors, one interleaved run) and map the
    table's estimate through those measurements. Outside the anchors the map is proportional.
    """

    raw_s: tuple[float, ...]  # table estimates at the anchors, increasing
    measured_s: tuple[float, ...]  # measured p50 seconds at the same anchors, non-decreasing

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> "WholeModelFit":
        pts = sorted((float(r), float(m)) for r, m in points if r > 0 and m > 0)
        if not pts:
            raise ConfigError("no anchor measurement to fit the latency model to",
                              hint="measure at least the dense model on the target runtime")
        raw = [p[0] for p in pts]
        # Noise can make a smaller anchor time higher than a larger one; the cost of a narrower model
        # never exceeds a wider one's, so take the running max (monotone, so the map is invertible).
        meas = list(np.maximum.accumulate([p[1] for p in pts]))
        return cls(tuple(raw), tuple(meas))

    def __call__(self, raw: float) -> float:
        r, m = self.raw_s, self.measured_s
        if raw <= r[0]:
            return raw * m[0] / r[0]
        if raw >= r[-1]:
            return raw * m[-1] / r[-1]
        return float(np.interp(raw, r, m))

    def inverse(self, seconds: float) -> float:
        r, m = self.raw_s, self.measured_s
        if seconds <= m[0]:
            return seconds * r[0] / m[0]
        if seconds >= m[-1]:
            return seconds * r[-1] / m[-1]
        # np.interp needs increasing x: flat stretches (equal times) map to their first raw value
        m_arr, idx = np.unique(np.asarray(m), return_index=True)
        return float(np.interp(seconds, m_arr, np.asarray(r)[idx]))
