"""Check kinds: one module each behind ``base.CheckKind`` (prompt screening and visual questions
on BLIP scores, consistency, blocklist by ITC, PDQ hash lists, detectors, text rules)."""
