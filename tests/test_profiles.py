"""Device profiles: shipped files, schema rules, loader errors, helper answers (host probe: test_probe.py)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeprune as ep
from edgeprune.errors import ProfileError
from edgeprune.targets.profiles import (list_profiles, load_profile, profile_from_mapping, profile_from_text, profile_names)

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["epyc-zen3", "xeon-spr", "xeon-icelake", "graviton3", "rpi5", "jetson-agx-orin", "jetson-orin-nx",
            "jetson-orin-nano", "jetson-orin-nano-super", "jetson-xavier-nx", "h100-sxm", "a100-sxm", "l4",
            "intel-npu-3720", "hailo-8", "rk3588"]

BASE = {
    "name": "test-gpu",
    "vendor": "NVIDIA",
    "kind": "gpu",
    "description": "a small valid profile that each malformed case breaks in one place",
    "isa_features": ["sparse_tensor_cores"],
    "cores": 8,
    "memory": {"bandwidth": {"value": 204.8, "unit": "GB/s", "source": "HARDWARE.md §1a", "confidence": "V"}},
    "peak": {"int8": {"dense": {"value": 20, "unit": "TOPS", "source": "[S3]", "confidence": "V"},
                      "sparse": {"value": 40, "unit": "TOPS", "source": "[S3]", "confidence": "V"}}},
    "runtimes": [{"name": "tensorrt", "min_version": "10.3", "devices": ["gpu"]}],
    "precisions": ["fp16", "int8"],
    "patterns": {"tensorrt": {"channel": {"multiple": 8, "by_precision": {"int8": 32}},
                              "nm": {"n": 2, "m": 4, "accelerated": "yes", "precisions": ["fp16", "int8"]}}},
}


def _with(path: str, value):
    """BASE with the value at a dotted path replaced (value DELETE removes the key)."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


# -- shipped profiles ----------------------------------------------------------------------------

def test_shipped_profiles_load_and_cover_the_required_devices():
    names = profile_names()
    assert len(names) >= 14
    assert set(REQUIRED) <= set(names), set(REQUIRED) - set(names)
    profiles = list_profiles()
    assert [p.name for p in profiles] == names  # the name inside each file matches its file name
    assert {p.kind for p in profiles} == {"cpu", "gpu", "npu"}
    # the repo folder is what the package ships
    assert sorted(p.stem for p in (REPO / "hw_profiles").glob("*.yaml")) == names


@pytest.mark.parametrize("name", REQUIRED)
def test_shipped_profile_round_trips_through_yaml(name):
    profile = load_profile(name)
    again = profile_from_text(profile.to_yaml(), f"{name} (dumped)")
    assert again == profile
    assert yaml.safe_load(profile.to_yaml())["name"] == name


def test_numbers_and_confidence_survive_loading():
    orin = load_profile("jetson-agx-orin")
    assert orin.memory.bandwidth.value == 204.8 and orin.memory.bandwidth.unit == "GB/s"
    assert orin.memory.bandwidth.confidence == "unconfirmed"
    assert orin.bandwidth_bytes_per_s() == pytest.approx(204.8e9)
    assert orin.peak["int8"].sparse.value == 171 and orin.peak["int8"].sparse.confidence == "V"
    assert orin.peak["int8"].dense.confidence == "D"
    a100 = load_profile("a100-sxm")
    fp16 = a100.peak["fp16"].dense
    assert (fp16.value, fp16.unit, fp16.confidence) == (312, "TFLOPS", "V") and "[S10]" in fp16.source
    assert a100.peak_ops("fp16") == pytest.approx(312e12)
    assert a100.peak_ops("float16", sparse=True) == pytest.approx(624e12)
    assert a100.peak["int8"].dense.confidence == "unconfirmed"
    h100 = load_profile("h100-sxm")
    assert h100.cores == 132 and h100.confidence_of("cores") == "M"
    assert h100.peak_ops("int8", sparse=True) == pytest.approx(3958e12)
    assert h100.bandwidth_bytes_per_s() == pytest.approx(3.35e12) and h100.memory.bandwidth.confidence == "D"
    nano = load_profile("jetson-orin-nano")
    assert nano.peak["int8"].dense.value == 20 and nano.peak["int8"].dense.confidence == "V"
    assert load_profile("hailo-8").peak_ops("int8") == pytest.approx(26e12)
    assert load_profile("intel-npu-3720").constraints.static_shapes is True
    assert load_profile("graviton3").runtime("onnxruntime").min_version == "1.17"
    assert load_profile("rpi5").peak_ops("fp32") is None  # not in HARDWARE.md: left out, not invented


def test_every_shipped_figure_with_a_strong_confidence_has_a_source():
    for p in list_profiles():
        figures = list(p.figures.values()) + [f for e in p.peak.values() for f in (e.dense, e.sparse) if f]
        if p.memory:
            figures += [f for f in (p.memory.size, p.memory.bandwidth) if f]
        assert figures, p.name
        for f in figures:
            assert f.confidence in ("V", "M", "D", "unconfirmed")
            assert f.source or f.confidence == "unconfirmed", (p.name, f)
            if f.confidence == "V":
                assert "[S" in f.source, (p.name, f)  # a vendor figure names its HARDWARE.md source tag


def test_profile_is_frozen():
    p = load_profile("rpi5")
    with pytest.raises(Exception):
        p.cores = 8
    assert ep.load_profile is load_profile and ep.DeviceProfile is type(p)


# -- helper answers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, runtime, pattern, verdict, fragment", [
    ("h100-sxm", "tensorrt", "2:4", "yes", "sparse tensor cores"),
    ("h100-sxm", "tensorrt", "block", "no", "block"),
    ("h100-sxm", "tensorrt", "4:8", "no", "only 2:4"),
    ("h100-sxm", "trt", "n:m", "no", "only 2:4"),
    ("epyc-zen3", "onnxruntime", "unstructured", "no", "no sparse-GEMM"),
    ("xeon-spr", "onnxruntime", "unstructured", "no", "no sparse-GEMM"),
    ("xeon-spr", "openvino", "block", "memory-only", "channels % 64"),
    ("xeon-spr", "openvino", "2:4", "memory-only", "amx_int8"),
    ("xeon-spr", "ov", "unstructured", "memory-only", "INT8"),
    ("xeon-icelake", "openvino", "block", "no", "no AMX"),
    ("jetson-agx-orin", "tensorrt", "2:4", "yes", "fp16, int8"),
    ("jetson-xavier-nx", "tensorrt", "2:4", "no", "Volta"),
    ("intel-npu-3720", "openvino", "unstructured", "memory-only", "6.25"),
    ("rk3588", "rknn", "2:4", "no", "RK3576"),
    ("rpi5", "tflite", "unstructured", "yes", "2/3"),
    ("rpi5", "openvino", "channel", "yes", "multiples of 4"),
    ("hailo-8", "tensorrt", "2:4", "no", "not a runtime"),
])
def test_accelerates(name, runtime, pattern, verdict, fragment):
    got, reason = load_profile(name).accelerates(runtime, pattern)
    assert got == verdict and fragment in reason, reason


def test_accelerates_rejects_an_unknown_pattern():
    with pytest.raises(ProfileError, match="unknown sparsity pattern 'diagonal'"):
        load_profile("h100-sxm").accelerates("tensorrt", "diagonal")


def test_channel_multiple_and_runtime_choice():
    a100, spr, orin = load_profile("a100-sxm"), load_profile("xeon-spr"), load_profile("jetson-agx-orin")
    assert a100.channel_multiple("tensorrt", "fp16") == 64 and a100.channel_multiple("tensorrt", "int8") == 128
    assert orin.channel_multiple() == 4  # preferred runtime (tensorrt), fp32 -> TF32 alignment
    assert orin.channel_multiple("tensorrt", "float16") == 8
    assert spr.channel_multiple("openvino", "int8") == 64 and spr.channel_multiple("ort", "fp32") == 16
    assert spr.channel_multiple("tensorrt", "int8") == 64  # not a runtime here: the largest over its runtimes
    assert load_profile("hailo-8").channel_multiple() == 1  # no alignment rule known
    assert spr.runtime_names() == ["openvino", "onnxruntime", "torch"]
    assert spr.preferred_runtime(["onnxruntime", "openvino"]) == "openvino"
    assert spr.preferred_runtime(["ort"]) == "onnxruntime"
    assert orin.preferred_runtime(["openvino", "onnxruntime"]) == "onnxruntime"
    assert orin.preferred_runtime([]) is None and load_profile("hailo-8").preferred_runtime(["torch"]) is None


def test_other_modules_can_use_a_profile():
    from edgeprune.measurement.latency import roofline_for
    from edgeprune.optimizer.planner import choose_pattern
    from edgeprune.targets.target import target

    roof = roofline_for(target("a100-sxm", runtime="tensorrt"), "fp16")
    assert roof.peak_ops == pytest.approx(312e12) and roof.bandwidth == pytest.approx(2039e9)
    assert roof.channel_multiple == 64
    assert choose_pattern(target("h100-sxm", runtime="tensorrt"), "fp16")[0] == "2:4"
    assert choose_pattern(target("xeon-spr", runtime="onnxruntime"), "int8")[0] == "dense"


# -- malformed profiles ----------------------------------------------------------------------------

BAD = [
    ("missing name", _with("name", DELETE), "field 'name': Field required"),
    ("bad name", _with("name", "Jetson Orin"), "field 'name'"),
    ("bad kind", _with("kind", "tpu"), "field 'kind'"),
    ("negative cores", _with("cores", -4), "field 'cores'"),
    ("cores as text", _with("cores", "eight"), "field 'cores'"),
    ("n >= m", _with("patterns.tensorrt.nm.n", 4), "field 'patterns.tensorrt.nm': n must be smaller than m"),
    ("n without m", _with("patterns.tensorrt.nm.m", DELETE), "field 'patterns.tensorrt.nm'"),
    ("unknown runtime", _with("runtimes.0.name", "tensorflow"), "field 'runtimes.0.name'"),
    ("unknown precision", _with("precisions", ["fp16", "fp64"]), "field 'precisions.1'"),
    ("pattern runtime not listed", _with("patterns.openvino", {"channel": {"multiple": 16}}),
     "field 'patterns.openvino': patterns for runtime 'openvino', which is not in runtimes"),
    ("extra field", _with("colour", "green"), "field 'colour': unknown field"),
    ("bandwidth as string", _with("memory.bandwidth", "204.8 GB/s"), "field 'memory.bandwidth'"),
    ("figure missing source", _with("memory.bandwidth.source", DELETE),
     "field 'memory.bandwidth': confidence V needs a 'source'"),
    ("figure missing confidence", _with("memory.bandwidth.confidence", DELETE), "field 'memory.bandwidth.confidence'"),
    ("bad confidence", _with("memory.bandwidth.confidence", "high"), "field 'memory.bandwidth.confidence'"),
    ("bandwidth unit", _with("memory.bandwidth.unit", "GB"), "field 'memory.bandwidth.unit'"),
    ("negative figure", _with("memory.bandwidth.value", -1.0), "field 'memory.bandwidth.value'"),
    ("infinite figure", _with("memory.bandwidth.value", float("inf")), "field 'memory.bandwidth.value'"),
    ("bad min_version", _with("runtimes.0.min_version", "latest"), "field 'runtimes.0.min_version'"),
    ("min_version as number", _with("runtimes.0.min_version", 10.3), "write the version as a quoted string"),
    ("channel multiple 0", _with("patterns.tensorrt.channel.multiple", 0), "field 'patterns.tensorrt.channel.multiple'"),
    ("by_precision not listed", _with("patterns.tensorrt.channel.by_precision", {"fp32": 4}),
     "field 'patterns.tensorrt.channel.by_precision.fp32'"),
    ("bad verdict", _with("patterns.tensorrt.nm.accelerated", "maybe"), "field 'patterns.tensorrt.nm.accelerated'"),
    ("pattern precision not listed", _with("patterns.tensorrt.nm.precisions", ["bf16"]),
     "field 'patterns.tensorrt.nm.precisions'"),
    ("requires a missing feature", _with("patterns.tensorrt.nm.requires", ["amx_int8"]),
     "field 'patterns.tensorrt.nm.requires'"),
    ("min_sparsity above 1", _with("patterns.tensorrt.nm.min_sparsity", 1.5), "field 'patterns.tensorrt.nm.min_sparsity'"),
    ("sparse below dense", _with("peak.int8.sparse.value", 10), "field 'peak.int8': sparse peak"),
    ("peak precision not listed", _with("peak.fp8", {"dense": {"value": 1, "unit": "TFLOPS", "confidence": "unconfirmed"}}),
     "field 'peak.fp8'"),
    ("peak precision unknown", _with("peak.fp64", {"dense": {"value": 1, "unit": "TFLOPS", "confidence": "unconfirmed"}}),
     "field 'peak.fp64': bad key"),
    ("empty peak entry", _with("peak.int8", {}), "field 'peak.int8': give a 'dense'"),
    ("no runtimes", _with("runtimes", []), "field 'runtimes'"),
    ("duplicate runtime", _with("runtimes", [{"name": "tensorrt"}, {"name": "trt"}]), "field 'runtimes.1.name'"),
    ("static_shapes as text", _with("constraints", {"static_shapes": "sometimes"}), "field 'constraints.static_shapes'"),
    ("unknown device", _with("runtimes.0.devices", ["fpga"]), "field 'runtimes.0.devices.0'"),
    ("provenance of a non-field", _with("provenance", {"colour": {"confidence": "unconfirmed"}}),
     "field 'provenance.colour'"),
]


def test_base_profile_is_valid():
    p = profile_from_mapping(copy.deepcopy(BASE), "base")
    assert p.accelerates("tensorrt", "2:4")[0] == "yes" and p.channel_multiple("tensorrt", "int8") == 32


@pytest.mark.parametrize("case, data, fragment", BAD, ids=[b[0] for b in BAD])
def test_malformed_profile_is_rejected_with_its_field_path(case, data, fragment, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and fragment in message, message
    assert "\n" not in message and "(fix: " in message
    assert info.value.problems  # kept apart for `profiles validate`


@pytest.mark.parametrize("text, fragment", [
    ("- name: a\n- name: b\n", "top level is a list, expected a mapping"),
    ("just a string\n", "top level is a str"),
    ("name: [unclosed\nkind: gpu\n", "YAML syntax error at line"),
    ("name: a\n  kind: : gpu\n", "YAML syntax error"),
    ("", "profile file is empty"),
    ("# only a comment\n\n", "profile file is empty"),
    ("name: 2024-13-45\n", "cannot parse YAML"),
])
def test_malformed_document_is_rejected(text, fragment, tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_every_schema_error_is_reported_at_once():
    data = _with("kind", "tpu")
    data["cores"] = 0
    data["runtimes"][0]["min_version"] = "v10"
    with pytest.raises(ProfileError) as info:
        profile_from_mapping(data, "hw_profiles/x.yaml")
    message = str(info.value)
    assert message.startswith("hw_profiles/x.yaml: field ")
    for path in ("'kind'", "'cores'", "'runtimes.0.min_version'"):
        assert f"field {path}" in message, message
    assert message.count("; field ") == 2 and len(info.value.problems) == 3


def test_unknown_name_and_missing_file():
    with pytest.raises(ProfileError) as info:
        load_profile("jetson-agx-orn")
    message = str(info.value)
    assert "unknown device profile 'jetson-agx-orn'" in message and "rpi5" in message and "host" in message
    assert "did you mean 'jetson-agx-orin'" in message
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile("/nonexistent/dir/p.yaml")
    with pytest.raises(ProfileError, match="not a profile name or path"):
        load_profile("")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(path)


_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
_nested = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3), max_leaves=8)
_field_names = st.sampled_from(list(BASE) + ["constraints", "figures", "provenance", "notes", "isa_features"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_yaml_text_only_raises_profile_error(text):
    try:
        profile_from_text(text, "fuzz.yaml")
    except ProfileError as err:
        assert str(err).startswith("fuzz.yaml: ") and "\n" not in str(err)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_nested)
def test_random_documents_only_raise_profile_error(data):
    try:
        profile_from_mapping(data, "fuzz.yaml")
    except ProfileError as err:
        assert "\n" not in str(err)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_field_names, _nested, min_size=1, max_size=3))
def test_random_field_values_only_raise_profile_error(changes):
    data = copy.deepcopy(BASE)
    data.update(changes)
    try:
        profile_from_mapping(data, "fuzz.yaml")
    except ProfileError as err:
        assert "\n" not in str(err)
