"""Text collections: index a CSV, JSONL or Parquet file of ``id``, ``text`` (+ metadata columns).

Each text gets an ITC text embedding in its own collection and FAISS index; image→text search
runs against it. Re-running on the same file adds nothing (dedup by sha256 of id + text).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from tqdm import tqdm

from blipsearch.errors import InvalidInputError
from models.base import Embedder
from search import index_store
from storage.collection import Collection

MAX_TEXT_CHARS = 10_000


def read_text_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
        elif suffix in (".jsonl", ".ndjson", ".json"):
            table = pajson.read_json(path)
        elif suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:
            raise InvalidInputError(f"{path}: unsupported text file type {suffix!r}; use .csv, .jsonl or .parquet.")
    except FileNotFoundError:
        raise InvalidInputError(f"Text file {str(path)!r} does not exist.") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path}: cannot parse as {suffix[1:]}: {exc}") from exc
    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) {sorted(missing)}; found {table.column_names}.")
    return table


def text_rows(table: pa.Table) -> tuple[dict[str, list[Any]], list[dict[str, str]]]:
    """Columns for Collection.append, and failures for rows with no usable text."""
    extra = [c for c in table.column_names if c not in ("id", "text")]
    rows: dict[str, list[Any]] = {"external_id": [], "text": [], "metadata": [], "sha256": []}
    failures = []
    for rec in table.to_pylist():
        ext, text = rec.get("id"), rec.get("text")
        if ext is None or not isinstance(text, str) or not text.strip():
            failures.append({"path": f"id={ext}", "error": "empty or missing text"})
            continue
        if len(text) > MAX_TEXT_CHARS:
            failures.append({"path": f"id={ext}", "error": f"text longer than {MAX_TEXT_CHARS} characters"})
            continue
        rows["external_id"].append(str(ext))
        rows["text"].append(text)
        meta = {c: rec[c] for c in extra if rec.get(c) is not None}
        rows["metadata"].append(json.dumps(meta, default=str) if meta else None)
        rows["sha256"].append(hashlib.sha256(f"{ext}\0{text}".encode()).hexdigest())
    return rows, failures


def index_texts(
    data_dir: Path,
    path: Path,
    collection: str,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    progress: bool = True,
    policy: index_store.IndexPolicy | None = None,
) -> dict[str, Any]:
    rows, failures = text_rows(read_text_table(path))
    coll = Collection.create(data_dir, collection, model=embedder.describe(), kind="texts")
    known = coll.known_hashes()
    fresh = [i for i, h in enumerate(rows["sha256"]) if h not in known]
    skipped = len(rows["sha256"]) - len(fresh)
    added = 0
    with tqdm(total=len(fresh), unit="text", desc=f"index-texts {collection}", disable=not progress or None) as bar:
        for start in range(0, len(fresh), batch_size):
            idx = fresh[start : start + batch_size]
            emb = embedder.embed_texts([rows["text"][i] for i in idx])
            ids, dropped = coll.append({k: [v[i] for i in idx] for k, v in rows.items()}, emb)
            added += len(ids)
            skipped += dropped
            bar.update(len(idx))
    index_store.refresh(coll, policy=policy)
    return {
        "collection": collection,
        "added": added,
        "skipped_duplicates": skipped,
        "failed": len(failures),
        "failures": failures,
        "total": added + skipped + len(failures),
        "collection_size": coll.reload().count,
    }
