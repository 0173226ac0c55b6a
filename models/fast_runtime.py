"""Which runtime runs each BLIP stage in ``fast`` mode: torch or OpenVINO.

``BLIPSEARCH_FAST_RUNTIME`` = ``auto`` | ``torch`` | ``openvino``. ``auto`` (the default) runs the
BLIP image and text stages on OpenVINO (models/openvino_runtime.py, bf16 hint) on a CPU with
native bf16 when ``openvino`` is installed, and on torch bf16 autocast otherwise. ``exact``
never uses OpenVINO. ITM re-ranking stays on torch (models/fast_itm.py); the captioners' vision
encoders use the same towers through models/openvino_caption.py.

``OpenVinoStages`` is the embedder mix-in that routes those stages to the compiled towers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blipsearch.errors import ConfigError
from models import openvino_query
from models.openvino_runtime import INSTALL_HINT, TOWERS, OpenVinoTowers, openvino_available
from models.precision import has_native_bf16

if TYPE_CHECKING:
    from models.precision import PrecisionPlan

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
_logged: set[tuple[str, ...]] = set()


def openvino_stages(requested: str, mode: str, device_type: str, stages: Iterable[str], native_bf16: bool) -> set[str]:
    """The stages (of ``stages``; only "image" and "text" can) that run on OpenVINO.

    ``exact`` never does (it must equal the transformers forward), nor does a GPU. ``auto``
    adopts OpenVINO where it was measured faster within the bound: a CPU with native bf16, with
    the package installed. On other CPUs ``auto`` keeps torch (OpenVINO fp32 was not measured
    against torch fp32 on an AVX2-only CPU). ``openvino`` asks for it on any CPU (f32 hint
    without native bf16) and is a ConfigError when the package is missing.
    """
    if requested not in RUNTIMES:
        raise ConfigError(f"Unknown fast runtime {requested!r}: use one of {', '.join(RUNTIMES)}.")
    if requested == "torch" or mode != "fast" or device_type != "cpu":
        return set()
    if requested == "openvino":
        if not openvino_available():
            raise ConfigError(
                f"BLIPSEARCH_FAST_RUNTIME=openvino needs the OpenVINO runtime: `{INSTALL_HINT}` "
                "(or set BLIPSEARCH_FAST_RUNTIME to auto or torch)."
            )
    elif not (native_bf16 and openvino_available()):
        return set()
    return set(stages) & set(TOWERS)


def log_choice(model_id: str, runtimes: dict[str, str]) -> None:
    """Say once per process and model which runtime each stage uses (INFO)."""
    key = (model_id, *sorted(f"{k}={v}" for k, v in runtimes.items()))
    if key not in _logged:
        _logged.add(key)
        log.info("fast path for %s: %s", model_id, ", ".join(f"{k} on {v}" for k, v in sorted(runtimes.items())))


class OpenVinoStages:
    """Mix-in for ``TorchEmbedder`` subclasses of BLIP: the image and text stages on OpenVINO
    where ``openvino_stages`` says so. Call ``_setup_fast_runtime`` after the model loads."""

    model: Any
    model_id: str
    fingerprint: str
    precision: str
    plan: PrecisionPlan
    fast_stages: frozenset[str]
    batch_size: int
    dim: int
    ov_stages: frozenset[str] = frozenset()
    _ov: OpenVinoTowers | None = None
    _requested_runtime = "auto"
    _query_recorded = False

    def _setup_fast_runtime(self, requested: str, cache_dir: str | Path | None) -> None:
        self._requested_runtime = requested
        native = has_native_bf16()
        self.ov_stages = frozenset(
            openvino_stages(requested, self.precision, self.plan.device_type, self.fast_stages, native)
        )
        if self.ov_stages:
            self._ov = OpenVinoTowers(
                self.model,
                fingerprint=self.fingerprint,
                cache_dir=Path(cache_dir) if cache_dir is not None else None,
                threads=torch.get_num_threads(),
                bf16=native,
            )
        if self.precision == "fast":
            log_choice(self.model_id, {s: self.stage_runtime(s) for s in TOWERS})

    def stage_runtime(self, stage: str) -> str:
        """What runs ``stage``: e.g. "openvino bf16", "torch bf16", "torch fp32"."""
        if self._ov is not None and stage in self.ov_stages:
            return f"openvino {self._ov.hint}"
        return f"torch {self.plan.describe()[stage]}"

    def stage_runtimes(self) -> dict[str, str]:
        return {s: ("openvino" if s in self.ov_stages else "torch") for s in ("image", "text", "itm")}

    def stage_dtypes(self) -> dict[str, str]:
        out: dict[str, str] = super().stage_dtypes()  # type: ignore[misc]
        if self._ov is not None:
            out.update(dict.fromkeys(self.ov_stages, "bf16" if self._ov.bf16 else "fp32"))
        return out

    # -- image: ITC embeddings and the vision tokens, from one OpenVINO forward -----------
    def vision_tokens(self, pixel_values: np.ndarray | torch.Tensor, stage: str = "image") -> torch.Tensor:
        if self._ov is not None and stage in self.ov_stages:
            return torch.from_numpy(self._ov.image(pixel_values)[1])
        return super().vision_tokens(pixel_values, stage)  # type: ignore[misc]

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._ov is not None and "image" in self.ov_stages:
            return self._ov.image(pixel_values)[0]
        return super().embed_pixels(pixel_values)  # type: ignore[misc]

    def embed_pixels_with_tokens(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ov is not None and "image" in self.ov_stages:
            emb, tokens = self._ov.image(pixel_values)
            return emb, tokens.astype(np.float16)
        return super().embed_pixels_with_tokens(pixel_values)  # type: ignore[misc]

    # -- text --------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._ov is None or "text" not in self.ov_stages:
            return super().embed_texts(texts)  # type: ignore[misc]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenize(texts[i : i + self.batch_size])  # type: ignore[attr-defined]
            out.append(self._ov.text(enc["input_ids"], enc["attention_mask"]))
        if out and not self._query_recorded:
            self._query_recorded = True
            self._record_query_tower()
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _record_query_tower(self) -> None:
        """Write the query record (models/openvino_query.py) that lets a later process encode
        texts on this compiled tower without loading torch, transformers or the checkpoint."""
        ov = self._ov
        if ov is None or ov.cache_dir is None:
            return
        tok = getattr(self.processor, "tokenizer", None)  # type: ignore[attr-defined]
        folder = ov.cache_path("text")
        model_dir = Path(self.model_id)
        if tok is None or folder is None or not (model_dir / openvino_query.TOKENIZER_FILE).is_file():
            return
        options = {
            "device": "cpu",
            "dtype": "fp32",
            "batch_size": self.batch_size,
            "text_preprocess": self.text_preprocess,  # type: ignore[attr-defined]
            "text_max_words": self.prepare_text.max_words,  # type: ignore[attr-defined]
            "precision": self.precision,
            "fast_runtime": self._requested_runtime,
        }
        key = openvino_query.record_key(str(model_dir), options)
        if key is None or not (folder / "model.xml").is_file():
            return
        record = {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "family": self.family,  # type: ignore[attr-defined]
            "dim": self.dim,
            "vectors_per_image": self.vectors_per_image,  # type: ignore[attr-defined]
            "batch_size": self.batch_size,
            "precision": self.precision,
            "has_itm": self.has_itm,  # type: ignore[attr-defined]
            "multilingual": self.multilingual,  # type: ignore[attr-defined]
            "text_preprocess": self.text_preprocess,  # type: ignore[attr-defined]
            "text_max_words": self.prepare_text.max_words,  # type: ignore[attr-defined]
            "max_text_tokens": self.max_text_tokens,  # type: ignore[attr-defined]
            "padding": {
                "side": tok.padding_side,
                "truncation_side": tok.truncation_side,
                "id": tok.pad_token_id,
                "type_id": tok.pad_token_type_id,
                "token": tok.pad_token,
            },
            "hint": ov.hint,
            "threads": ov.threads,
            "cache_dir": str(ov.cache_dir),
            "ir": str(folder / "model.xml"),
            "stage_dtypes": self.stage_dtypes(),
            "stage_runtimes": self.stage_runtimes(),
            "input_size": self.input_size,  # type: ignore[attr-defined]
        }
        openvino_query.write_record(ov.cache_dir, key, record)
