"""Layer 3 (query). Retrieval evaluation (the BLIP / LAVIS protocol) on labelled image-caption data."""
