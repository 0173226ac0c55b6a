"""Keyword text analysis shared by both full-text engines (SQLite FTS5 and PostgreSQL).

Both engines split words on spaces and punctuation, which leaves Chinese and Japanese (written
without spaces) as one token per sentence, so a query for a word inside it finds nothing. Neither
FTS5's ``trigram`` tokenizer (it cannot match a query under 3 characters, and most Chinese words
are 2) nor ICU (not in Python's sqlite3 or a stock PostgreSQL) fits both engines. So text is
analysed here, the same way for both, before either engine sees it:

* NFKC normalisation (full-width forms, ligatures), lower case;
* diacritics folded on Latin letters only (``Straße`` → ``strasse``, ``café`` → ``cafe``), so
  both engines fold alike; the vowel signs of Devanagari or Arabic are letters and are kept;
* punctuation and symbols become spaces (every Unicode letter, mark and digit is a token char);
* runs of Han, Hiragana, Katakana and Hangul become overlapping character bigrams
  (``北京大学`` → ``北京 京大 大学``; a lone character stays a unigram), the approach of
  Lucene's CJKAnalyzer; a query's CJK run becomes a phrase of its bigrams, so it matches
  exactly that character sequence. Queries of one CJK character match as a bigram prefix.

Each engine then applies its own word stemming (FTS5 ``porter``, PostgreSQL ``english``) to the
tokens; stemming leaves non-Latin tokens as they are.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

_QUERY_TERM = re.compile(r'"([^"]*)"|(\S+)')


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # Hiragana, Katakana
        or 0x3400 <= o <= 0x4DBF  # CJK extension A
        or 0x4E00 <= o <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or 0xAC00 <= o <= 0xD7AF  # Hangul syllables
        or 0x1100 <= o <= 0x11FF  # Hangul jamo
        or 0x20000 <= o <= 0x2FA1F  # extensions B-F, compatibility supplement
        or 0x31F0 <= o <= 0x31FF  # Katakana phonetic extensions
    )


def _fold_latin(text: str) -> str:
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and out[-1] < "\u0250":
            continue  # a diacritic on a Latin letter
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).replace("ß", "ss")


def _token_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def tokens(text: str) -> list[str]:
    """The token stream of ``text`` (what both engines index)."""
    text = _fold_latin(unicodedata.normalize("NFKC", text).lower())
    out: list[str] = []
    word: list[str] = []
    run: list[str] = []

    def end_word() -> None:
        if word:
            out.append("".join(word))
            word.clear()

    def end_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        else:
            out.extend(run[i] + run[i + 1] for i in range(len(run) - 1))
        run.clear()

    for ch in text:
        if _is_cjk(ch):
            end_word()
            run.append(ch)
        elif _token_char(ch):
            if run:
                end_run()
            word.append(ch)
        else:
            end_word()
            if run:
                end_run()
    end_word()
    if run:
        end_run()
    return out


def analyse(text: str | None) -> str:
    """Text as both engines index it: the tokens, space-separated."""
    return " ".join(tokens(text or ""))


@dataclass(frozen=True)
class Term:
    """One query term: a phrase of tokens (a word is a phrase of one); ``prefix`` for a lone CJK char."""

    tokens: tuple[str, ...]
    prefix: bool = False


def query_terms(query: str) -> list[Term]:
    """A user query → terms that must all match: words, ``"quoted phrases"``, CJK runs as phrases."""
    terms: list[Term] = []
    for phrase, word in _QUERY_TERM.findall(query):
        toks = tokens(phrase or word)
        if not toks:
            continue
        lone_cjk = len(toks) == 1 and len(toks[0]) == 1 and _is_cjk(toks[0])
        terms.append(Term(tuple(toks), prefix=lone_cjk))
    return terms


def fts5_match(terms: list[Term], column: str | None = None) -> str:
    """Terms → an FTS5 MATCH expression (tokens are letters, marks and digits only: safe to quote)."""
    parts = []
    for t in terms:
        quoted = '"' + " ".join(t.tokens) + '"'
        parts.append(quoted + ("*" if t.prefix else ""))
    expr = " ".join(parts)
    return f"{{{column}}} : ({expr})" if column and expr else expr


def _stem_like(a: str, b: str) -> bool:
    """Equal, or one a prefix of the other of 4+ characters (plural, -ing: close to a stemmer's match)."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 4 and long_.startswith(short) and len(long_) - len(short) <= 3


def ocr_match_fields(query: str, record: dict[str, Any]) -> dict[str, Any]:
    """``ocr_match`` (the best matching OCR line: line, box, score) and ``ocr_matches`` (every
    matching line) of a search hit's record, or nothing when no OCR line matches the query."""
    found = ocr_matches(query, record.get("ocr_lines"))
    return {"ocr_match": found[0], "ocr_matches": found} if found else {}


def ocr_matches(query: str, ocr_lines: str | None) -> list[dict[str, Any]]:
    """The OCR lines of a record that match ``query``, best first: ``line``, ``box``, ``score``
    (the share of the query's tokens found in the line), ``confidence``."""
    if not ocr_lines:
        return []
    try:
        lines = json.loads(ocr_lines)
    except ValueError:
        return []
    wanted = [tok for t in query_terms(query) for tok in t.tokens]
    if not wanted or not isinstance(lines, list):
        return []
    out: list[dict[str, Any]] = []
    for ln in lines:
        if not isinstance(ln, dict):
            continue
        have = tokens(str(ln.get("text", "")))
        hit = sum(1 for w in wanted if any(_stem_like(w, h) or (len(w) == 1 and w in h) for h in have))
        if hit:
            out.append(
                {
                    "line": ln.get("text"),
                    "box": ln.get("box"),
                    "score": round(hit / len(wanted), 4),
                    "confidence": ln.get("confidence"),
                }
            )
    out.sort(key=lambda m: (-float(m["score"]), -float(m["confidence"] or 0)))
    return out
