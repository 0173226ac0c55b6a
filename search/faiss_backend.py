"""FAISS access: lazy import, index factory, GPU placement, (de)serialisation."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError, MissingDependencyError, StorageError
from search.spec_check import check_spec
from search.specs import FLAT_SPEC, ID_MAP, with_id_map

log = logging.getLogger(__name__)

DEFAULT_SPEC = FLAT_SPEC
GPU_MAX_K = 2048  # FAISS GPU k-selection limit


def faiss() -> Any:
    try:
        import faiss as _faiss
    except ImportError as exc:  # pragma: no cover - faiss is a core dependency
        raise MissingDependencyError("Vector search", "faiss-cpu (or faiss-gpu)", "gpu") from exc
    return _faiss


@functools.cache
def num_gpus() -> int:
    try:
        return int(faiss().get_num_gpus())
    except AttributeError:
        return 0


@functools.cache
def _gpu_resources() -> Any:
    return faiss().StandardGpuResources()


def new_index(spec: str, dim: int, id_map: bool = True) -> Any:
    """An inner-product index from a factory spec; IDs are mapped with IDMap2 if not already
    (``id_map=False``: the spec as given, e.g. an IVF index storing ids in its lists)."""
    check_spec(spec, dim)  # some bad parameters abort the process inside FAISS
    f = faiss()
    full = with_id_map(spec) if id_map else spec
    if full.startswith(f"{ID_MAP}IVF"):
        # IVF lists store the ids themselves. IDMap2 around an IVF breaks on deletes: IDMap
        # compacts its id table assuming the inner index renumbers, which IVF does not, so every
        # later hit maps to the wrong record. The spec keeps its name; the index holds ids natively.
        full = full.removeprefix(ID_MAP)
    try:
        return f.index_factory(dim, full, f.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidInputError(f"Invalid FAISS index spec {spec!r}: {exc}") from exc


def to_gpu(index: Any) -> Any | None:
    """A GPU replica of ``index`` when FAISS sees a GPU, else None."""
    if num_gpus() <= 0:
        return None
    try:
        return faiss().index_cpu_to_gpu(_gpu_resources(), 0, index)
    except (RuntimeError, AttributeError) as exc:
        log.warning("FAISS could not place the index on the GPU (%s); searching on CPU", exc)
        return None


def gpu_clustering_index(dim: int) -> Any | None:
    """A GPU flat index for IVF k-means training (FAISS's ``clustering_index`` hook), or None."""
    if num_gpus() <= 0:
        return None
    try:
        return faiss().index_cpu_to_gpu(_gpu_resources(), 0, faiss().IndexFlatL2(dim))
    except (RuntimeError, AttributeError) as exc:
        log.warning("IVF training stays on the CPU (%s)", exc)
        return None


def write(index: Any, path: Path) -> None:
    faiss().write_index(index, str(path))


def read(path: Path, flags: int = 0) -> Any:
    f = faiss()
    try:
        index = f.read_index(str(path), flags)
    except RuntimeError as exc:
        raise StorageError(f"Cannot read FAISS index {path}: {exc}") from exc
    if isinstance(index, f.IndexIDMap2):
        try:
            f.extract_index_ivf(index.index)
        except (RuntimeError, TypeError):  # not IVF inside: a valid IDMap2 index
            return index
        # Written before IVF indexes held their ids natively (see new_index): its id table may
        # be wrong after deletes, so it is rebuilt from the records.
        raise StorageError(f"FAISS index {path.name} is an IDMap2-wrapped IVF index (an older layout)")
    return index
