"""Layer 4 (jobs). Content moderation on BLIP scores: policy screening (ITC screen, ITM decision),
image-text consistency (ITM), and blocklist matching (ITC image-image)."""
