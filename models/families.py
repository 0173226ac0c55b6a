"""The model families blipsearch knows: a plain registry (data, no torch) keyed by family name.

Each entry says which ``config.model_type`` values it covers, what it can do (``embed``, ``itm``,
``caption``, ``vqa``), where its implementation lives (``"module:Class"``, imported on first use),
how to read the embedding dimension off a checkpoint's config, and example checkpoints.
``models/registry.py`` loads embedders and ITM scorers through it; ``blipsearch models --json``
prints it. Other families (captioners, VQA models) are added with ``register(Family(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CAPABILITIES = ("embed", "itm", "caption", "vqa")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this family loads
    capabilities: tuple[str, ...]  # subset of CAPABILITIES
    transformers_class: str  # the transformers class the checkpoints are loaded with
    embedder: str | None = None  # "module:Class" of the Embedder, when it can embed
    itm: str | None = None  # "module:Class" of the ItmScorer, when it has an ITM head
    dim: Callable[[Any], int] | None = None  # config -> embedding dimension
    vectors_per_image: int | Callable[[Any], int] = 1
    examples: dict[str, int | None] = field(default_factory=dict)  # checkpoint -> its embedding dimension
    notes: str = ""

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "model_types": list(self.model_types),
            "capabilities": list(self.capabilities),
            # the reference (first example) checkpoint's embedding dimension; per checkpoint in examples
            "dim": next(iter(self.examples.values()), None) if self.can("embed") else None,
            "transformers_class": self.transformers_class,
            "examples": [{"checkpoint": k, "dim": v} for k, v in self.examples.items()],
            "notes": self.notes,
        }


MODEL_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    unknown = set(family.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"Unknown capabilities {sorted(unknown)} for family {family.name!r}")
    MODEL_FAMILIES[family.name] = family
    return family


def family_for_model_type(model_type: str | None, capability: str | None = None) -> Family | None:
    """The registered family loading ``model_type`` (with ``capability``, when given)."""
    for fam in MODEL_FAMILIES.values():
        if model_type in fam.model_types and (capability is None or fam.can(capability)):
            return fam
    return None


def supported(capability: str) -> list[Family]:
    return [f for f in MODEL_FAMILIES.values() if f.can(capability)]


register(
    Family(
        "blip",
        ("blip",),
        ("embed", "itm", "caption"),
        "BlipForImageTextRetrieval (embed, itm); BlipForConditionalGeneration (caption)",
        embedder="models.blip:BlipEmbedder",
        itm="models.blip_itm:BlipItmScorer",
        dim=lambda c: int(c.image_text_hidden_size),
        examples={"Salesforce/blip-itm-base-coco": 256, "Salesforce/blip-itm-large-coco": 256},
    )
)
register(
    Family(
        "blip2",
        ("blip-2",),
        ("embed", "itm", "caption"),
        "Blip2ForImageTextRetrieval (embed, itm); Blip2ForConditionalGeneration (caption)",
        embedder="models.blip2:Blip2Embedder",
        itm="models.blip2_itm:Blip2ItmScorer",
        dim=lambda c: int(c.image_text_hidden_size),
        vectors_per_image=lambda c: int(c.num_query_tokens),
        examples={"Salesforce/blip2-itm-vit-g": 256},
        notes="32 vectors per image (one per Q-Former query); an image's score is the max over them.",
    )
)
register(
    Family(
        "clip",
        ("clip",),
        ("embed",),
        "CLIPModel",
        embedder="models.clip:ClipEmbedder",
        dim=lambda c: int(c.projection_dim),
        examples={"openai/clip-vit-base-patch16": 512, "openai/clip-vit-large-patch14": 768},
    )
)
register(
    Family(
        "siglip",
        ("siglip",),
        ("embed",),
        "SiglipModel",
        embedder="models.siglip:SiglipEmbedder",
        dim=lambda c: int(c.vision_config.hidden_size),
        examples={"google/siglip-base-patch16-224": 768},
        notes="Text is padded to max_length (as SigLIP was trained); SigLIP 2 fixed-resolution checkpoints load alike.",
    )
)
register(
    Family(
        "align",
        ("align",),
        ("embed",),
        "AlignModel",
        embedder="models.align:AlignEmbedder",
        dim=lambda c: int(c.projection_dim),
        examples={"kakaobrain/align-base": 640},
    )
)

register(
    Family(
        "instructblip",
        ("instructblip",),
        ("caption", "vqa"),
        "InstructBlipForConditionalGeneration",
        examples={"Salesforce/instructblip-flan-t5-xl": None, "Salesforce/instructblip-vicuna-7b": None},
        notes="Instruction-following captions (--prompt is the instruction) and visual questions (models/captioners/).",
    )
)
register(
    Family(
        "llava",
        ("llava",),
        ("caption", "vqa"),
        "LlavaForConditionalGeneration",
        examples={"llava-hf/llava-1.5-7b-hf": None},
        notes="The processor's chat template with the image and --prompt; visual questions (models/captioners/).",
    )
)


def load_class(path: str) -> Any:
    """Import ``"module:Class"``."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
