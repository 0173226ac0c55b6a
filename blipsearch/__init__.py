"""Layer 1 (ground). blipsearch: multimodal image search on BLIP / BLIP-2 embeddings, FAISS and Arrow."""

__version__ = "0.1.0"
