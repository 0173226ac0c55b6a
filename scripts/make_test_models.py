#!/usr/bin/env python
"""Write small, randomly initialised BLIP checkpoints with ``save_pretrained``.

Tests load these through the same ``from_pretrained`` path as real hub checkpoints, so the
loading code, processors and tokenizers are exercised for real, on models that load in
well under a second. ``--size base`` writes a randomly initialised *base-size* BLIP
retrieval model (ViT-B/16 at 384 px + BERT-base, the FLOPs of ``blip-itm-base-coco``) for
benchmarks.

    python scripts/make_test_models.py OUT_DIR [--size tiny|base] [--seed 0] [--only blip-itm,blip-caption]
                                       [--keep-existing]

Writes ``OUT_DIR/blip-itm`` (BlipForImageTextRetrieval), ``OUT_DIR/blip2-itm``
(Blip2ForImageTextRetrieval; tiny only), ``OUT_DIR/blip-caption`` (BlipForConditionalGeneration),
``OUT_DIR/blip2-caption`` (Blip2ForConditionalGeneration with OPT; tiny only), and the dual
encoders (scripts/model_families.py): ``OUT_DIR/clip`` (CLIPModel), ``OUT_DIR/siglip``
(SiglipModel) and ``OUT_DIR/align`` (AlignModel); tiny only here (base-size ones, with the shapes
of clip-vit-base-patch16, siglip-base-patch16-224 and align-base, come from
``model_families.make_dual_encoders(..., size="base")``).
"""

from __future__ import annotations

import argparse
import random
import string
import tempfile
from pathlib import Path

from model_families import make_dual_encoders

from models.test_checkpoints import mark_random

# The tiny vision tower shared by the BLIP and BLIP-2 test checkpoints. BlipVisionConfig's
# default initializer_range (1e-10) would make every image embed alike.
TINY_VISION = {
    "initializer_range": 0.02,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]

# Words the tests and demos use, so they tokenize to whole words rather than characters.
COMMON_WORDS = (
    "a an the of on in with and photo photography picture image red green blue yellow black "
    "white orange purple square circle triangle stripe stripes striped dot dots cat dog car "
    "tree house person sky sea beach mountain city street food flower bird horse two three "
    "small large big little sitting standing running water grass snow night day sunset"
).split()


def generated_vocab(size: int, seed: int) -> list[str]:
    """A BERT WordPiece vocab: specials, characters, continuation pieces, common and random words."""
    rng = random.Random(seed)
    vocab: list[str] = list(SPECIAL_TOKENS)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab += chars
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab += [w for w in COMMON_WORDS if w not in vocab]
    seen = set(vocab)
    while len(vocab) < size:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7)))
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    return vocab


def make_tokenizer(workdir: Path, vocab_size: int, seed: int):  # type: ignore[no-untyped-def]
    from transformers import BertTokenizer

    vocab = generated_vocab(vocab_size, seed)
    (workdir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # The hub BLIP tokenizers are BERT tokenizers with [DEC] as bos and [ENC] as an extra special.
    return BertTokenizer(
        vocab={tok: i for i, tok in enumerate(vocab)},
        do_lower_case=True,
        bos_token="[DEC]",
        extra_special_tokens=["[ENC]"],
        model_max_length=512,
    )


def _blip_configs(size: str, vocab_size: int) -> tuple[dict, dict, int]:
    if size == "base":
        # blip-itm-base-coco: ViT-B/16 at 384 px, BERT-base text encoder.
        return {"initializer_range": 0.02}, {"vocab_size": vocab_size}, 384
    vision = dict(TINY_VISION)
    text = {
        # A wider init than BERT's 0.02 so that tiny random text encoders tell texts apart
        # by more than float rounding (exactness tests compare rankings).
        "initializer_range": 0.3,
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    }
    return vision, text, 32


def make_blip(out: Path, size: str, seed: int, tokenizer, caption: bool = False) -> Path:  # type: ignore[no-untyped-def]
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    vision, text, image_size = _blip_configs(size, len(tokenizer))
    text.update(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"),
        sep_token_id=tokenizer.sep_token_id,
    )
    config = BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=256)
    torch.manual_seed(seed)
    cls = BlipForConditionalGeneration if caption else BlipForImageTextRetrieval
    model = cls(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_blip2(out: Path, size: str, seed: int, tokenizer) -> Path:  # type: ignore[no-untyped-def]
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        BlipImageProcessor,
    )

    if size == "base":
        raise SystemExit("--size base is only defined for BLIP; BLIP-2 ViT-g is too large to benchmark here")
    config = Blip2Config(
        vision_config=dict(TINY_VISION),
        qformer_config={
            "initializer_range": 0.3,
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "cross_attention_frequency": 1,
            "use_qformer_text_input": True,
            "pad_token_id": tokenizer.pad_token_id,
        },
        text_config={
            "model_type": "opt",
            "vocab_size": 64,
            "hidden_size": 16,
            "ffn_dim": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "word_embed_proj_dim": 16,
        },
        num_query_tokens=32,
        image_text_hidden_size=256,
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_blip2_caption(out: Path, seed: int, tokenizer) -> Path:  # type: ignore[no-untyped-def]
    """A tiny Blip2ForConditionalGeneration with an OPT language model (as blip2-opt-*)."""
    import copy

    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tok = copy.deepcopy(tokenizer)
    num_query = 8
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok, num_query_tokens=num_query
    )
    image_token = tok.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config=dict(TINY_VISION),
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "cross_attention_frequency": 1,
            "vocab_size": len(tok),
        },
        text_config={
            "model_type": "opt",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 128,
            "bos_token_id": tok.cls_token_id,
            "eos_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id,
            "init_std": 0.3,
        },
        num_query_tokens=num_query,
        image_token_index=image_token,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = tok.cls_token_id
    model.generation_config.eos_token_id = tok.sep_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


NAMES = ("blip-itm", "blip2-itm", "blip2-caption", "blip-caption", "clip", "siglip", "align")


def _quiet() -> None:
    """No transformers warnings (the PIL image-processor fallback without torchvision, token ids of
    the random configs) and no progress bars: these checkpoints are random on purpose."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def make_all(
    out_dir: Path, size: str = "tiny", seed: int = 0, only: list[str] | None = None, keep_existing: bool = False
) -> dict[str, Path]:
    """Write the checkpoints (``only``: these names; ``keep_existing``: leave a folder that already
    holds a checkpoint as it is). Each model's seed is fixed, so a subset equals the full set's models."""
    out_dir = Path(out_dir)
    wanted = set(only or NAMES)
    bad = wanted - set(NAMES)
    if bad:
        raise SystemExit(f"unknown model name(s) {', '.join(sorted(bad))}: choose from {', '.join(NAMES)}")
    paths: dict[str, Path] = {}

    def want(name: str) -> bool:
        if name not in wanted:
            return False
        if keep_existing and (out_dir / name / "config.json").is_file():
            paths[name] = out_dir / name
            return False
        return True

    if keep_existing and all((out_dir / n / "config.json").is_file() for n in wanted):
        return {n: out_dir / n for n in NAMES if n in wanted}  # nothing to build: no transformers import
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = 30524 if size == "base" else 512
        tokenizer = make_tokenizer(Path(tmp), vocab_size, seed)
        if want("blip-itm"):
            paths["blip-itm"] = make_blip(out_dir / "blip-itm", size, seed, tokenizer)
        if size == "tiny":
            if want("blip2-itm"):
                paths["blip2-itm"] = make_blip2(out_dir / "blip2-itm", size, seed + 1, tokenizer)
            if want("blip2-caption"):
                paths["blip2-caption"] = make_blip2_caption(out_dir / "blip2-caption", seed + 3, tokenizer)
        if want("blip-caption"):
            paths["blip-caption"] = make_blip(out_dir / "blip-caption", size, seed + 2, tokenizer, caption=True)
        duals = [n for n in ("clip", "siglip", "align") if want(n)]
        if size == "tiny" and duals:  # base-size dual encoders: make_dual_encoders (scripts/bench/families.py)
            paths.update(make_dual_encoders(out_dir, size, seed + 10, tokenizer, only=tuple(duals)))
    for path in paths.values():  # the page warns that a collection built on one is meaningless
        mark_random(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", default=None, help=f"Comma-separated models to write (default: all of {', '.join(NAMES)})."
    )
    parser.add_argument(
        "--keep-existing", action="store_true", help="Leave models whose folder already holds a checkpoint."
    )
    args = parser.parse_args()
    _quiet()
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    for name, path in make_all(args.out_dir, args.size, args.seed, only, args.keep_existing).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
