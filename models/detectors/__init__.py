"""Object detectors that moderation checks run (ONNX Runtime; weights in safe formats only)."""

from __future__ import annotations

from models.detectors.base import Detection, Detector, DetectorError

__all__ = ["Detection", "Detector", "DetectorError", "load_detector"]


def load_detector(name: str, model: str | None = None, *, threads: int | None = None) -> Detector:
    """A detector by name: ``nudenet`` (its package's shipped ONNX model unless ``model`` is given)."""
    if name == "nudenet":
        from models.detectors.nudenet import NudeNetDetector

        return NudeNetDetector(model, threads=threads)
    raise DetectorError(f"Unknown detector {name!r}: available: nudenet")
