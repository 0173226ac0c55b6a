"""Layer 3 (query). Re-ranking of an ITC shortlist by the BLIP / BLIP-2 image-text matching (ITM) head."""
