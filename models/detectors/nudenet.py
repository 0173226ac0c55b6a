"""NudeNet: the YOLOv8 nudity detector that the ``nudenet`` package ships (``320n.onnx`` in its
wheel), run on ONNX Runtime with the package's own preprocessing and post-processing, so that
its scores equal ``nudenet.NudeDetector().detect`` on the same pixels:

* the image (RGB here; OpenCV's BGR in the package: the network sees the same channel order)
  is padded with black at the right or bottom to a square, resized to 320×320 by OpenCV's
  bilinear resize inside ``cv2.dnn.blobFromImage``, scaled by 1/255, channels swapped;
* of the 8400 candidate boxes, those whose best class score reaches 0.2 are kept, their boxes
  scaled back to the image and clipped to it, then non-maximum suppression (score 0.25, IoU
  0.45, ``cv2.dnn.NMSBoxes``), boxes as integer ``x, y, width, height``.

OpenCV (``opencv-python-headless``, a dependency of ``nudenet``) is used for exactly these steps,
which is what makes the inputs, and so the scores, equal to the package's.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blipsearch.errors import MissingDependencyError
from models.detectors.base import Detection, Detector, DetectorError

if TYPE_CHECKING:
    from PIL import Image

# The class order of the shipped model's outputs (the package's own label list).
LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
CANDIDATE_SCORE = 0.2  # the package's floor before NMS
# The package pads the full image to a square before resizing it to 320: for a 20000×500 strip
# that is a 1.2 GB array. Larger images are first shrunk (OpenCV's area filter) to this longest
# side, boxes scaled back; up to it the steps, and so the scores, are the package's exactly.
MAX_SIDE = 4096
NMS_SCORE, NMS_IOU = 0.25, 0.45


def shipped_model() -> Path:
    """The ONNX model inside the installed ``nudenet`` package."""
    try:
        path = Path(str(resources.files("nudenet") / "320n.onnx"))
    except ModuleNotFoundError:
        raise MissingDependencyError("The nudenet detector", "nudenet", "moderation") from None
    if not path.is_file():
        raise DetectorError(f"The nudenet package has no 320n.onnx model at {path}; reinstall it.")
    return path


def _imports() -> tuple[Any, Any]:
    try:
        import cv2
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("The nudenet detector", exc.name or "onnxruntime", "moderation") from None
    return cv2, onnxruntime


class NudeNetDetector(Detector):
    name = "nudenet"
    labels = LABELS

    def __init__(self, model: str | Path | None = None, *, resolution: int = 320, threads: int | None = None) -> None:
        self.cv2, ort = _imports()
        path = Path(model) if model else shipped_model()
        if path.suffix.lower() != ".onnx" or not path.is_file():
            raise DetectorError(f"nudenet model {str(path)!r} is not an .onnx file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DetectorError(f"Cannot load nudenet model {path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.resolution = resolution
        self.model_id = f"nudenet:{path.name}"

    def _pixels(self, image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
        h, w = rgb.shape[:2]
        if max(h, w) > MAX_SIDE:
            f = MAX_SIDE / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))
            rgb = self.cv2.resize(rgb, size, interpolation=self.cv2.INTER_AREA)
        return rgb

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """[1, 3, R, R] float32: the package's padding, resize and scaling."""
        return self._blob(self._pixels(image))

    def _blob(self, rgb: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        h, w = rgb.shape[:2]
        side = max(h, w)
        padded = cv2.copyMakeBorder(rgb, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT)
        r = self.resolution
        blob: np.ndarray = cv2.dnn.blobFromImage(padded, 1 / 255.0, (r, r), (0, 0, 0), swapRB=True, crop=False)
        return blob

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        if not images:
            return []
        pixels = [self._pixels(im) for im in images]
        blobs = np.concatenate([self._blob(px) for px in pixels])
        try:
            (out,) = self.session.run(None, {self.input_name: blobs})[:1]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DetectorError(f"nudenet failed on the image: {exc}") from None
        found = []
        for i, (im, px) in enumerate(zip(images, pixels, strict=True)):
            dets = self._postprocess(out[i], px.shape[1], px.shape[0])
            if px.shape[1] != im.width or px.shape[0] != im.height:  # shrunk: boxes back to the image's pixels
                fx, fy = im.width / px.shape[1], im.height / px.shape[0]
                dets = [
                    Detection(d.label, d.score, (int(d.box[0] * fx), int(d.box[1] * fy), int(d.box[2] * fx),
                                                 int(d.box[3] * fy)))
                    for d in dets
                ]  # fmt: skip
            found.append(dets)
        return found

    def _postprocess(self, raw: np.ndarray, width: int, height: int) -> list[Detection]:
        rows = np.asarray(raw).T  # [candidates, 4 + classes]
        class_scores = rows[:, 4:]
        best = class_scores.max(axis=1)
        keep = np.flatnonzero(best >= CANDIDATE_SCORE)
        if keep.size == 0:
            return []
        cls = class_scores[keep].argmax(axis=1)
        scores = best[keep]
        cx, cy, bw, bh = (rows[keep, j] for j in range(4))
        side = max(width, height)  # the padded square, in image pixels
        r = self.resolution
        x = (cx - bw / 2) * side / r
        y = (cy - bh / 2) * side / r
        bw = bw * side / r
        bh = bh * side / r
        x = np.clip(x, 0, width)
        y = np.clip(y, 0, height)
        bw = np.minimum(bw, width - x)
        bh = np.minimum(bh, height - y)
        boxes = np.stack([x, y, bw, bh], axis=1)
        picked = self.cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), NMS_SCORE, NMS_IOU)
        return [
            Detection(LABELS[int(cls[i])], float(scores[i]), tuple(int(v) for v in boxes[i]))  # type: ignore[arg-type]
            for i in np.asarray(picked, dtype=np.int64).reshape(-1)
        ]
