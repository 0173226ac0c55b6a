"""Layer 4 (jobs). Content moderation: policy screening on BLIP scores (ITC screen, ITM decision,
visual questions), image-text consistency, blocklists by ITC, PDQ hash lists, detectors and text
rules, composed into one decision per record (moderation/checks.py)."""
