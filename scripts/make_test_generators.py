#!/usr/bin/env python
"""Write tiny, randomly initialised instruction-following checkpoints with ``save_pretrained``.

As ``make_test_models.py`` does for BLIP, these load through the real ``from_pretrained`` path
(config, weights, processor, tokenizer, chat template), so the captioner and VQA code is tested
against the same objects a hub checkpoint gives. No hub access: the language-model tokenizer is
built with the ``tokenizers`` library from a generated word list.

    python scripts/make_test_generators.py OUT_DIR [--seed 0]

Writes ``OUT_DIR/instructblip`` (InstructBlipForConditionalGeneration with a T5 language model,
as ``Salesforce/instructblip-flan-t5-xl``) and ``OUT_DIR/llava`` (LlavaForConditionalGeneration:
tiny CLIP vision tower + tiny LLaMA, with the LLaVA-1.5 chat template).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_test_models import COMMON_WORDS, TINY_VISION, make_tokenizer

# LLaVA-1.5's template (llava-hf/llava-1.5-7b-hf), images first, then the text of each turn.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

EXTRA_WORDS = (
    "describe is there this what are any yes no Yes No YES NO weapon gun knife USER ASSISTANT short answer question "
    "caption it do does you see"
).split()
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]


def lm_tokenizer(workdir: Path, bos: bool):  # type: ignore[no-untyped-def]
    """A sentencepiece-style word-level tokenizer (``▁word`` pieces; punctuation split off).

    ``bos=True`` gives LLaMA's layout (``<s>`` prepended); ``bos=False`` T5's (``</s>`` appended).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys([*COMMON_WORDS, *EXTRA_WORDS]))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for piece in ["▁" + w for w in words] + list("?.,:!'\n") + ["▁"]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
    path = workdir / ("llama-tok.json" if bos else "t5-tok.json")
    tok.save(str(path))
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=512,
        padding_side="left" if bos else "right",
    )


def make_instructblip(out: Path, seed: int, workdir: Path) -> Path:
    import torch
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    qformer_tok = make_tokenizer(workdir, 512, seed)
    tok = lm_tokenizer(workdir, bos=False)
    num_query = 8
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tok,
        qformer_tokenizer=qformer_tok,
        num_query_tokens=num_query,
    )  # adds the <image> token to the language tokenizer
    config = InstructBlipConfig(
        vision_config=dict(TINY_VISION),
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "cross_attention_frequency": 1,
            "vocab_size": len(qformer_tok),
            "max_position_embeddings": 128,
            "pad_token_id": qformer_tok.pad_token_id,
            "initializer_range": 0.3,
        },
        text_config={
            "model_type": "t5",
            "vocab_size": len(tok),
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 4,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "decoder_start_token_id": tok.pad_token_id,
            "initializer_factor": 3.0,
        },
        num_query_tokens=num_query,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        initializer_range=0.5,  # query tokens and language projection: images must move the captions
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.decoder_start_token_id = tok.pad_token_id, tok.eos_token_id, tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_llava(out: Path, seed: int, workdir: Path) -> Path:
    import torch
    from tokenizers import AddedToken
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = lm_tokenizer(workdir, bos=True)
    tok.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    image_side, patch = 32, 8
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_side}, crop_size={"height": image_side, "width": image_side}
        ),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    vision = {k: v for k, v in TINY_VISION.items() if k != "initializer_range"}
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **vision, "projection_dim": 32},
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "initializer_range": 0.3,
        },
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_side // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_generators(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "instructblip": make_instructblip(out_dir / "instructblip", seed + 11, Path(tmp)),
            "llava": make_llava(out_dir / "llava", seed + 12, Path(tmp)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in make_generators(args.out_dir, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
