"""Object detectors that moderation checks run (ONNX Runtime; weights in safe formats only)."""

from __future__ import annotations

from models.detectors.base import Detection, Detector, DetectorError, load_detector

__all__ = ["Detection", "Detector", "DetectorError", "load_detector"]
