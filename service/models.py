"""Models from settings: ITC embedders, ITM scorers, captioners."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from blipsearch.config import Settings
from models.base import Embedder

if TYPE_CHECKING:
    from models.captioners import Captioner
    from models.itm import ItmScorer


def load_model(settings: Settings, source: str) -> Embedder:
    """The ITC embedder for ``source`` (hub id or local directory)."""
    from models import load_embedder
    from models.options import EmbedderOptions

    return load_embedder(source, EmbedderOptions.from_settings(settings))


def load_query_model(settings: Settings, source: str) -> Embedder:
    """An embedder for queries: where a text query already ran on the OpenVINO text tower of
    ``source`` (same options), one that encodes texts on that compiled tower without loading
    torch or the checkpoint, and loads the full model only if asked for more
    (models/openvino_query.py); else ``load_model``."""
    from models.openvino_query import open_query_embedder
    from models.options import EmbedderOptions

    found = open_query_embedder(source, EmbedderOptions.from_settings(settings), lambda: load_model(settings, source))
    return found if found is not None else load_model(settings, source)


def full_embedder(embedder: Embedder) -> Embedder:
    """``embedder`` with its whole model loaded: what an ITM head or an indexer needs (the torch
    checkpoint, its processor and tokenizer). A query embedder (``load_query_model``) loads its
    full model now; any other embedder is returned as it is."""
    from models.openvino_query import OpenVinoQueryEmbedder

    return embedder.full() if isinstance(embedder, OpenVinoQueryEmbedder) else embedder


def model_loader(settings: Settings) -> Callable[..., Embedder]:
    """A picklable ``(source, device=...) -> Embedder`` (for Ray model actors)."""
    from models import load_embedder
    from models.options import EmbedderOptions

    return functools.partial(load_embedder, options=EmbedderOptions.from_settings(settings))


def load_itm_scorer(settings: Settings, embedder: Embedder, rerank_model: str | None = None) -> ItmScorer:
    """The ITM scorer: ``rerank_model``'s (a BLIP / BLIP-2 ITM checkpoint, for any collection),
    else the embedder's own head (NoItmModelError for CLIP, SigLIP, ALIGN)."""
    from models import load_itm, load_itm_model
    from models.loading import resolve_source

    first, size = settings.itm_first_token, settings.itm_batch_size
    if rerank_model is None or (embedder.has_itm and resolve_source(rerank_model) == embedder.model_id):
        return load_itm(embedder, first_token=first, batch_size=size)
    return load_itm_model(
        rerank_model, device=settings.device, dtype=settings.dtype, first_token=first, batch_size=size
    )


def load_scorer(settings: Settings, embedder: Embedder) -> ItmScorer:
    """The ITM head sharing ``embedder``'s loaded model."""
    return load_itm_scorer(settings, embedder)


def load_captioner(settings: Settings, model: str | None = None, *, vqa: bool = False) -> Captioner:
    """The captioner for ``model`` (BLIP, BLIP-2, InstructBLIP or LLaVA), refused up front when
    the machine's memory cannot hold it (``BLIPSEARCH_MODEL_MEMORY_CHECK``). ``vqa``: a policy's
    ``vqa_model`` (its load errors name the policy field, not ``--caption-model``)."""
    from models.captioners import load_captioner as load
    from models.loading import CAPTION_HINT, VQA_HINT

    return load(
        model or settings.caption_model,
        hint=VQA_HINT if vqa else CAPTION_HINT,
        device=settings.device,
        dtype=settings.dtype,
        batch_size=settings.caption_batch_size,
        memory_headroom=settings.model_memory_headroom if settings.model_memory_check else None,
        precision=settings.precision,
        fast_runtime=settings.fast_runtime,
        runtime_cache_dir=settings.openvino_cache_dir(),
    )
