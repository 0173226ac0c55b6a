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
    # Whether the text tower reads languages other than English. A callable decides per checkpoint
    # (from its config): SigLIP checkpoints with a 250k+ (i18n, Gemma) vocabulary are multilingual.
    multilingual: bool | Callable[[Any], bool] = False
    multilingual_examples: frozenset[str] = frozenset()  # the examples that are, where it depends on the checkpoint
    languages: str = "en"  # what the family's text tower was trained on, in words
    # What ``precision=fast`` runs each stage on, per device: the runtimes that held the fidelity bound
    # (models/precision.py, models/fast_runtime.py); stages not named run fp32 (as ``exact``).
    fast_runtimes: dict[str, str] = field(default_factory=dict)
    # Whether texts go through BLIP's pre_caption (models/text_preprocess.py) before this family's
    # tokenizer, as its training did: the BLIP families only. Every other family tokenizes texts as given.
    pre_caption: bool = False

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def is_multilingual(self, config: Any | None = None) -> bool:
        """The family's flag; with a checkpoint's ``config``, that checkpoint's."""
        if callable(self.multilingual):
            return config is not None and bool(self.multilingual(config))
        return self.multilingual

    def _example_multilingual(self, checkpoint: str) -> bool:
        return checkpoint in self.multilingual_examples if callable(self.multilingual) else self.multilingual

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
            # "some": it depends on the checkpoint (``blipsearch models --model X`` says)
            "multilingual": "some" if callable(self.multilingual) else self.multilingual,
            "languages": self.languages,
            "multilingual_examples": [k for k in self.examples if self._example_multilingual(k)],
            "itm": self.can("itm"),
            "captions": self.can("caption"),
            "vqa": self.can("vqa"),
            "fast_runtimes": dict(self.fast_runtimes),
            "text_preprocess": "blip" if self.pre_caption else "none",
        }


MODEL_FAMILIES: dict[str, Family] = {}
DUAL_ENCODER_FAST = {"cpu": "fp32 (as exact: no reduced-precision path measured within the bound)", "cuda": "fp32"}


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
        pre_caption=True,
        examples={"Salesforce/blip-itm-base-coco": 256, "Salesforce/blip-itm-large-coco": 256},
        fast_runtimes={
            "cpu": "image and text on OpenVINO bf16 (when installed) or torch bf16 autocast, itm torch bf16 "
            "autocast, on CPUs with native bf16; fp32 elsewhere",
            "cuda": "bf16 weights (fp16 where bf16 is unsupported)",
        },
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
        pre_caption=True,
        examples={"Salesforce/blip2-itm-vit-g": 256},
        fast_runtimes={
            "cpu": "image (ViT; Q-Former fp32) and text on torch bf16 autocast on CPUs with native bf16; itm fp32",
            "cuda": "bf16 weights (fp16 where bf16 is unsupported)",
        },
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
        fast_runtimes=DUAL_ENCODER_FAST,
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
        examples={"google/siglip-base-patch16-224": 768, "google/siglip2-base-patch16-224": 768},
        notes="Text is padded to max_length (as SigLIP was trained); SigLIP 2 fixed-resolution checkpoints load alike.",
        multilingual=lambda c: int(c.text_config.vocab_size) >= 250_000,
        multilingual_examples=frozenset({"google/siglip2-base-patch16-224"}),
        languages="en; multilingual for i18n and SigLIP 2 checkpoints (250k+ token vocabulary)",
        fast_runtimes=DUAL_ENCODER_FAST,
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
        fast_runtimes=DUAL_ENCODER_FAST,
    )
)
register(
    Family(
        "siglip2",
        ("siglip2",),
        ("embed",),
        "Siglip2Model",
        embedder="models.siglip2:Siglip2Embedder",
        dim=lambda c: int(c.vision_config.hidden_size),
        examples={"google/siglip2-base-patch16-naflex": 768, "google/siglip2-so400m-patch16-naflex": 1152},
        notes="NaFlex: images keep their aspect ratio (at most max_num_patches patches); Gemma tokenizer, "
        "text padded to 64 tokens.",
        multilingual=True,
        languages="multilingual (WebLI, 100+ languages)",
        fast_runtimes=DUAL_ENCODER_FAST,
    )
)
register(
    Family(
        "metaclip_2",
        ("metaclip_2",),
        ("embed",),
        "MetaClip2Model",
        embedder="models.metaclip2:MetaClip2Embedder",
        dim=lambda c: int(c.projection_dim),
        examples={"facebook/metaclip-2-worldwide-huge-quickgelu": 1024},
        notes="CLIP architecture trained on worldwide data; XLM-V / XLM-RoBERTa tokenizer.",
        multilingual=True,
        languages="multilingual (300+ languages)",
        fast_runtimes=DUAL_ENCODER_FAST,
    )
)
register(
    Family(
        "altclip",
        ("altclip",),
        ("embed",),
        "AltCLIPModel",
        embedder="models.altclip:AltClipEmbedder",
        dim=lambda c: int(c.projection_dim),
        examples={"BAAI/AltCLIP": 768, "BAAI/AltCLIP-m9": 768},
        notes="CLIP vision tower, XLM-RoBERTa text tower.",
        multilingual=True,
        languages="en, zh (AltCLIP); nine languages (AltCLIP-m9)",
        fast_runtimes=DUAL_ENCODER_FAST,
    )
)
register(
    Family(
        "chinese_clip",
        ("chinese_clip",),
        ("embed",),
        "ChineseCLIPModel",
        embedder="models.chinese_clip:ChineseClipEmbedder",
        dim=lambda c: int(c.projection_dim),
        examples={"OFA-Sys/chinese-clip-vit-base-patch16": 512, "OFA-Sys/chinese-clip-vit-large-patch14": 768},
        notes="CLIP ViT with a Chinese RoBERTa (BERT WordPiece) text tower.",
        multilingual=True,
        languages="zh, en",
        fast_runtimes=DUAL_ENCODER_FAST,
    )
)

register(
    Family(
        "openclip",
        (),  # not a transformers model_type: a directory with open_clip_config.json (models/openclip.py)
        ("embed",),
        "open_clip (the openclip extra): open_clip_config.json + open_clip_model.safetensors",
        embedder="models.openclip:OpenClipEmbedder",
        examples={
            "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": 512,
            "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k": 1024,
        },
        notes="OpenCLIP's layout (a local directory or hf-hub:org/repo); weights only from safetensors or a "
        ".bin read with weights_only. Needs pip install 'blipsearch[openclip]'.",
        multilingual=lambda cfg: _openclip_multilingual(cfg),
        multilingual_examples=frozenset({"laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k"}),
        languages="per checkpoint: multilingual for XLM-RoBERTa / mT5 / NLLB / i18n text towers",
        fast_runtimes=DUAL_ENCODER_FAST,
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


def _openclip_multilingual(model_cfg: Any) -> bool:
    from models.openclip_config import is_multilingual

    return is_multilingual(model_cfg)


def text_preprocess_for(family: str, mode: str) -> str:
    """The text pre-processing ``family`` gets under the ``text_preprocess`` setting ``mode``:
    ``mode`` for the BLIP families, ``"none"`` for every other (their own tokenizers, texts as given)."""
    fam = MODEL_FAMILIES.get(family)
    return mode if fam is not None and fam.pre_caption else "none"


def load_class(path: str) -> Any:
    """Import ``"module:Class"``."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
