"""The one TensorRT logger of the process: it keeps the build log, whose "(Sparsity)" lines prove sparse tactics.

TensorRT treats the first ILogger given to a Builder or Runtime as its global logger and warns when later ones
differ, so there is one instance. `import tensorrt` happens on first use only.
"""
from __future__ import annotations

import logging

log = logging.getLogger("edgeprune.tensorrt")

_SEVERITY = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}  # trt.ILogger.Severity: INTERNAL_ERROR .. VERBOSE
_LOGGER = None


def capture_logger():
    """The process-wide trt.ILogger that keeps the build log. One instance: TensorRT treats the first logger
    given to a Builder/Runtime as its global logger and warns when later ones differ."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        class CaptureLogger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)  # the docs require the explicit base __init__
                self.lines: list[str] = []
                self.verbose = False  # keep VERBOSE lines too (thousands per build)

            def log(self, severity, msg):
                try:
                    level = int(severity)
                    text = str(msg)
                    if level <= 3 or self.verbose or "(Sparsity)" in text:
                        self.lines.append(f"[{_SEVERITY.get(level, '?')}] {text}")
                    if level <= 1:
                        log.error("TensorRT: %s", text)
                    elif level == 2:
                        log.warning("TensorRT: %s", text)
                except Exception:  # never raise into TensorRT
                    pass

        _LOGGER = CaptureLogger()
    return _LOGGER
