"""Bulk indexing: read → hash/decode → embed → write, with per-stage timings."""
