"""BLIP's ITC towers compiled by OpenVINO: the CPU ``fast`` runtime.

``scripts/bench/runtimes.py`` measured OpenVINO with the bf16 inference-precision hint as the
fastest CPU runtime within the fidelity bound (BENCHMARKS.md, "CPU runtimes"). This module
exports BLIP's two ITC towers with ``openvino.convert_model`` and runs them:

* image: ``pixels -> (normalize(vision_proj(vision_model(pixels)[:, 0])), vision_model(pixels))``,
  i.e. the ITC embedding and the vision tokens ITM attends to, from one forward;
* text: ``(ids, mask) -> normalize(text_proj(text_encoder(ids, mask)[:, 0]))`` (text-only mode).

Dynamic batch (and sequence length for text). Compiled for the CPU with
``INFERENCE_PRECISION_HINT=bf16`` where the CPU has native bf16, f32 elsewhere, with torch's
thread count. The converted IR is cached on disk, one folder per (model identity, tower,
OpenVINO/torch/transformers versions), written to a temp folder and renamed into place, with a
checksum file: a second process reads it instead of converting, and a damaged cache is rebuilt.
``openvino`` is imported only here, and only when a tower is first used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.openvino_query import INSTALL_HINT, compile_config, import_openvino

__all__ = ["INSTALL_HINT", "TOWERS", "OpenVinoTowers", "compile_config", "import_openvino", "openvino_available"]
log = logging.getLogger(__name__)

TOWERS = ("image", "text")
EXPORT_VERSION = 1  # bump when the exported graphs change: old cache entries are then ignored
CHECKSUMS = "checksums.json"
# How many times this process converted a tower (tests check that a cached IR is reused).
CONVERSIONS: Counter[str] = Counter()


def openvino_available() -> bool:
    try:
        import_openvino()
    except ImportError:
        return False
    return True


class _ImageTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision_model, self.vision_proj = model.vision_model, model.vision_proj

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vision_model(pixel_values=pixel_values).last_hidden_state
        return F.normalize(self.vision_proj(tokens[:, 0, :]), dim=-1), tokens


class _TextTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text_encoder, self.text_proj = model.text_encoder, model.text_proj

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_proj(hidden[:, 0, :]), dim=-1)


def _weights_digest(module: torch.nn.Module) -> str:
    """A cheap digest of every parameter (names, shapes and a strided sample of values)."""
    h = hashlib.sha256()
    for name, p in module.state_dict().items():
        flat = p.detach().reshape(-1)
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(flat[:: max(1, flat.numel() // 4096)].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OpenVinoTowers:
    """BLIP's image and text towers on OpenVINO, converted (or read from the cache) on first use."""

    def __init__(self, model: Any, *, fingerprint: str, cache_dir: Path | None, threads: int, bf16: bool) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = max(1, int(threads))
        self.bf16 = bf16
        self.image_size = int(model.config.vision_config.image_size)
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # one infer request per thread and tower

    @property
    def hint(self) -> str:
        return "bf16" if self.bf16 else "f32"

    # -- inference ----------------------------------------------------------------------
    def image(self, pixel_values: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised [n, dim] embeddings, [n, tokens, width] vision tokens), float32."""
        pixels = np.ascontiguousarray(torch.as_tensor(pixel_values, dtype=torch.float32).cpu().numpy())
        if len(pixels) == 0:
            vc = self.model.config.vision_config
            tokens = (vc.image_size // vc.patch_size) ** 2 + 1
            dim = self.model.config.image_text_hidden_size
            return np.zeros((0, dim), np.float32), np.zeros((0, tokens, vc.hidden_size), np.float32)
        out = self._request("image").infer([pixels])
        return np.asarray(out[0], dtype=np.float32), np.asarray(out[1], dtype=np.float32)

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        """L2-normalised [n, dim] text embeddings, float32."""
        ids = np.ascontiguousarray(input_ids.cpu().numpy().astype(np.int64))
        mask = np.ascontiguousarray(attention_mask.cpu().numpy().astype(np.int64))
        out = self._request("text").infer([ids, mask])
        return np.asarray(out[0], dtype=np.float32)

    def _request(self, tower: str) -> Any:
        req = getattr(self._local, tower, None)
        if req is None:
            req = self.compiled(tower).create_infer_request()
            setattr(self._local, tower, req)
        return req

    def compiled(self, tower: str) -> Any:
        """The compiled tower (read from the cache or converted, then compiled, once)."""
        with self._lock:
            if tower not in self._compiled:
                ov = import_openvino()
                ir = self._ir(ov, tower)
                # the blob cache only beside a stored IR (a writable cache folder)
                config = compile_config(self.hint, self.threads, self.cache_dir if isinstance(ir, str) else None)
                self._compiled[tower] = ov.Core().compile_model(ir, "CPU", config)
            return self._compiled[tower]

    # -- conversion and the IR cache -----------------------------------------------------
    def cache_key(self, ov: Any, tower: str) -> str:
        import transformers

        module = self._module(tower)
        parts = {
            "fingerprint": self.fingerprint,
            "tower": tower,
            "export": EXPORT_VERSION,
            "openvino": ov.get_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "weights": _weights_digest(module),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def cache_path(self, tower: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"blip-{tower}-{self.cache_key(import_openvino(), tower)}"

    def _module(self, tower: str) -> torch.nn.Module:
        return (_ImageTower if tower == "image" else _TextTower)(self.model).eval()

    def _ir(self, ov: Any, tower: str) -> Any:
        """The tower to compile: the cached IR's path (so OpenVINO's compiled-blob cache can
        answer for it), else the model converted now."""
        folder = self.cache_path(tower)
        if folder is not None and folder.is_dir():
            model = self._read_cached(ov, folder)
            if model is not None:
                return model
        model = self._convert(ov, tower)
        if folder is not None and self._store(ov, model, folder):
            # Compile what later processes will read: the saved IR compiles (bf16) to slightly
            # different kernels than the in-memory conversion, and runs should agree.
            return self._read_cached(ov, folder) or model
        return model

    def _read_cached(self, ov: Any, folder: Path) -> str | None:
        """``folder``'s model.xml when its files match their checksums; None (and the folder
        removed) otherwise."""
        try:
            sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
            for name, digest in sums.items():
                if _file_sha(folder / name) != digest:
                    raise ValueError(f"{name} does not match its checksum")
            return str(folder / "model.xml")
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild it
            log.warning("OpenVINO IR cache %s is unreadable (%s); converting again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _store(self, ov: Any, model: Any, folder: Path) -> bool:
        """Write the IR to a temp folder next to ``folder`` and rename it into place; False if
        the cache is not writable."""
        tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            sums = {name: _file_sha(tmp / name) for name in ("model.xml", "model.bin")}
            (tmp / CHECKSUMS).write_text(json.dumps(sums), encoding="utf-8")
            try:
                os.replace(tmp, folder)
            except OSError:
                if not folder.is_dir():  # not "another process stored it first"
                    raise
            return True
        except (OSError, RuntimeError) as exc:  # a read-only or full disk costs the cache, not the model
            # (OpenVINO's save_model raises RuntimeError on ENOSPC)
            log.warning("Could not cache the OpenVINO IR in %s: %s", folder, exc)
            return False
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)

    def _convert(self, ov: Any, tower: str) -> Any:
        CONVERSIONS[tower] += 1
        log.info("Converting the BLIP %s tower to OpenVINO (once; cached in %s)", tower, self.cache_dir)
        module = self._module(tower)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-derived Python values
            if tower == "image":
                side = self.image_size
                example: Any = (torch.zeros(2, 3, side, side),)
                shapes = [ov.PartialShape([-1, 3, side, side])]
            else:
                # Traced with a padded row, so the attention mask is part of the graph.
                ids = torch.ones(2, 8, dtype=torch.long)
                mask = torch.ones(2, 8, dtype=torch.long)
                mask[1, 5:] = 0
                example = {"input_ids": ids, "attention_mask": mask}
                shapes = [ov.PartialShape([-1, -1]), ov.PartialShape([-1, -1])]
            return ov.convert_model(module, example_input=example, input=shapes)
