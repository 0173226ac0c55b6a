"""Chinese-CLIP (``ChineseCLIPModel``, e.g. OFA-Sys/chinese-clip-vit-base-patch16): a CLIP ViT
with a Chinese RoBERTa (BERT WordPiece) text tower; the text feature is the projected [CLS]
token. The tokenizer splits CJK text into characters and also reads English."""

from __future__ import annotations

from models.dual_encoder import DualEncoderEmbedder


class ChineseClipEmbedder(DualEncoderEmbedder):
    family = "chinese_clip"
    model_class = "ChineseCLIPModel"
    what = "Chinese-CLIP"
    text_padding = "longest"
