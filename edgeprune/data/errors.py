"""The one error of the data package (a ConfigError: the CLI prints it as one line and exits 2)."""
from __future__ import annotations

from edgeprune.errors import ConfigError

# said whenever evaluation data overlaps the data a model was calibrated or trained on
HOLD_OUT_HINT = "hold out samples the calibration and recovery never see"


class CalibrationError(ConfigError):
    """Data (calibration, training or evaluation) is empty, unreadable, non-finite, overlapping, or does not fit
    the model's inputs."""


__all__ = ["CalibrationError", "HOLD_OUT_HINT"]
