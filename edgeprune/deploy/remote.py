"""Benchmark a bundle on a remote device over SSH, with the system OpenSSH client (ssh, scp).

No Python SSH library: the user's ssh setup (agent, ~/.ssh/config, jump hosts) keeps working, and the
device needs only sshd, python3, numpy and one runtime. Every command runs non-interactively
(BatchMode) and trusts the host key on first use into a throwaway known_hosts file, so a run never
stops at a prompt and never edits the user's ~/.ssh/known_hosts.

Steps: verify the bundle here; `mktemp -d` there; copy the bundle and its runner; run the runner with
the target's Python; copy results.json back; remove the remote folder (also on failure).
"""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from edgeprune.errors import BenchmarkError, ConfigError

_TARGET = re.compile(r"^(?P<user>[A-Za-z0-9_.][A-Za-z0-9_.-]*)@(?P<host>[A-Za-z0-9_.][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])"
                     r"(?::(?P<port>\d{1,5}))?$")
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9_./+-]+$")  # what `mktemp -d` may print; anything else is not trusted for rm -rf


@dataclasses.dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}"


def parse_target(text: str) -> Target:
    """user@host[:port] (IPv6 as user@[::1]:port). Strict, so nothing can be read as an ssh option."""
    m = _TARGET.match(text or "")
    if not m:
        raise ConfigError(f"bad remote target '{text}'", hint="use user@host or user@host:port")
    port = int(m["port"] or 22)
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad port {port} in '{text}'", hint="use a port between 1 and 65535")
    return Target(m["user"], m["host"], port)


class Remote:
    """ssh/scp to one target with fixed non-interactive options; use as a context manager."""

    def __init__(self, target: Target, identity: str | None = None, connect_timeout: int = 10, timeout: float = 600):
        if identity and not Path(identity).is_file():
            raise ConfigError(f"identity file not found: {identity}", hint="pass the private key file to --identity")
        self.target, self.identity, self.timeout = target, identity, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-ssh-")
        self.options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                        "-o", f"UserKnownHostsFile={Path(self._tmp.name) / 'known_hosts'}",
                        "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR"]
        if identity:
            self.options += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def _call(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ConfigError(f"the OpenSSH client ({argv[0]}) is not installed here",
                              hint="install it, e.g. apt-get install openssh-client") from None
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"{what} on {self.target} took longer than {self.timeout:.0f} s",
                                 hint="check the device, or lower --iters/--seconds") from None

    def _fail(self, proc: subprocess.CompletedProcess, what: str) -> BenchmarkError:
        lines = [l for l in (proc.stderr or proc.stdout or "").splitlines() if l.strip()]
        why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        if proc.returncode == 255:  # ssh's own failure: connection, auth, host key
            return BenchmarkError(f"ssh to {self.target} failed during {what}: {why}",
                                  hint=f"check that `ssh -p {self.target.port} {self.target.dest}` logs in without a prompt")
        return BenchmarkError(f"{what} on {self.target} failed: {why}")

    def ssh(self, command: str, what: str, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
        proc = self._call(["ssh", *self.options, "-p", str(self.target.port), self.target.dest, command], what)
        if proc.returncode not in ok:
            raise self._fail(proc, what)
        return proc

    def _remote_path(self, path: str) -> str:
        return f"{self.target.dest}:{path}"

    def put(self, local: Path, remote_dir: str) -> None:
        proc = self._call(["scp", "-q", *self.options, "-P", str(self.target.port), str(local),
                           self._remote_path(remote_dir + "/")], f"copying {local.name}")
        if proc.returncode != 0:
            raise self._fail(proc, f"copying {local.name}")

    def get(self, remote: str, local: Path) -> None:
        proc = self._call(["scp", "-q", *self.options, "-P", str(self.target.port), self._remote_path(remote), str(local)],
                          "copying the results back")
        if proc.returncode != 0:
            raise self._fail(proc, "copying the results back")


def run_remote(target: str | Target, bundle: str | Path, *, identity: str | None = None, python: str = "python3",
               runner_args: Sequence[str] = (), timeout: float = 600) -> dict:
    """Run BUNDLE's runner on TARGET and return its results document (plus a "remote" section)."""
    from edgeprune.deploy.bundle import RUNNER_NAME, unpack_bundle

    target = parse_target(target) if isinstance(target, str) else target
    bundle = Path(bundle)
    if not python or python.startswith("-") or any(c.isspace() for c in python):
        raise ConfigError(f"bad --python '{python}'", hint="pass a program name or path, e.g. --python /usr/bin/python3")
    with tempfile.TemporaryDirectory(prefix="edgeprune-remote-") as local, Remote(target, identity, timeout=timeout) as rem:
        # Refuse a damaged or unsafe bundle before touching the device; ship the bundle's own runner.
        root = unpack_bundle(bundle, Path(local) / "bundle")
        made = rem.ssh('mktemp -d "${TMPDIR:-/tmp}/edgeprune.XXXXXX"', "creating a work folder").stdout.strip().splitlines()
        remote_dir = made[-1].strip() if made else ""
        if not _REMOTE_DIR.match(remote_dir):
            raise BenchmarkError(f"unexpected work folder from mktemp on {target}: {remote_dir!r}",
                                 hint="the device needs a POSIX shell with mktemp")
        try:
            rem.put(bundle, remote_dir)
            rem.put(root / RUNNER_NAME, remote_dir)
            cmd = " ".join(shlex.quote(a) for a in [python, RUNNER_NAME, bundle.name, "--out", "results.json", *runner_args])
            proc = rem.ssh(f"cd {shlex.quote(remote_dir)} && {cmd}", "running the bundle", ok=(0, 1, 2, 126, 127))
            if proc.returncode in (126, 127):
                raise ConfigError(f"'{python}' cannot be run on {target.host}",
                                  hint="pass the target's interpreter, e.g. --python /usr/bin/python3")
            if proc.returncode == 2:
                errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
                why = errors[-1][len("error: "):] if errors else (proc.stderr.strip().splitlines() or ["exit status 2"])[-1]
                raise BenchmarkError(f"the runner on {target.host} could not run: {why}")
            out = Path(local) / "results.json"
            rem.get(f"{remote_dir}/results.json", out)
        finally:
            rem.ssh(f"rm -rf {shlex.quote(remote_dir)}", "cleaning up", ok=range(256))
        try:
            doc = json.loads(out.read_text(encoding="utf-8"))
        except ValueError as err:
            raise BenchmarkError(f"the results from {target.host} are not JSON: {err}") from None
    doc["remote"] = {"target": str(target), "python": python, "runner_stdout": proc.stdout.strip().splitlines()}
    return doc
