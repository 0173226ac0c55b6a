"""Layer 3 (query). FAISS indexes over collections, and exact (max-sim) top-k search."""
