"""The detector base: images in, boxes with a class and a score out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from blipsearch.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image


class DetectorError(InvalidInputError):
    code = "detector_error"


@dataclass(frozen=True)
class Detection:
    label: str  # the detector's class name
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in the image's pixels (top-left origin)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class"] = d.pop("label")
        d["box"] = list(self.box)
        return d


class Detector(ABC):
    name: str
    labels: tuple[str, ...]
    model_id: str

    @abstractmethod
    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        """Detections per RGB image, best first."""
