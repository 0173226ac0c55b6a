"""One keyed, lock-guarded cache of the loaded models a server holds, and what is built on them.

Keys are tuples ``(kind, model id, *options)``: ``("embedder", "Salesforce/blip-itm-base-coco",
"cpu", "float32", "fast")``, ``("itm", ...)``, ``("captioner", ...)``, ``("moderator", policy)``,
and the things made from models (``("engine", collection)``, ``("batcher", kind, model)``,
``("reranker", collection, model)``).

* One loader per key: concurrent requests for a model that is loading wait for it and reuse
  it; different keys load in parallel (the cache's own lock is never held while loading).
* ``stamp``: a value that says whether an entry is still current (a policy file's mtime, a
  collection's creation time): a different stamp replaces the entry.
* ``needs``: the keys an entry was built from (an engine needs its embedder). Using an entry
  uses what it needs; evicting a key evicts what was built from it (so the memory is freed).
* Idle time-out (``idle_s``, ``BLIPSEARCH_MODEL_IDLE_S``; default off): entries that may expire
  (the models) are evicted after that long unused, by a daemon reaper thread; the next request
  loads them again. Users of photo servers ask for low idle RAM.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
Key = tuple[Hashable, ...]
T = TypeVar("T")


@dataclass
class _Entry:
    value: Any
    stamp: Hashable
    needs: tuple[Key, ...]
    expires: bool
    used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelCache:
    """The cache (module docstring). ``on_evict(key, value)`` runs for each evicted entry
    (closes a micro-batcher's thread); ``clock`` is injectable for tests."""

    def __init__(
        self,
        idle_s: float | None = None,
        *,
        on_evict: Callable[[Key, Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s if idle_s and idle_s > 0 else None
        self.on_evict = on_evict
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._loading: dict[Key, threading.Lock] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # -- reading and loading ------------------------------------------------------------
    def get(
        self,
        key: Key,
        load: Callable[[], T],
        *,
        stamp: Hashable = None,
        needs: tuple[Key, ...] = (),
        expires: bool = True,
    ) -> T:
        """The entry under ``key`` (current for ``stamp``), loaded by ``load()`` once if absent."""
        hit = self._hit(key, stamp)
        if hit is not None:
            return hit[0]
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one loader per key; the others wait here and reuse its result
            hit = self._hit(key, stamp)
            if hit is not None:
                return hit[0]
            value = load()
            self.put(key, value, stamp=stamp, needs=needs, expires=expires)
            return value

    def peek(self, key: Key) -> tuple[Any, Hashable] | None:
        """(value, stamp) under ``key`` without loading, marking it used; None when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._touch(entry)
            return entry.value, entry.stamp

    def put(
        self, key: Key, value: Any, *, stamp: Hashable = None, needs: tuple[Key, ...] = (), expires: bool = True
    ) -> None:
        with self._lock:
            old = self._entries.get(key)
            gone: list[tuple[Key, Any]] = []
            if old is not None and old.value is not value:  # replaced: so is what was built from it
                gone = self._cascade([key])
            self._entries[key] = _Entry(value, stamp, tuple(needs), expires, self.clock())
        self._evicted(gone)

    def _hit(self, key: Key, stamp: Hashable) -> tuple[Any] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.stamp != stamp:
                return None
            self._touch(entry)
            return (entry.value,)

    def _touch(self, entry: _Entry) -> None:
        """Mark ``entry`` and, transitively, what it needs used (caller holds the lock)."""
        now = self.clock()
        todo, seen = [entry], set()
        while todo:
            e = todo.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            e.used = now
            todo.extend(dep for need in e.needs if (dep := self._entries.get(need)) is not None)

    def touch(self, key: Key) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._touch(entry)

    # -- listing ------------------------------------------------------------------------
    def keys(self, kind: str | None = None) -> list[Key]:
        with self._lock:
            return [k for k in self._entries if kind is None or k[0] == kind]

    def items(self, kind: str) -> list[tuple[Key, Any]]:
        with self._lock:
            return [(k, e.value) for k, e in self._entries.items() if k[0] == kind]

    def view(self, kind: str, *options: Hashable) -> MutableMapping[Any, Any]:
        """The entries of ``kind`` (and ``options``) as a mapping by model id."""
        return _View(self, kind, tuple(options))

    # -- eviction -----------------------------------------------------------------------
    def pop(self, key: Key) -> Any | None:
        """Evict ``key`` and everything built from it; returns its value (None if absent)."""
        with self._lock:
            gone = self._cascade([key])
        value = next((v for k, v in gone if k == key), None)
        self._evicted(gone)
        return value

    def evict_idle(self, now: float | None = None) -> list[Key]:
        """Evict the entries that may expire and were unused for ``idle_s`` (and what needs them)."""
        if self.idle_s is None:
            return []
        now = self.clock() if now is None else now
        with self._lock:
            idle = [k for k, e in self._entries.items() if e.expires and now - e.used >= self.idle_s]
            gone = self._cascade(idle) if idle else []
        keys = [k for k, _ in gone]
        if keys:
            log.info("freed idle models: %s", ", ".join("/".join(map(str, k)) for k in keys))
        self._evicted(gone)
        return keys

    def _cascade(self, keys: list[Key]) -> list[tuple[Key, Any]]:
        """Remove ``keys`` and, transitively, entries that need them (caller holds the lock)."""
        out: list[tuple[Key, Any]] = []
        todo = list(keys)
        while todo:
            key = todo.pop()
            entry = self._entries.pop(key, None)
            if entry is None:
                continue
            out.append((key, entry.value))
            todo.extend(k for k, e in self._entries.items() if key in e.needs)
        return out

    def _evicted(self, gone: list[tuple[Key, Any]]) -> None:
        """Run the hook on evicted entries and drop this cache's last references to them."""
        n = len(gone)
        while gone:
            key, value = gone.pop()
            if self.on_evict is not None:
                try:
                    self.on_evict(key, value)
                except Exception:  # an eviction hook never fails the request that triggered it
                    log.exception("evicting %s", key)
            del value
        if n:
            _free_memory()

    def start_reaper(self) -> None:
        """Evict idle entries in the background (no-op without an idle time-out)."""
        if self.idle_s is None or self._reaper is not None:
            return
        interval = max(0.05, min(self.idle_s / 4, 30.0))

        def reap() -> None:
            while not self._stop.wait(interval):
                self.evict_idle()

        self._reaper = threading.Thread(target=reap, name="model-idle-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper and evict everything."""
        self._stop.set()
        with self._lock:
            gone = self._cascade(list(self._entries))
        self._evicted(gone)


def _free_memory() -> None:
    """Return freed model memory: a GC pass, and CUDA's cached blocks when torch uses CUDA."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class _View(MutableMapping[Any, Any]):
    """Entries ``(kind, id, *options)`` as a mapping ``id -> value``."""

    def __init__(self, cache: ModelCache, kind: str, options: tuple[Hashable, ...]) -> None:
        self.cache, self.kind, self.options = cache, kind, options

    def _key(self, model: Any) -> Key:
        return (self.kind, model, *self.options)

    def __getitem__(self, model: Any) -> Any:
        hit = self.cache.peek(self._key(model))
        if hit is None:
            raise KeyError(model)
        return hit[0]

    def __setitem__(self, model: Any, value: Any) -> None:
        self.cache.put(self._key(model), value)

    def __delitem__(self, model: Any) -> None:
        if self.cache.pop(self._key(model)) is None:
            raise KeyError(model)

    def __iter__(self) -> Iterator[Any]:
        return iter([k[1] for k in self.cache.keys(self.kind) if k[2:] == self.options])

    def __len__(self) -> int:
        return len(list(iter(self)))
