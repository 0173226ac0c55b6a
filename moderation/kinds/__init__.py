"""Check kinds, one module each, composed by moderation/checks.py: prompt screening, visual
questions, consistency and the ITC blocklist on BLIP scores; PDQ hash lists, detectors and text
rules behind ``base.CheckKind``."""
