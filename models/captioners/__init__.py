"""Captioner families, chosen by the checkpoint's ``config.model_type`` through a registry."""

from __future__ import annotations

import importlib
from typing import Any

from blipsearch.errors import ModelLoadError
from models.captioners.base import Captioner, Decoding
from models.loading import CAPTION_HINT, Hint, check_hub, from_pretrained, naming, resolve_source

# config.model_type -> "module:Class" of its Captioner (imported only when that family is loaded)
CAPTIONER_CLASSES: dict[str, str] = {
    "blip": "models.captioners.blip:BlipCaptioner",
    "blip-2": "models.captioners.blip:Blip2Captioner",
    "instructblip": "models.captioners.instructblip:InstructBlipCaptioner",
    "llava": "models.captioners.llava:LlavaCaptioner",
}


def captioner_class(model_type: str | None, source: str = "") -> type[Captioner]:
    target = CAPTIONER_CLASSES.get(model_type or "")
    if target is None:
        raise ModelLoadError(
            f"{source!r} is not a supported captioning checkpoint (model_type {model_type!r}); supported: "
            "BlipForConditionalGeneration (e.g. Salesforce/blip-image-captioning-base), Blip2ForConditionalGeneration "
            "(Salesforce/blip2-opt-2.7b), InstructBlipForConditionalGeneration (Salesforce/instructblip-flan-t5-xl) "
            "and LlavaForConditionalGeneration (llava-hf/llava-1.5-7b-hf)."
        )
    module, name = target.split(":")
    cls: type[Captioner] = getattr(importlib.import_module(module), name)
    return cls


def caption_families() -> list[dict[str, object]]:
    """What each captioning family can do, for ``blipsearch models --json``."""
    out: list[dict[str, object]] = []
    for model_type in CAPTIONER_CLASSES:
        cls = captioner_class(model_type)
        caps = ["caption", "vqa"] if cls.supports_vqa else ["caption"]
        out.append({"family": cls.family, "model_type": model_type, "class": cls.architecture, "capabilities": caps})
    return out


def load_captioner(source: str, hint: Hint = CAPTION_HINT, **kwargs: Any) -> Captioner:
    """The captioner for ``source``'s family; ``kwargs`` as ``Captioner.__init__`` takes them.
    Load errors name ``hint``'s way to choose another (``--caption-model`` by default)."""
    with naming(hint):
        check_hub(resolve_source(source))  # an unreachable Hub fails now, before transformers is imported
        from transformers import AutoConfig

        from models.registry import _quiet_transformers

        _quiet_transformers()
        config = from_pretrained(AutoConfig, source, "caption model config")
        cls = captioner_class(getattr(config, "model_type", None), source)
        return cls(source, config=config, **kwargs)


__all__ = [
    "CAPTIONER_CLASSES",
    "Captioner",
    "Decoding",
    "caption_families",
    "captioner_class",
    "load_captioner",
]
