"""Randomly initialised CLIP, SigLIP and ALIGN checkpoints, written with ``save_pretrained``.

Each gets a tokenizer of its own kind, built locally (no hub): CLIP a byte-pair tokenizer trained
with ``tokenizers`` on the test words, SigLIP a SentencePiece model trained with ``sentencepiece``,
ALIGN the BERT WordPiece tokenizer the BLIP test checkpoints use. ``size="base"`` gives the
architectures of openai/clip-vit-base-patch16, google/siglip-base-patch16-224 and
kakaobrain/align-base (random weights; for FLOPs and throughput benchmarks).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_VIT = {**TINY_TEXT, "image_size": 32, "patch_size": 8}


def _words(tokenizer: Any) -> list[str]:
    """The whole words of the BLIP test tokenizer's vocabulary (test words plus random ones)."""
    return [w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 1]


def clip_tokenizer(words: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"),
        show_progress=False,
    )
    # every character alone and inside words, so that none is unknown (CLIP's unknown token is its
    # end-of-text token, which is where the text tower pools)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    extra = [" ".join(chars), " ".join(a + b for a in chars for b in chars[:12])]
    bpe.train_from_iterator([" ".join(words)] * 4 + extra, trainer)
    model = json.loads(bpe.to_str())["model"]
    return CLIPTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], model_max_length=77)


def make_clip(out: Path, size: str, seed: int, words: list[str]) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = clip_tokenizer(words, 49408 if size == "base" else 400)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if size == "base":  # clip-vit-base-patch16: ViT-B/16 at 224 px, 12-layer 512-wide text transformer
        config = CLIPConfig(
            text_config={"vocab_size": 49408, **ids}, vision_config={"patch_size": 16}, projection_dim=512
        )
        side = 224
    else:
        config = CLIPConfig(
            text_config={**TINY_TEXT, "vocab_size": len(tok), "max_position_embeddings": 77, **ids},
            vision_config=dict(TINY_VIT),
            projection_dim=32,
            initializer_factor=5.0,  # a wide init, so that tiny random towers tell inputs apart
        )
        side = 32
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tok,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def siglip_tokenizer(words: list[str], vocab_size: int, workdir: Path, max_length: int) -> Any:
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(" ".join(words[i : i + 8]) for i in range(0, len(words), 8)) + "\n")
    prefix = workdir / "spiece"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return SiglipTokenizer(vocab_file=str(prefix) + ".model", model_max_length=max_length)


def make_siglip(out: Path, size: str, seed: int, words: list[str]) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    max_len = 64 if size == "base" else 24
    with tempfile.TemporaryDirectory() as tmp:
        tok = siglip_tokenizer(words, 400, Path(tmp), max_len)
        ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.eos_token_id}
        if size == "base":  # siglip-base-patch16-224: the SiglipConfig defaults
            config = SiglipConfig(text_config={"vocab_size": 32000, **ids})
            side = 224
        else:
            config = SiglipConfig(
                text_config={**TINY_TEXT, "vocab_size": len(tok), "max_position_embeddings": max_len, **ids},
                vision_config=dict(TINY_VIT),
            )
            side = 32
        torch.manual_seed(seed)
        model = SiglipModel(config).eval()
        processor = SiglipProcessor(
            image_processor=SiglipImageProcessor(size={"height": side, "width": side}), tokenizer=tok
        )
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def make_align(out: Path, size: str, seed: int, tokenizer: Any) -> Path:
    import torch
    from transformers import AlignConfig, AlignModel, AlignProcessor, EfficientNetImageProcessor

    if size == "base":  # align-base: EfficientNet-B7 at 289 px, BERT-base, 640-d projection
        config = AlignConfig(text_config={"vocab_size": len(tokenizer)}, projection_dim=640)
        side = 289
    else:
        vision = {
            "image_size": 32,
            "width_coefficient": 1.0,
            "depth_coefficient": 1.0,
            "kernel_sizes": [3, 3, 5],
            "in_channels": [32, 16, 24],
            "out_channels": [16, 24, 32],
            "strides": [1, 2, 2],
            "num_block_repeats": [1, 1, 1],
            "expand_ratios": [1, 6, 6],
            "hidden_dim": 64,
            "initializer_range": 0.3,
        }
        text = {
            **TINY_TEXT,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "initializer_range": 0.3,
            "pad_token_id": tokenizer.pad_token_id,
        }
        config = AlignConfig(text_config=text, vision_config=vision, projection_dim=32)
        side = 32
    torch.manual_seed(seed)
    model = AlignModel(config).eval()
    image_processor = EfficientNetImageProcessor(
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        rescale_offset=True,
        include_top=False,
    )
    processor = AlignProcessor(image_processor=image_processor, tokenizer=tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_dual_encoders(
    out_dir: Path, size: str, seed: int, tokenizer: Any, only: tuple[str, ...] = ("clip", "siglip", "align")
) -> dict[str, Path]:
    """``{"clip": dir, "siglip": dir, "align": dir}`` (``tokenizer``: the BLIP test tokenizer)."""
    words = _words(tokenizer)
    makers = {
        "clip": lambda: make_clip(out_dir / "clip", size, seed, words),
        "siglip": lambda: make_siglip(out_dir / "siglip", size, seed + 1, words),
        "align": lambda: make_align(out_dir / "align", size, seed + 2, tokenizer),
    }
    return {name: makers[name]() for name in only}
