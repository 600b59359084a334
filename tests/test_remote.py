"""`edgeprune bench-remote` against a real OpenSSH server on 127.0.0.1, started for this module with a
throwaway host key, client key and config. The "device" Python is this venv's, with torch and edgeprune
hidden, so the remote run proves the bundle needs neither."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from edgeprune.deploy.bundle import build_bundle
from edgeprune.cli import main
from edgeprune.errors import ConfigError
from edgeprune.deploy.remote import Target, parse_target
from test_bundle import NO_TORCH, mlp_onnx, write_shim

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("scp"):
        pytest.skip(f"OpenSSH server not installed ({SSHD} missing): apt-get install openssh-server openssh-client")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir (absent in containers)
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read().decode()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("sshd did not listen within 15 s")
            time.sleep(0.1)
    import getpass

    yield {"target": f"{getpass.getuser()}@127.0.0.1:{port}", "key": str(d / "client_key"), "dir": d}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("rb")
    mlp_onnx(d / "out" / "model.onnx")
    build_bundle(d / "out", d / "mlp.tar.gz")
    return d / "mlp.tar.gz"


def test_parse_target():
    assert parse_target("pi@raspberrypi.local") == Target("pi", "raspberrypi.local", 22)
    assert parse_target("root@10.0.0.7:2222") == Target("root", "10.0.0.7", 2222)
    assert parse_target("u@[::1]:22").host == "[::1]"
    for bad in ("host", "-oProxyCommand=x@h", "u@-oProxyCommand=x", "u@h:70000", "u@h;rm -rf", "u@h:", "@h"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_bench_remote_round_trip_and_report(sshd, bundle, tmp_path):
    py = write_shim(tmp_path)  # the device's python: no torch, no edgeprune
    before = set(glob.glob("/tmp/edgeprune.*"))
    out = tmp_path / "outdir"
    out.mkdir()
    result = CliRunner().invoke(main, ["bench-remote", sshd["target"], str(bundle), "-i", sshd["key"], "--python", str(py),
                                       "--warmup", "2", "--iters", "12", "--rounds", "3", "--layers", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"self-check on {sshd['target']}: ok" in result.output
    doc = json.loads((out / "results-127.0.0.1.json").read_text())
    assert doc["remote"]["target"] == sshd["target"] and doc["check"]["ok"]
    assert any("LEAKED []" in l for l in doc["remote"]["runner_stdout"])
    assert doc["results"][0]["stats"]["n"] == 12 and len(doc["results"][0]["round_p50_ms"]) == 3 and doc["layers"]
    assert set(glob.glob("/tmp/edgeprune.*")) == before  # the remote work folder was removed
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert f"device layers: {sshd['target']}" in html and html.count("data:image/png;base64,") == 2


@pytest.mark.parametrize("case, fragment", [
    ("python", "cannot be run on 127.0.0.1"),
    ("key", "ssh to "),
    ("runtime", "pip install onnxruntime"),
])
def test_bench_remote_failures_are_one_line(sshd, bundle, tmp_path, case, fragment):
    args = ["bench-remote", sshd["target"], str(bundle), "-i", sshd["key"], "--iters", "5", "--rounds", "1", "-o", str(tmp_path / "r.json")]
    if case == "python":
        args += ["--python", "/nonexistent/python3"]
    elif case == "key":
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
        args[args.index(sshd["key"])] = str(tmp_path / "stranger")
    else:
        args += ["--python", str(write_shim(tmp_path, block=NO_TORCH + ("onnxruntime", "openvino")))]
    result = CliRunner().invoke(main, args)
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert not (tmp_path / "r.json").exists()


def test_bench_remote_option_delegates(tmp_path, bundle):
    # `edgeprune bench --remote` is the same command as bench-remote: a bad target fails before any ssh
    result = CliRunner().invoke(main, ["bench", "--remote", "-oProxyCommand=x", str(bundle)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["bench", "--remote", "user@127.0.0.1", "a.onnx"])
    assert result.exit_code == 2 and "exactly one bundle" in result.output
