"""Write a shard that copies records into another version of a collection (``reembed``).

The copy keeps every record's id, uri, sha256, metadata and caption; only ``model_id`` and
the embedding (and the cached ITM features) are new. The shard keeps its source's file name
and id range, so the keyword index, moderation results and clients' ids stay valid across
the swap. One manifest save commits the shard and marks its source shard done, so a killed
re-embed resumes after its last committed shard.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from blipsearch.errors import ConflictError
from storage.atomic import atomic_write_with
from storage.collection import Collection
from storage.lock import writer_lock
from storage.manifest import MANIFEST_NAME, ShardInfo
from storage.reading import _save_npy
from storage.schema import embeddings_to_arrow, record_schema


def commit_copied_shard(
    coll: Collection, source: ShardInfo, table: pa.Table, embeddings: np.ndarray, features: np.ndarray | None
) -> ShardInfo | None:
    """Commit ``table`` (the source shard's surviving rows, ids kept) with new ``embeddings``.
    Returns the new ShardInfo, or None when no row survived (the source is still marked done)."""
    m = coll.manifest
    n = table.num_rows
    if embeddings.shape[0] != n:
        raise ValueError(f"{n} rows but {embeddings.shape[0]} embeddings")
    schema = record_schema(m)
    generated: dict[str, Any] = {
        "model_id": pa.array([m.model_id] * n, pa.string()),
        "embedding": embeddings_to_arrow(embeddings, m.dim, m.vectors_per_item),
    }
    arrays = []
    for f in schema:
        if f.name in generated:
            arrays.append(generated[f.name])
        elif f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:  # a column the source shard predates
            arrays.append(pa.nulls(n, f.type))
    out = pa.Table.from_arrays(arrays, schema=schema)
    with writer_lock(coll.lock_path):
        m = coll.reload_for_write()
        state = dict(m.reembed or {})
        if source.file in state.get("done", []) or any(s.file == source.file for s in m.shards):
            raise ConflictError(
                f"{source.file} of {coll.name!r} was already copied into this version by another re-embed; "
                "nothing was written twice. Re-run reembed once the other one has finished."
            )
        info = None
        if n:
            ids = out.column("id").to_numpy()
            feature_name = None
            if m.itm_features is not None and features is not None:
                feature_name = source.file.replace("shard-", "itmfeat-").replace(".parquet", ".npy")
                feats = np.ascontiguousarray(features, dtype=np.float16)
                atomic_write_with(coll.root / feature_name, lambda p: _save_npy(p, feats))
            atomic_write_with(coll.root / source.file, lambda p: pq.write_table(out, p, compression="zstd"))
            info = ShardInfo(
                file=source.file, rows=n, min_id=int(ids.min()), max_id=int(ids.max()), features=feature_name
            )
            m.shards.append(info)
            m.shards.sort(key=lambda s: s.min_id)
        state["done"] = [*state.get("done", []), source.file]
        m.reembed = state
        m.save(coll.root / MANIFEST_NAME)
    return info
