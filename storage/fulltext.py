"""Keyword search over captions, text metadata and text read from the images (OCR), in the catalog database.

Two fields per record: ``body`` (caption, text and metadata values) and ``ocr`` (the record's
``ocr_text``). ``target`` picks what a query searches: ``all`` (both, the default), ``ocr`` or
``captions`` (the body alone). Text is analysed the same way for both engines first
(storage/text_analysis.py: normalisation, Latin diacritic folding, CJK bigrams), so they see the
same tokens. SQLite (the default catalog): one FTS5 table per collection, ``rowid`` = record id,
columns ``body`` and ``ocr``, the ``porter unicode61`` tokenizer (English stemming) on the
analysed text, ranked by BM25. PostgreSQL: ``tsvector`` columns (``english`` configuration,
stemming) with GIN indexes, ranked by ``ts_rank_cd``. Either way it is derived data: ``sync``
re-ingests any shard whose file changed (new records, new captions, OCR), so a crash between a
record commit and the text index loses nothing.

Query syntax, both engines: words must all match (stemmed); ``"double quotes"`` match a phrase;
a run of Chinese or Japanese characters matches as that sequence.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import text
from sqlalchemy.engine import Engine

from blipsearch.errors import InvalidInputError
from storage.collection import Collection
from storage.text_analysis import analyse, fts5_match, query_terms

MAX_QUERY_CHARS = 500
TARGETS = ("all", "ocr", "captions")
ANALYSIS = "v2"  # bumped when the analysis or the tables change: every shard is re-ingested
_PG_TABLE = "record_text_v2"


def body_of(rec: dict[str, Any]) -> str:
    """The searchable text of a record: caption and text, plus metadata values."""
    parts = [rec.get("caption") or "", rec.get("text") or ""]
    meta = rec.get("metadata")
    if meta:
        try:
            parts += [str(v) for v in json.loads(meta).values()]
        except ValueError:
            parts.append(str(meta))
    return " ".join(p for p in parts if p).strip()


def fts5_query(q: str) -> str:
    """User query → safe FTS5 MATCH expression over both fields (every token quoted; phrases kept)."""
    return fts5_match(query_terms(q))


class KeywordIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        with engine.begin() as c:
            if self.dialect == "sqlite":
                pass  # per-collection tables, created on first sync
            elif self.dialect == "postgresql":
                c.execute(text("DROP TABLE IF EXISTS record_text"))  # the single-field table of earlier versions
                c.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {_PG_TABLE} (collection VARCHAR(64) NOT NULL,"
                        " record_id BIGINT NOT NULL, body TEXT NOT NULL, ocr TEXT NOT NULL,"
                        " tsv tsvector GENERATED ALWAYS AS"
                        " (to_tsvector('english', body) || to_tsvector('english', ocr)) STORED,"
                        " tsv_body tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,"
                        " tsv_ocr tsvector GENERATED ALWAYS AS (to_tsvector('english', ocr)) STORED,"
                        " PRIMARY KEY (collection, record_id))"
                    )
                )
                for col in ("tsv", "tsv_body", "tsv_ocr"):
                    c.execute(text(f"CREATE INDEX IF NOT EXISTS {_PG_TABLE}_{col} ON {_PG_TABLE} USING GIN ({col})"))
            else:
                raise InvalidInputError(f"Keyword search needs SQLite or PostgreSQL, not {self.dialect}.")
            c.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS fts_shards (collection VARCHAR(64) NOT NULL,"
                    " shard VARCHAR(128) NOT NULL,"
                    " stamp VARCHAR(64) NOT NULL, PRIMARY KEY (collection, shard))"
                )
            )

    def _fts(self, collection: str) -> str:
        """The SQLite FTS5 table of a collection (names are validated; the hash keeps them distinct)."""
        return self._fts_named(collection, "fts2")

    @staticmethod
    def _fts_named(collection: str, prefix: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_]", "_", collection)
        return f"{prefix}_{safe}_{zlib.crc32(collection.encode()):08x}"

    def _ensure(self, c: Any, collection: str) -> None:
        if self.dialect == "sqlite":
            c.execute(text(f"DROP TABLE IF EXISTS {self._fts_named(collection, 'fts')}"))  # earlier versions'
            c.execute(
                text(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._fts(collection)} USING fts5("
                    "body, ocr, tokenize='porter unicode61 remove_diacritics 0')"
                )
            )

    def _replace_rows(self, c: Any, collection: str, lo: int, hi: int, rows: list[tuple[int, str, str]]) -> None:
        values = [{"c": collection, "r": r, "b": b, "o": o} for r, b, o in rows]
        if self.dialect == "sqlite":
            t = self._fts(collection)
            c.execute(text(f"DELETE FROM {t} WHERE rowid BETWEEN :lo AND :hi"), {"lo": lo, "hi": hi})
            if rows:
                c.execute(text(f"INSERT INTO {t} (rowid, body, ocr) VALUES (:r, :b, :o)"), values)
        else:
            c.execute(
                text(f"DELETE FROM {_PG_TABLE} WHERE collection = :c AND record_id BETWEEN :lo AND :hi"),
                {"c": collection, "lo": lo, "hi": hi},
            )
            if rows:
                c.execute(
                    text(f"INSERT INTO {_PG_TABLE} (collection, record_id, body, ocr) VALUES (:c, :r, :b, :o)"),
                    values,
                )

    def sync(self, coll: Collection) -> int:
        """Re-ingest shards changed since the last sync. Returns the number of shards ingested."""
        m = coll.reload()
        with self.engine.begin() as c:
            rows = c.execute(text("SELECT shard, stamp FROM fts_shards WHERE collection = :c"), {"c": coll.name})
            done = {r[0]: r[1] for r in rows}
        changed = 0
        for shard in m.shards:
            st = coll.shard_path(shard).stat()
            # a new tombstone re-ingests; so does a new analysis version
            stamp = f"{ANALYSIS}:{st.st_mtime_ns}:{st.st_size}:{len(shard.deleted)}"
            if done.get(shard.file) == stamp:
                continue
            names = pq.read_schema(coll.shard_path(shard)).names
            cols = [c for c in ("id", "caption", "text", "metadata", "ocr_text") if c in names]
            recs = pq.read_table(coll.shard_path(shard), columns=cols).to_pylist()
            with self.engine.begin() as c:
                self._ensure(c, coll.name)
                bodies = [
                    (int(r["id"]), analyse(body_of(r)), analyse(r.get("ocr_text")))
                    for r in recs
                    if not shard.is_deleted(int(r["id"]))
                ]
                self._replace_rows(c, coll.name, shard.min_id, shard.max_id, [x for x in bodies if x[1] or x[2]])
                c.execute(
                    text("DELETE FROM fts_shards WHERE collection = :c AND shard = :s"),
                    {"c": coll.name, "s": shard.file},
                )
                c.execute(
                    text("INSERT INTO fts_shards (collection, shard, stamp) VALUES (:c, :s, :t)"),
                    {"c": coll.name, "s": shard.file, "t": stamp},
                )
            changed += 1
        return changed

    def search(self, coll: Collection, query: str, k: int, target: str = "all") -> list[tuple[int, float]]:
        """(record id, relevance) best first; relevance is larger-is-better. ``target``: ``all``
        (captions, text, metadata and OCR text), ``ocr`` (OCR text only) or ``captions`` (all but OCR)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("The keyword query is empty.")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"The keyword query is longer than {MAX_QUERY_CHARS} characters.")
        if target not in TARGETS:
            raise InvalidInputError(f"Unknown keyword target {target!r}: use one of {', '.join(TARGETS)}.")
        terms = query_terms(query)
        if not terms:
            return []
        self.sync(coll)
        with self.engine.begin() as c:
            if self.dialect == "sqlite":
                match = fts5_match(terms, {"all": None, "ocr": "ocr", "captions": "body"}[target])
                self._ensure(c, coll.name)
                t = self._fts(coll.name)
                rows = c.execute(
                    text(f"SELECT rowid, bm25({t}) AS s FROM {t} WHERE {t} MATCH :q ORDER BY s, rowid LIMIT :k"),
                    {"q": match, "k": k},
                ).all()
                return [(int(r[0]), -float(r[1])) for r in rows]  # bm25(): smaller is better
            col = {"all": "tsv", "ocr": "tsv_ocr", "captions": "tsv_body"}[target]
            params: dict[str, Any] = {"c": coll.name, "k": k}
            parts: list[str] = []
            for i, term in enumerate(terms):
                if term.prefix:  # a lone CJK character: the bigrams it starts (no stemming applies)
                    parts.append(f"to_tsquery('simple', :t{i})")
                    params[f"t{i}"] = f"{term.tokens[0]}:*"
                else:
                    parts.append(f"phraseto_tsquery('english', :t{i})")
                    params[f"t{i}"] = " ".join(term.tokens)
            tsq = " && ".join(parts)
            rows = c.execute(
                text(
                    f"SELECT record_id, ts_rank_cd({col}, x.q) AS s FROM {_PG_TABLE}, (SELECT {tsq} AS q) x"
                    f" WHERE collection = :c AND {col} @@ x.q ORDER BY s DESC, record_id LIMIT :k"
                ),
                params,
            ).all()
            return [(int(r[0]), float(r[1])) for r in rows]

    def drop(self, collection: str) -> None:
        with self.engine.begin() as c:
            if self.dialect == "sqlite":
                c.execute(text(f"DROP TABLE IF EXISTS {self._fts(collection)}"))
            else:
                c.execute(text(f"DELETE FROM {_PG_TABLE} WHERE collection = :c"), {"c": collection})
            c.execute(text("DELETE FROM fts_shards WHERE collection = :c"), {"c": collection})
