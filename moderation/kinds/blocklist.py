"""Blocklist: the nearest image of a blocklist collection by ITC image-image cosine (max over
query vectors for BLIP-2, and over the image and its mirror image unless ``mirror: false``), a
match at ``threshold`` or more. Re-encodes, resizes and small crops survive the model's own
resize; the mirror query makes horizontal flips match as well."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import Embedder
from moderation.kinds.itm import ms
from moderation.policy import Blocklist

if TYPE_CHECKING:
    from PIL import Image

    from search.engine import SearchEngine


class BlocklistCheck:
    def __init__(self, rule: Blocklist, engine: SearchEngine, embedder: Embedder) -> None:
        engine.coll.check_model(embedder.fingerprint, embedder.model_id)
        self.rule, self.engine, self.embedder = rule, engine, embedder

    def mirrored(self, images: list[Image.Image]) -> np.ndarray | None:
        """The mirror images' embeddings (one more forward), when the rule asks for them."""
        if not self.rule.mirror:
            return None
        from PIL import ImageOps

        return self.embedder.embed_images([ImageOps.mirror(im) for im in images])

    def check(
        self, vecs: np.ndarray, mirror_emb: np.ndarray | None, timing: dict[str, float]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        t0 = time.perf_counter()
        queries = vecs if mirror_emb is None else np.concatenate([vecs, mirror_emb.reshape(vecs.shape)])
        rule = self.rule
        self.engine.sync()
        ids, scores = self.engine.index.search(queries, 1)
        if len(ids) == 0:
            out = {"matched": False, "collection": rule.collection, "id": None, "score": None,
                   "threshold": rule.threshold}  # fmt: skip
        else:
            out = {"matched": bool(scores[0] >= rule.threshold), "collection": rule.collection, "id": int(ids[0]),
                   "score": float(scores[0]), "threshold": rule.threshold}  # fmt: skip
        timing["blocklist"] = ms(t0)
        return out, ([{"check": "blocklist", **out, "action": rule.action}] if out["matched"] else [])
