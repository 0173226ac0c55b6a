"""AltCLIP (``AltCLIPModel``, BAAI/AltCLIP and the nine-language BAAI/AltCLIP-m9): CLIP's vision
tower with an XLM-RoBERTa text tower distilled to CLIP's space; the text feature is the projected
first (``<s>``) token. Images go through CLIP's processor."""

from __future__ import annotations

from models.dual_encoder import DualEncoderEmbedder


class AltClipEmbedder(DualEncoderEmbedder):
    family = "altclip"
    model_class = "AltCLIPModel"
    what = "AltCLIP"
    text_padding = "longest"

    @staticmethod
    def _max_positions(config: object) -> int:
        # XLM-R position ids start after the padding index: two positions are never used by tokens
        return int(config.text_config.max_position_embeddings) - 2  # type: ignore[attr-defined]
