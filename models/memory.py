"""Refuse a checkpoint the machine cannot hold, before its weights are downloaded or allocated.

The parameter count comes from, in order of preference:

1. a local (or already cached hub) ``model.safetensors.index.json``: ``metadata.total_size``
   (bytes as stored) divided by the stored dtype's size (``config.dtype``);
2. local ``*.safetensors`` files: their JSON headers (tensor shapes; nothing else is read);
3. the config alone: the model class built on PyTorch's ``meta`` device, which has shapes but
   no storage (what a hub id that is not downloaded yet gives).

The estimate is ``parameters × bytes per parameter in the chosen dtype × headroom`` (headroom
covers activations, the KV cache and allocator slack); it is compared with the memory free on
the device the model will run on: ``torch.cuda.mem_get_info`` on CUDA, on CPU the smaller of
``MemAvailable`` (/proc/meminfo) and what the cgroup limit leaves.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blipsearch.errors import InsufficientMemoryError

_SAFETENSORS_ITEMSIZE = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_GIB = 1024**3


@dataclass(frozen=True)
class Estimate:
    parameters: int
    how: str  # "safetensors index", "safetensors headers" or "config (meta device)"


def _stored_itemsize(config: Any) -> int:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    name = str(dtype).replace("torch.", "")
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}.get(name, 4)


def _from_index(folder: Path, config: Any) -> Estimate | None:
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        total = int(json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Estimate(total // _stored_itemsize(config), "safetensors index")


def _from_headers(folder: Path) -> Estimate | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    count = 0
    for f in files:
        try:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, t in header.items():
            if name != "__metadata__":
                numel = 1
                for d in t["shape"]:
                    numel *= int(d)
                count += numel
    return Estimate(count, "safetensors headers")


def _from_config(model_cls: Any, config: Any) -> Estimate:
    with torch.device("meta"):
        model = model_cls._from_config(config)
    return Estimate(sum(p.numel() for p in model.parameters()), "config (meta device)")


def _cached_folder(repo_id: str) -> Path | None:
    """The local Hugging Face cache snapshot holding ``repo_id``'s safetensors index, if cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "model.safetensors.index.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache: fall back to the config
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def estimate_parameters(source: str, config: Any, model_cls: Any) -> Estimate:
    folder = Path(source) if Path(source).is_dir() else _cached_folder(source)
    if folder is not None:
        found = _from_index(folder, config) or _from_headers(folder)
        if found is not None:
            return found
    return _from_config(model_cls, config)


def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes, or None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    cg = _cgroup_free()
    if cg is not None:
        free = cg if free is None else min(free, cg)
    return free


def check_fits(
    source: str,
    config: Any,
    model_cls: Any,
    dtype: torch.dtype,
    device: torch.device,
    *,
    headroom: float = 1.2,
    available: int | None = None,
) -> Estimate:
    """Raise InsufficientMemoryError when the checkpoint cannot fit; return the estimate otherwise."""
    est = estimate_parameters(source, config, model_cls)
    need = int(est.parameters * torch.empty((), dtype=dtype, device="meta").element_size() * headroom)
    free = available if available is not None else available_bytes(device)
    if free is not None and need > free:
        name = str(dtype).replace("torch.", "")
        hint = (
            "Use a smaller checkpoint, a GPU with more free memory, or --dtype bf16/fp16 on CUDA"
            if device.type == "cuda" or dtype == torch.float32
            else "Use a smaller checkpoint or a machine with more memory"
        )
        raise InsufficientMemoryError(
            f"Refusing to load {source!r}: {est.parameters / 1e9:.2f}B parameters need about {need / _GIB:.1f} GiB "
            f"in {name} on {device.type} (×{headroom:g} headroom; counted from the {est.how}), but only "
            f"{free / _GIB:.1f} GiB is free. {hint}; BLIPSEARCH_MODEL_MEMORY_CHECK=false skips this check."
        )
    return est
