"""BLIP's caption pre-processing (``pre_caption``), as its retrieval training and evaluation apply it.

BLIP (salesforce/BLIP ``data/utils.py``) and LAVIS (``BlipCaptionProcessor``) run every caption
through the same normalisation before tokenizing, in training and in the retrieval evaluation:

1. lower-case;
2. replace each of ``. ! " ( ) * # : ; ~`` with a space;
3. collapse every run of two or more whitespace characters into one space;
4. strip trailing newlines, then leading and trailing spaces;
5. keep at most ``max_words`` space-separated words (30 in BLIP's retrieval evaluation).

Everything else (commas, apostrophes, hyphens, digits, non-ASCII letters) is kept. The models
were trained on text normalised this way, so queries and ITM texts of BLIP-family models get
the same treatment at search time (``text_preprocess="blip"``, the default; ``"none"`` feeds
texts as given).
"""

from __future__ import annotations

import re

from blipsearch.errors import ConfigError

MODES = ("blip", "none")
DEFAULT_MAX_WORDS = 30

_SPECIALS = re.compile(r'[.!"()*#:;~]')
_WHITESPACE_RUNS = re.compile(r"\s{2,}")


def pre_caption(text: str, max_words: int | None = DEFAULT_MAX_WORDS) -> str:
    """``text`` normalised as BLIP's ``pre_caption``; ``max_words=None`` keeps every word."""
    out = _SPECIALS.sub(" ", text.lower())
    out = _WHITESPACE_RUNS.sub(" ", out)
    out = out.rstrip("\n").strip(" ")
    if max_words is not None:
        words = out.split(" ")
        if len(words) > max_words:
            out = " ".join(words[:max_words])
    return out


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"Unknown text pre-processing {mode!r}: use one of {', '.join(MODES)}.")
    return mode


class TextPreprocessor:
    """The per-text function for ``mode``: BLIP's ``pre_caption`` or the identity (picklable)."""

    def __init__(self, mode: str = "blip", max_words: int | None = DEFAULT_MAX_WORDS) -> None:
        if max_words is not None and max_words < 1:
            raise ConfigError(f"max_words must be at least 1 (got {max_words}).")
        self.mode = check_mode(mode)
        self.max_words = max_words

    def __call__(self, text: str) -> str:
        return text if self.mode == "none" else pre_caption(text, self.max_words)
