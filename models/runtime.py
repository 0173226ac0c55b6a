"""Device and precision selection, and the model fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from blipsearch.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {device!r} was requested but torch sees no CUDA GPU. Use --device cpu.")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 (or fp16 where bf16 is unsupported) on CUDA and fp32 on CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ConfigError(f"Unknown dtype {dtype!r}: use one of auto, {', '.join(_DTYPES)}.")
    if device.type == "cpu" and dtype != "fp32":
        raise ConfigError(f"dtype {dtype} is only supported on CUDA; use fp32 on CPU.")
    return _DTYPES[dtype]


def fingerprint(config: dict[str, Any], *tensors: torch.Tensor) -> str:
    """Identity of a checkpoint, independent of where it was loaded from.

    Hashes the architecture-defining config and the fp32 bytes of the projection weights,
    which differ between any two trained (or randomly initialised) checkpoints.
    """
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def input_side(processor: Any) -> int | None:
    """The image processor's output side in pixels (what the vision encoder sees), if known."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    sides = [v for k, v in dict(size).items() if k in ("height", "width", "shortest_edge")]
    return int(max(sides)) if sides else None
