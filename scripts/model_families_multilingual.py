"""Randomly initialised multilingual checkpoints, written with ``save_pretrained``: SigLIP 2 NaFlex
(``Siglip2Model``), MetaCLIP 2 (``MetaClip2Model``), AltCLIP (``AltCLIPModel``) and Chinese-CLIP
(``ChineseCLIPModel``).

Each gets a tokenizer of its family's real class and pipeline, trained locally (no hub) on a small
corpus in several scripts: SigLIP 2 the Gemma byte-fallback BPE (``GemmaTokenizer``, as the hub
checkpoints name it), MetaCLIP 2 and AltCLIP the XLM-RoBERTa unigram tokenizer
(``XLMRobertaTokenizer``), Chinese-CLIP a BERT WordPiece vocabulary with every corpus character
(``BertTokenizer``, which splits CJK text into characters).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_VIT = {**TINY_TEXT, "image_size": 32, "patch_size": 8}

# Training text for the tokenizers: English test words plus sentences in other scripts, so that
# multilingual queries tokenize into real pieces rather than unknown tokens.
CORPUS = [
    "a photo of a red square on a white background",
    "two dogs running on the beach at sunset",
    "a blue circle and a green triangle, a cat, a car, a tree",
    "一只红色的猫坐在白色的桌子上。海边的两只狗，日落时分的城市",
    "赤い四角と青い丸の写真。夕暮れの浜辺を走る二匹の犬",
    "قطة حمراء تجلس على الطاولة البيضاء، كلبان يركضان على الشاطئ",
    "समुद्र तट पर दौड़ते हुए दो कुत्ते, सफेद पृष्ठभूमि पर लाल वर्ग",
    "dos perros corriendo en la playa al atardecer, un cuadrado rojo",
    "ein rotes Quadrat auf weißem Hintergrund, zwei Hunde am Strand, Straße",
    "Красный квадрат на белом фоне. 해변을 달리는 두 마리의 개. สุนัขสองตัววิ่งบนชายหาด",
]


def _corpus(words: list[str]) -> list[str]:
    return CORPUS * 3 + [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)]


def gemma_tokenizer(words: list[str], max_length: int) -> Any:
    """A Gemma BPE tokenizer (the SigLIP 2 kind: Gemma's pipeline, lower-cased) trained on the corpus."""
    from transformers import GemmaTokenizer

    base = GemmaTokenizer()
    tok = base.train_new_from_iterator(_corpus(words), vocab_size=600, show_progress=False)
    tok.model_max_length = max_length
    return tok


def xlmr_tokenizer(words: list[str], max_length: int) -> Any:
    """An XLM-RoBERTa unigram tokenizer (AltCLIP's and MetaCLIP 2's kind) trained on the corpus."""
    from transformers import XLMRobertaTokenizer

    tok = XLMRobertaTokenizer().train_new_from_iterator(_corpus(words), vocab_size=500, show_progress=False)
    tok.model_max_length = max_length
    return tok


def chinese_bert_tokenizer(words: list[str], max_length: int) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary holds every corpus character (Chinese-CLIP's kind)."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for line in _corpus(words) for c in line.lower() if not c.isspace()} | set(string.printable[:62]))
    vocab += chars + ["##" + c for c in chars] + sorted({w.lower() for w in words})
    vocab = list(dict.fromkeys(vocab))
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=max_length)


def _save(out: Path, model: Any, processor: Any) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_siglip2(
    out: Path,
    seed: int,
    words: list[str],
    *,
    patch_size: int = 16,
    max_num_patches: int = 256,
    image_processor_patches: int | None = None,
    tokenizer_max_length: int = 64,
) -> Path:
    """SigLIP 2 NaFlex: at most ``max_num_patches`` patches per image, at the image's own aspect ratio.
    The defaults are ``Siglip2Processor``'s (and the hub checkpoints'), which its ``__call__`` applies
    over the image processor's and tokenizer's own (``image_processor_patches``, ``tokenizer_max_length``
    set those apart, to test that blipsearch prepares inputs as the processor's call does)."""
    import torch
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tok = gemma_tokenizer(words, tokenizer_max_length)
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    config = Siglip2Config(
        text_config={**TINY_TEXT, "vocab_size": len(tok), "max_position_embeddings": 64, **ids},
        vision_config={**TINY_TEXT, "patch_size": patch_size, "num_patches": max_num_patches},
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    image_processor = Siglip2ImageProcessorPil(
        patch_size=patch_size, max_num_patches=image_processor_patches or max_num_patches
    )
    return _save(out, model, Siglip2Processor(image_processor=image_processor, tokenizer=tok))


def _clip_image_processor(side: int) -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def make_metaclip2(out: Path, seed: int, words: list[str]) -> Path:
    import torch
    from transformers import CLIPProcessor, MetaClip2Config, MetaClip2Model

    tok = xlmr_tokenizer(words, 77)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = MetaClip2Config(
        text_config={**TINY_TEXT, "vocab_size": len(tok), "max_position_embeddings": 77, **ids},
        vision_config=dict(TINY_VIT),
        projection_dim=32,
        initializer_factor=5.0,  # a wide init, so that tiny random towers tell inputs apart
    )
    torch.manual_seed(seed)
    model = MetaClip2Model(config).eval()
    return _save(out, model, CLIPProcessor(image_processor=_clip_image_processor(32), tokenizer=tok))


def make_altclip(out: Path, seed: int, words: list[str]) -> Path:
    import torch
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor

    tok = xlmr_tokenizer(words, 64)
    text = {
        **TINY_TEXT,
        "vocab_size": len(tok),
        "max_position_embeddings": 66,  # XLM-R positions start after the padding index
        "project_dim": 32,
        "initializer_range": 0.3,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config = AltCLIPConfig(text_config=text, vision_config=dict(TINY_VIT), projection_dim=32, initializer_factor=5.0)
    torch.manual_seed(seed)
    model = AltCLIPModel(config).eval()
    return _save(out, model, AltCLIPProcessor(image_processor=_clip_image_processor(32), tokenizer=tok))


def make_chinese_clip(out: Path, seed: int, words: list[str]) -> Path:
    import torch
    from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel, ChineseCLIPProcessor

    tok = chinese_bert_tokenizer(words, 52)
    text = {
        **TINY_TEXT,
        "vocab_size": len(tok),
        "max_position_embeddings": 64,
        "initializer_range": 0.3,
        "pad_token_id": tok.pad_token_id,
    }
    config = ChineseCLIPConfig(
        text_config=text, vision_config=dict(TINY_VIT), projection_dim=32, initializer_factor=5.0
    )
    torch.manual_seed(seed)
    model = ChineseCLIPModel(config).eval()
    image_processor = ChineseCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(out, model, ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tok))


MAKERS = {
    "siglip2": make_siglip2,
    "metaclip_2": make_metaclip2,
    "altclip": make_altclip,
    "chinese_clip": make_chinese_clip,
}


def make_multilingual(
    out_dir: Path, seed: int, words: list[str], only: tuple[str, ...] = tuple(MAKERS)
) -> dict[str, Path]:
    """``{"siglip2": dir, "metaclip_2": dir, "altclip": dir, "chinese_clip": dir}``."""
    return {name: MAKERS[name](out_dir / name, seed + i, words) for i, name in enumerate(only)}
