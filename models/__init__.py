"""Layer 2 (parts). Model wrappers. The only package in blipsearch that imports ``transformers``.

Importing this package is cheap: torch and transformers load on first use of a loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.base import Embedder
    from models.itm import ItmScorer

__all__ = ["load_embedder", "load_itm", "load_itm_model"]


def load_embedder(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    text_preprocess: str = "blip",
    text_max_words: int | None = 30,
    precision: str = "exact",
    fast_runtime: str = "auto",
    runtime_cache_dir: str | None = None,
) -> Embedder:
    """Load a retrieval checkpoint (hub id or local directory) of any embedding family as an Embedder:
    BLIP, BLIP-2, CLIP, SigLIP or ALIGN, chosen by its ``config.model_type`` (models/families.py).

    ``text_preprocess="blip"`` runs query and ITM texts through BLIP's ``pre_caption``
    (``models/text_preprocess.py``, at most ``text_max_words`` words) before tokenizing, as the
    models were trained; ``"none"`` tokenizes texts as given. ITM scorers from ``load_itm``
    share the embedder's tokenizer path, so they get the same pre-processing.

    ``precision``: "exact" (fp32, the transformers forward) or "fast" (models/precision.py).
    ``fast_runtime``: "auto", "torch" or "openvino": what runs BLIP's image and text stages in
    ``fast`` mode (models/fast_runtime.py); ``runtime_cache_dir``: where converted OpenVINO models
    are cached (None: converted in memory on each load).
    """
    from models.registry import load_embedder as _load

    return _load(
        source,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        text_preprocess=text_preprocess,
        text_max_words=text_max_words,
        precision=precision,
        fast_runtime=fast_runtime,
        runtime_cache_dir=runtime_cache_dir,
    )


def load_itm(embedder: Embedder, *, first_token: str = "enc", batch_size: int = 32) -> ItmScorer:
    """The ITM scorer sharing ``embedder``'s loaded model (BLIP or BLIP-2); NoItmModelError otherwise."""
    from models.registry import itm_for

    return itm_for(embedder, first_token=first_token, batch_size=batch_size)


def load_itm_model(
    source: str, *, device: str = "auto", dtype: str = "auto", first_token: str = "enc", batch_size: int = 32
) -> ItmScorer:
    """A BLIP / BLIP-2 ITM scorer loaded from its own checkpoint, for any collection's shortlist."""
    from models.registry import load_itm_model as _load

    return _load(source, device=device, dtype=dtype, first_token=first_token, batch_size=batch_size)
