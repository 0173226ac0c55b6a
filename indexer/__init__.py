"""Layer 4 (jobs). Bulk indexing: read → hash/decode → embed → write, with per-stage timings."""
