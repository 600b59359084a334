"""The built wheel installs edgeprune with its backends and device profiles as package data."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_profiles_and_backends(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("edgeprune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    profiles = [n for n in names if n.startswith("edgeprune/hw_profiles/") and n.endswith(".yaml")]
    assert len(profiles) >= 14, profiles
    for module in ("base", "ort", "ov", "pt", "trt"):
        assert f"edgeprune/backends/{module}.py" in names
    assert not any(n.startswith(("backends/", "hw_profiles/", "tests/")) for n in names)  # nothing top-level but edgeprune
    assert any(n.endswith("entry_points.txt") for n in names)
    for package in sorted(d.name for d in (ROOT / "edgeprune").iterdir() if (d / "__init__.py").is_file()):
        assert f"edgeprune/{package}/__init__.py" in names, f"edgeprune.{package} is not in the wheel"
