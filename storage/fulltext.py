"""Keyword search over captions and text metadata, in the catalog database.

SQLite (the default catalog): one FTS5 table per collection, ``rowid`` = record id, with the
``porter unicode61`` tokenizer (case-insensitive, diacritic-folding, English stemming), ranked
by BM25. PostgreSQL: a
``tsvector`` column (``english`` configuration, stemming) with a GIN index, ranked by
``ts_rank_cd``. Either way it is derived data: ``sync`` re-ingests any shard whose file changed
(new records, new captions), so a crash between a record commit and the text index loses
nothing.

Query syntax, both engines: words must all match (stemmed); ``"double quotes"`` match a phrase.
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

MAX_QUERY_CHARS = 500
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


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
    """User query → safe FTS5 MATCH expression (every token quoted; phrases kept)."""
    terms = []
    for phrase, word in _TOKEN.findall(q):
        value = (phrase or word).replace('"', " ").strip()
        value = re.sub(r"[^\w\s']", " ", value).strip()
        if value:
            terms.append(f'"{value}"')
    return " ".join(terms)


class KeywordIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        with engine.begin() as c:
            if self.dialect == "sqlite":
                pass  # per-collection tables, created on first sync
            elif self.dialect == "postgresql":
                c.execute(
                    text(
                        "CREATE TABLE IF NOT EXISTS record_text (collection VARCHAR(64) NOT NULL,"
                        " record_id BIGINT NOT NULL,"
                        " body TEXT NOT NULL, tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,"
                        " PRIMARY KEY (collection, record_id))"
                    )
                )
                c.execute(text("CREATE INDEX IF NOT EXISTS record_text_tsv ON record_text USING GIN (tsv)"))
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
        safe = re.sub(r"[^A-Za-z0-9_]", "_", collection)
        return f"fts_{safe}_{zlib.crc32(collection.encode()):08x}"

    def _ensure(self, c: Any, collection: str) -> None:
        if self.dialect == "sqlite":
            c.execute(
                text(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._fts(collection)} USING fts5("
                    "body, tokenize='porter unicode61')"
                )
            )

    def _replace_rows(self, c: Any, collection: str, lo: int, hi: int, rows: list[tuple[int, str]]) -> None:
        if self.dialect == "sqlite":
            t = self._fts(collection)
            c.execute(text(f"DELETE FROM {t} WHERE rowid BETWEEN :lo AND :hi"), {"lo": lo, "hi": hi})
            if rows:
                c.execute(text(f"INSERT INTO {t} (rowid, body) VALUES (:r, :b)"), [{"r": r, "b": b} for r, b in rows])
        else:
            c.execute(
                text("DELETE FROM record_text WHERE collection = :c AND record_id BETWEEN :lo AND :hi"),
                {"c": collection, "lo": lo, "hi": hi},
            )
            if rows:
                c.execute(
                    text("INSERT INTO record_text (collection, record_id, body) VALUES (:c, :r, :b)"),
                    [{"c": collection, "r": r, "b": b} for r, b in rows],
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
            stamp = f"{st.st_mtime_ns}:{st.st_size}:{len(shard.deleted)}"  # a new tombstone re-ingests
            if done.get(shard.file) == stamp:
                continue
            cols = [
                c for c in ("id", "caption", "text", "metadata") if c in pq.read_schema(coll.shard_path(shard)).names
            ]
            recs = pq.read_table(coll.shard_path(shard), columns=cols).to_pylist()
            with self.engine.begin() as c:
                self._ensure(c, coll.name)
                bodies = [(int(r["id"]), body_of(r)) for r in recs if not shard.is_deleted(int(r["id"]))]
                self._replace_rows(c, coll.name, shard.min_id, shard.max_id, [(i, b) for i, b in bodies if b])
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

    def search(self, coll: Collection, query: str, k: int) -> list[tuple[int, float]]:
        """(record id, relevance) best first; relevance is larger-is-better."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("The keyword query is empty.")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"The keyword query is longer than {MAX_QUERY_CHARS} characters.")
        self.sync(coll)
        with self.engine.begin() as c:
            if self.dialect == "sqlite":
                match = fts5_query(query)
                if not match:
                    return []
                self._ensure(c, coll.name)
                t = self._fts(coll.name)
                rows = c.execute(
                    text(f"SELECT rowid, bm25({t}) AS s FROM {t} WHERE {t} MATCH :q ORDER BY s, rowid LIMIT :k"),
                    {"q": match, "k": k},
                ).all()
                return [(int(r[0]), -float(r[1])) for r in rows]  # bm25(): smaller is better
            rows = c.execute(
                text(
                    "SELECT record_id, ts_rank_cd(tsv, q) AS s FROM record_text, websearch_to_tsquery('english', :q) q"
                    " WHERE collection = :c AND tsv @@ q ORDER BY s DESC, record_id LIMIT :k"
                ),
                {"q": query, "c": coll.name, "k": k},
            ).all()
            return [(int(r[0]), float(r[1])) for r in rows]

    def drop(self, collection: str) -> None:
        with self.engine.begin() as c:
            if self.dialect == "sqlite":
                c.execute(text(f"DROP TABLE IF EXISTS {self._fts(collection)}"))
            else:
                c.execute(text("DELETE FROM record_text WHERE collection = :c"), {"c": collection})
            c.execute(text("DELETE FROM fts_shards WHERE collection = :c"), {"c": collection})
