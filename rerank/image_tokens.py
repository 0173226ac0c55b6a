"""Where ITM's image tokens come from.

* **Recompute** (default): decode the record's ``uri`` and run the vision encoder. No extra
  storage; costs one ViT forward per candidate (cheap on a GPU, ~the ITC indexing cost on CPU).
* **Feature cache** (``blipsearch index --cache-itm-features``): fp16 tokens stored per shard and
  memory-mapped, with an LRU of hot images (storage/features.py). No ViT at query time; costs
  ~0.9 MB per base-size image on disk.

Cached tokens are used when present; the rest are recomputed. Candidates whose image is gone
or unreadable are dropped with the reason.

Tokens always come from the ITM scorer's own vision encoder, with its own preprocessing: the
collection may have been embedded by another family (CLIP, SigLIP, ALIGN), in
which case the feature cache (the collection model's tokens) is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blipsearch.errors import ImageDecodeError
from blipsearch.limits import ITM_CACHE_ITEMS, MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from media.stored import READ_ERRORS, ImageLimits, StoredImages
from models.base import Embedder
from models.itm import ItmScorer
from rerank.base import RecordRead
from storage.collection import Collection
from storage.features import FeatureStore

log = logging.getLogger(__name__)


class ImageTokenSource:
    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        scorer: ItmScorer,
        *,
        max_pixels: int = MAX_IMAGE_PIXELS,
        max_bytes: int = MAX_FILE_BYTES,
        cache_items: int = ITM_CACHE_ITEMS,
    ) -> None:
        self.coll = collection
        self.embedder = embedder
        self.scorer = scorer
        self.features = FeatureStore(collection, cache_items)
        # the cache holds the collection model's tokens: only the same checkpoint's ITM may use them
        self.use_cache = self.features.enabled and scorer.embedder.fingerprint == collection.manifest.model_fingerprint
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def tokens(
        self, ids: Sequence[int], read: RecordRead | None = None
    ) -> tuple[list[int], torch.Tensor | None, list[dict[str, Any]]]:
        """(ids kept, their tokens [n, T, D], dropped [{"id", "reason"}]) in the order of ``ids``;
        ``read``: the query's record reader (default: the collection's), asked only for the
        records whose tokens are not cached."""
        got: dict[int, Any] = {}
        dropped: list[dict[str, Any]] = []
        missing: list[int] = []
        if self.use_cache:
            for rid in ids:
                cached = self.features.get(int(rid))
                if cached is None:
                    missing.append(int(rid))
                else:
                    got[int(rid)] = torch.from_numpy(cached)
        else:
            missing = [int(r) for r in ids]
        if missing:
            records = (read or self.coll.get_records)(missing)
            reader = StoredImages(self.coll.uri_aliases(), ImageLimits(self.max_pixels, self.max_bytes))
            pixels, pix_ids = [], []
            for rid in missing:
                rec = records.get(rid)
                try:
                    if rec is None:
                        raise ImageDecodeError("record not found (deleted?)")
                    img = reader.image(rec["uri"], rec.get("sha256"))
                    pixels.append(self.scorer.preprocess([img])[0])
                    pix_ids.append(rid)
                except READ_ERRORS as exc:
                    log.warning("re-rank: dropping candidate %s: %s", rid, exc)
                    dropped.append({"id": rid, "reason": str(exc)})
            for i in range(0, len(pixels), self.scorer.batch_size):
                chunk = self.scorer.vision_tokens(np.stack(pixels[i : i + self.scorer.batch_size]))
                for j, rid in enumerate(pix_ids[i : i + self.scorer.batch_size]):
                    got[rid] = chunk[j]
        kept = [int(r) for r in ids if int(r) in got]
        if not kept:
            return [], None, dropped
        device = next(iter(got.values())).device
        return kept, torch.stack([got[r].to(device) for r in kept]), dropped
