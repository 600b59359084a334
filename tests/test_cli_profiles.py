"""`edgeprune profiles ...` through click's CliRunner: output, exit codes, one-line errors, no partial files."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from conftest import one_error_line as _one_error_line
from edgeprune.cli import main
from edgeprune.errors import ProfileError
from edgeprune.targets.profiles import load_profile, profile_from_text, profile_names





def test_list_table(runner):
    result = runner.invoke(main, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert set(profile_names()) <= set(rows) and len(rows) >= 14
    assert "yes (tensorrt)" in rows["h100-sxm"] and "fp16:8" in rows["h100-sxm"]
    assert "memory-only (openvino)" in rows["xeon-spr"] and "int8:64" in rows["xeon-spr"]
    assert rows["jetson-xavier-nx"].rstrip("│ ").endswith("no")


def test_list_json(runner):
    result = runner.invoke(main, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["jetson-agx-orin"]["runtimes"][0] == "tensorrt" and rows["jetson-agx-orin"]["2:4"] == "yes (tensorrt)"
    assert rows["epyc-zen3"]["2:4"] == "no" and rows["epyc-zen3"]["kind"] == "cpu"


@pytest.mark.parametrize("name", ["jetson-agx-orin", "xeon-spr", "hailo-8"])
def test_show_yaml_and_json(runner, name):
    result = runner.invoke(main, ["profiles", "show", name])
    assert result.exit_code == 0, result.output
    assert profile_from_text(result.output, "shown") == load_profile(name)
    as_json = runner.invoke(main, ["profiles", "show", name, "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == load_profile(name).to_dict()


def test_show_host_and_path(runner, tmp_path):
    host = runner.invoke(main, ["profiles", "show", "host"])
    assert host.exit_code == 0 and yaml.safe_load(host.output)["name"] == "host"
    path = tmp_path / "mine.yaml"
    path.write_text(load_profile("rpi5").to_yaml())
    shown = runner.invoke(main, ["profiles", "show", str(path), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["memory"]["size"]["value"] == 8


def test_show_unknown_name_is_one_line_listing_the_names(runner):
    line = _one_error_line(runner.invoke(main, ["profiles", "show", "jetson-nano-9000"]))
    assert "unknown device profile 'jetson-nano-9000'" in line
    for name in ("jetson-agx-orin", "rpi5", "host"):
        assert name in line


def test_validate_ok_and_bad(runner, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(load_profile("l4").to_yaml())
    result = runner.invoke(main, ["profiles", "validate", str(good)])
    assert result.exit_code == 0 and result.output.strip() == f"ok: {good}"

    data = load_profile("l4").to_dict()
    data["kind"] = "tpu"
    data["runtimes"][0]["min_version"] = "latest"
    data["patterns"]["tensorrt"]["nm"]["n"] = 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    result = runner.invoke(main, ["profiles", "validate", str(good), str(bad)])
    assert result.exit_code == 2, result.output
    out = result.output
    assert f"ok: {good}" in out and f"invalid: {bad}" in out
    for field in ("field 'kind'", "field 'runtimes.0.min_version'", "field 'patterns.tensorrt.nm'"):
        assert field in out, out
    assert out.strip().splitlines()[-1].startswith("error: 1 of 2 profile file(s) invalid")


def test_validate_broken_yaml_and_missing_file(runner, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [oops\n")
    result = runner.invoke(main, ["profiles", "validate", str(broken), str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "YAML syntax error at line" in result.output and "profile file not found" in result.output
    assert "error: 2 of 2" in result.output


def test_validate_every_shipped_profile(runner):
    from edgeprune.targets.profiles import PACKAGE
    from importlib import resources

    paths = [str(resources.files(PACKAGE) / f"{n}.yaml") for n in profile_names()]
    result = runner.invoke(main, ["profiles", "validate", *paths])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok: ") == len(paths)


def test_probe_to_file_and_stdout(runner, tmp_path):
    out = tmp_path / "sub" / "host.yaml"
    result = runner.invoke(main, ["profiles", "probe", "-o", str(out)])
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    assert profile.name == "host" and "onnxruntime" in profile.runtime_names()
    assert runner.invoke(main, ["profiles", "validate", str(out)]).exit_code == 0
    printed = runner.invoke(main, ["profiles", "probe"])
    assert printed.exit_code == 0
    assert profile_from_text(printed.output, "stdout").runtime_names() == profile.runtime_names()


def test_failing_probe_leaves_no_file(runner, tmp_path, monkeypatch):
    import edgeprune.targets.probe

    def broken():
        raise ProfileError("probe failed on purpose", hint="none")

    monkeypatch.setattr(edgeprune.targets.probe, "probe_host", broken)
    out = tmp_path / "host.yaml"
    line = _one_error_line(runner.invoke(main, ["profiles", "probe", "-o", str(out)]))
    assert "probe failed on purpose" in line
    assert list(tmp_path.iterdir()) == []

    out.write_text("previous\n")  # an existing file survives a failed run untouched
    _one_error_line(runner.invoke(main, ["profiles", "probe", "-o", str(out)]))
    assert out.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["host.yaml"]


def test_failing_write_leaves_no_partial_file(runner, tmp_path, monkeypatch):
    from pathlib import Path

    real_write = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)  # half the profile reaches the disk, then ENOSPC
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    line = _one_error_line(runner.invoke(main, ["profiles", "probe", "-o", str(tmp_path / "host.yaml")]))
    assert "cannot write" in line and "No space left on device" in line
    assert list(tmp_path.iterdir()) == []


def test_probe_refuses_a_non_yaml_output(runner, tmp_path):
    line = _one_error_line(runner.invoke(main, ["profiles", "probe", "-o", str(tmp_path / "host.txt")]))
    assert "must end in .yaml" in line and list(tmp_path.iterdir()) == []
