"""The ITM feature cache: fp16 vision tokens per record, memory-mapped per shard, with an LRU.

Chosen at index time (``--cache-itm-features``). Each committed shard gets an
``itmfeat-XXXXXXXX.npy`` file of shape [rows, tokens, width] (float16), written before the
manifest names the shard, so records and features commit together. Size per image:
tokens × width × 2 bytes (BLIP ViT-B/16 at 384 px: 577 × 768 × 2 ≈ 0.89 MB; ViT-L: 1.18 MB;
BLIP-2 ViT-g at 224 px: 257 × 1408 × 2 ≈ 0.72 MB).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from blipsearch.limits import ITM_CACHE_ITEMS
from storage.collection import Collection


class FeatureStore:
    def __init__(self, collection: Collection, max_items: int = ITM_CACHE_ITEMS) -> None:
        self.coll = collection
        self.max_items = max_items
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._maps: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.coll.manifest.itm_features is not None

    def _map(self, name: str) -> Any:
        if name not in self._maps:
            self._maps[name] = np.load(self.coll.root / name, mmap_mode="r", allow_pickle=False)
        return self._maps[name]

    def get(self, rid: int) -> np.ndarray | None:
        """[tokens, width] float16 tokens of record ``rid``, or None if it has none cached."""
        with self._lock:
            if rid in self._lru:
                self._lru.move_to_end(rid)
                self.hits += 1
                return self._lru[rid]
        found = self.coll.locate(rid)
        if found is None or found[0].features is None:
            return None
        shard, row = found
        tokens = np.array(self._map(str(shard.features))[row])  # copy out of the memory map
        with self._lock:
            self.misses += 1
            self._lru[rid] = tokens
            while len(self._lru) > self.max_items:
                self._lru.popitem(last=False)
        return tokens
