"""FAISS indexes over collections, and exact (max-sim) top-k search."""
