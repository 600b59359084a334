"""What runs inside the sweep's Ray tasks: one config's CPU work, and the timing it sends to its target's node.

A config task (1 CPU, anywhere Ray puts it) loads the model and data, runs `optimize` and saves the output folder.
Every measurement optimize makes goes through `edgeprune.measurement.place.on_target`, which this module points
at a timing task: pinned to the target's node by the target's custom resource (capacity 1: one timing at a time
per target) and asking for all of that node's CPUs, so Ray starts nothing else there while it times.

Ray's resources alone do not make timing exclusive: a task blocked in ray.get gives its CPU back, and when it
resumes Ray does not wait for the CPU to be free again. So each node also has a reader-writer file lock (fcntl,
released by the OS if a worker dies): CPU work holds it shared, a timing task holds it exclusive. The config task
drops its shared hold while it waits for its own timing. Every span is recorded inside its hold, so the recorded
node ids and start/end times prove exclusivity (tests/test_sweep_ray.py checks them).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator


class NodeLock:
    """Reader-writer lock of one Ray node: a file in the node's temp folder named after the node id."""

    def __init__(self, node_id: str):
        self.path = Path(tempfile.gettempdir()) / f"edgeprune-node-{node_id}.lock"
        self._fd: int | None = None

    def acquire(self, exclusive: bool) -> None:
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self, exclusive: bool) -> Iterator[None]:
        self.acquire(exclusive)
        try:
            yield
        finally:
            self.release()


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


# -- shipping files with a measurement ------------------------------------------------------------

def ship(value: Any) -> Any:
    """`value` with every existing Path (inside lists/tuples/dicts) replaced by its files' bytes."""
    from edgeprune.measurement.place import companions

    if isinstance(value, Path) and value.is_file():
        return ("__edgeprune_file__", value.name, {p.name: p.read_bytes() for p in companions(value)})
    if isinstance(value, (list, tuple)):
        return type(value)(ship(v) for v in value)
    if isinstance(value, dict):
        return {k: ship(v) for k, v in value.items()}
    return value


def land(value: Any, folder: Path) -> Any:
    """ship's inverse: the shipped files written under `folder` (one subfolder each), as Paths."""
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "__edgeprune_file__":
        sub = Path(tempfile.mkdtemp(dir=folder))
        for name, data in value[2].items():
            (sub / Path(name).name).write_bytes(data)  # .name: a shipped name never leaves its folder
        return sub / Path(value[1]).name
    if isinstance(value, (list, tuple)):
        return type(value)(land(v, folder) for v in value)
    if isinstance(value, dict):
        return {k: land(v, folder) for k, v in value.items()}
    return value


def timing_task(fn: Callable[..., Any], args: tuple, kwargs: dict, shipped: bool) -> tuple[Any, dict]:
    """Body of the pinned timing task: fn(*args, **kwargs) under the node's exclusive lock; (result, span)."""
    node = node_id()
    with tempfile.TemporaryDirectory(prefix="edgeprune-timing-") as tmp:
        if shipped:
            args, kwargs = land(args, Path(tmp)), land(kwargs, Path(tmp))
        with NodeLock(node).held(exclusive=True):
            start = time.time()
            out = fn(*args, **kwargs)
            end = time.time()
    return out, {"stage": f"timing:{fn.__name__}", "node": node, "start": start, "end": end}


class Spans:
    """The config task's CPU spans, each recorded while it holds its node's lock shared."""

    def __init__(self):
        self.node = node_id()
        self.lock = NodeLock(self.node)
        self.rows: list[dict] = []
        self.stage, self._start = "prepare", None

    def open(self, stage: str | None = None) -> None:
        self.stage = stage or self.stage
        self.lock.acquire(exclusive=False)
        self._start = time.time()

    def close(self) -> None:
        if self._start is not None:
            self.rows.append({"stage": self.stage, "node": self.node, "start": self._start, "end": time.time()})
            self._start = None
        self.lock.release()

    def next(self, stage: str) -> None:
        self.close()
        self.open(stage)


def placer(remote_timing, resource: str, cpus: float, target_node: str | None, spans: Spans):
    """on_target's hook in a config task: run the measurement as a timing task on the target's node."""
    import ray

    def place(fn, args, kwargs):
        shipped = target_node != spans.node  # same node: the files are already on its disk
        if shipped:
            args, kwargs = ship(args), ship(kwargs)
        ref = remote_timing.options(resources={resource: 1}, num_cpus=cpus).remote(fn, args, kwargs, shipped)
        spans.close()  # wait without holding the node: this task's own timing may be on the same node
        try:
            out, span = ray.get(ref)
        finally:
            spans.open()
        spans.rows.append(span)
        return out

    return place


def pack(folder: Path) -> bytes:
    """An output folder as tar bytes (the driver unpacks it into the sweep folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, arcname=str(p.relative_to(folder)))
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    """pack's inverse, refusing any member that is not a plain file inside `dest`."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tf:
        tf.extractall(dest, filter="data")
