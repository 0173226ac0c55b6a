"""Stage timing: each stage accumulates busy seconds and items, so a job shows its bottleneck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StageStats:
    seconds: float = 0.0
    items: int = 0
    calls: int = 0


@dataclass
class QueueStats:
    samples: int = 0
    total: int = 0
    max: int = 0
    capacity: int = 0


@dataclass
class StageTimer:
    stages: dict[str, StageStats] = field(default_factory=dict)
    queues: dict[str, QueueStats] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def time(self, stage: str, items: int = 1) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                st = self.stages.setdefault(stage, StageStats())
                st.seconds += dt
                st.items += items
                st.calls += 1

    def sample_queue(self, name: str, depth: int, capacity: int) -> None:
        """Record a queue's depth. A full queue before a stage means that stage is the
        bottleneck; an empty one means the stages before it are."""
        with self._lock:
            q = self.queues.setdefault(name, QueueStats(capacity=capacity))
            q.samples += 1
            q.total += depth
            q.max = max(q.max, depth)

    def report(self) -> dict[str, object]:
        wall = time.perf_counter() - self.started
        out: dict[str, object] = {"wall_s": round(wall, 4)}
        for name, st in self.stages.items():
            out[name] = {
                "busy_s": round(st.seconds, 4),
                "items": st.items,
                "items_per_s": round(st.items / st.seconds, 2) if st.seconds > 0 else None,
            }
        if self.queues:
            out["queues"] = {
                name: {"mean": round(q.total / q.samples, 2), "max": q.max, "capacity": q.capacity}
                for name, q in self.queues.items()
                if q.samples
            }
        return out
