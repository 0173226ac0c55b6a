"""MetaCLIP 2 (``MetaClip2Model``, e.g. facebook/metaclip-2-worldwide-huge-quickgelu): CLIP's
architecture trained on worldwide (300+ language) data, with a multilingual XLM-V / XLM-RoBERTa
tokenizer. The text tower pools its end-of-sequence token; images go through CLIP's processor."""

from __future__ import annotations

from models.dual_encoder import DualEncoderEmbedder


class MetaClip2Embedder(DualEncoderEmbedder):
    family = "metaclip_2"
    model_class = "MetaClip2Model"
    what = "MetaCLIP 2"
    text_padding = "longest"
