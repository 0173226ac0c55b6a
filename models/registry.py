"""Load embedders and ITM scorers by the checkpoint's ``config.model_type``, through the family
registry (models/families.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from blipsearch.errors import ModelLoadError, NoItmModelError
from blipsearch.limits import ITM_BATCH_SIZE
from models.base import Embedder
from models.families import MODEL_FAMILIES, Family, family_for_model_type, load_class, supported
from models.loading import RERANK_HINT, check_hub, from_pretrained, naming, resolve_source
from models.options import EmbedderOptions
from models.text_preprocess import check_mode

if TYPE_CHECKING:
    from models.itm import ItmScorer


def _quiet_transformers() -> None:
    # The PIL image-processor fallback warning (no torchvision) is expected here and is noise.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def model_type_of(source: str) -> str | None:
    from models.openclip_config import is_openclip_source

    if is_openclip_source(source):
        return None  # OpenCLIP's layout: not a transformers checkpoint
    check_hub(resolve_source(source))  # an unreachable Hub fails now, before transformers is imported
    from transformers import AutoConfig

    _quiet_transformers()
    config = from_pretrained(AutoConfig, source, "model config")
    return getattr(config, "model_type", None)


def _inspect_openclip(source: str) -> dict[str, Any]:
    from models.openclip_config import describe_config, local_dir, read_config

    fam = MODEL_FAMILIES["openclip"]
    model_cfg = read_config(local_dir(source))["model_cfg"]
    return {
        "checkpoint": source,
        "model_type": None,
        "family": fam.name,
        "capabilities": list(fam.capabilities),
        "vectors_per_image": 1,
        **describe_config(model_cfg),
    }


def inspect_checkpoint(source: str) -> dict[str, Any]:
    """A checkpoint's family, capabilities and embedding dimension, from its config alone (no weights)."""
    from transformers import AutoConfig

    from models.openclip_config import is_openclip_source

    if is_openclip_source(source):
        return _inspect_openclip(source)
    _quiet_transformers()
    config = from_pretrained(AutoConfig, source, "model config")
    model_type = getattr(config, "model_type", None)
    fam = family_for_model_type(model_type)
    if fam is None:
        raise ModelLoadError(f"Model {source!r} has model_type {model_type!r}, which no blipsearch family loads.")
    vpi = fam.vectors_per_image
    return {
        "checkpoint": source,
        "model_type": model_type,
        "family": fam.name,
        "capabilities": list(fam.capabilities),
        "dim": fam.dim(config) if fam.dim is not None else None,
        "vectors_per_image": vpi(config) if callable(vpi) else vpi,
        "multilingual": fam.is_multilingual(config),
    }


def _names(families: list[Family]) -> str:
    return ", ".join(f"{f.name} ({f.transformers_class.split(' ')[0]})" for f in families)


def load_embedder(source: str, options: EmbedderOptions | None = None) -> Embedder:
    """The embedder of ``source``'s family, loaded as ``options`` say (models/options.py):
    ``text_preprocess`` applies to the BLIP families (BLIP's ``pre_caption``); the others
    tokenize texts as their own processors do. ``fast_runtime`` / ``runtime_cache_dir``: the
    ``fast`` runtime of the families that have a choice (BLIP: models/fast_runtime.py)."""
    from models.openclip_config import is_openclip_source

    options = options or EmbedderOptions()
    check_mode(options.text_preprocess)  # a bad value fails before any weights load
    openclip = is_openclip_source(source)  # OpenCLIP's own layout, no transformers config
    model_type = None if openclip else model_type_of(source)
    fam = MODEL_FAMILIES["openclip"] if openclip else family_for_model_type(model_type, "embed")
    if fam is None or fam.embedder is None:
        raise ModelLoadError(
            f"Model {source!r} has model_type {model_type!r}; blipsearch embeds with {_names(supported('embed'))} "
            "checkpoints (see `blipsearch models`)."
        )
    cls = load_class(fam.embedder)
    embedder: Embedder = cls(source, **options.kwargs_for(cls))
    return embedder


def itm_for(embedder: Embedder, *, first_token: str = "enc", batch_size: int = ITM_BATCH_SIZE) -> ItmScorer:
    """The ITM scorer sharing ``embedder``'s loaded model; NoItmModelError for families without one."""
    fam = MODEL_FAMILIES.get(embedder.family)
    if fam is None or fam.itm is None:
        raise NoItmModelError(
            f"The {embedder.family} model {embedder.model_id!r} has no image-text matching (ITM) head; "
            f"name an ITM checkpoint of {_names(supported('itm'))} to re-rank or confirm with "
            "(search --rerank-model, API rerank_model, policy itm_model)."
        )
    cls = load_class(fam.itm)
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if fam.name == "blip":
        kwargs["first_token"] = first_token
    scorer: ItmScorer = cls(embedder, **kwargs)
    return scorer


def load_itm_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    first_token: str = "enc",
    batch_size: int = ITM_BATCH_SIZE,
    precision: str = "exact",
    text_preprocess: str = "blip",
) -> ItmScorer:
    """A BLIP / BLIP-2 ITM scorer loaded from its own checkpoint (cross-family re-ranking)."""
    with naming(RERANK_HINT):
        model_type = model_type_of(source)
        fam = family_for_model_type(model_type, "itm")
        if fam is None:
            raise NoItmModelError(
                f"{source!r} (model_type {model_type!r}) is not an ITM checkpoint; re-ranking takes "
                f"{_names(supported('itm'))} retrieval checkpoints, e.g. Salesforce/blip-itm-base-coco."
            )
        options = EmbedderOptions(
            device=device, dtype=dtype, batch_size=batch_size, precision=precision, text_preprocess=text_preprocess
        )
        embedder = load_embedder(source, options)
    return itm_for(embedder, first_token=first_token, batch_size=batch_size)
