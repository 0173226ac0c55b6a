"""A cost budget shared by concurrent requests: admit work while the cost in flight fits,
refuse the rest at once with OverloadedError (HTTP 503 + Retry-After) instead of queueing it.

Used for ITM re-ranking, whose cost grows with the number of candidates
re-scored: ``take(cost)`` holds ``cost`` units while the work runs. A request is always
admitted when nothing else is in flight, so one request larger than the budget still runs,
alone. ``Retry-After`` is estimated from the observed seconds per unit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from blipsearch.errors import OverloadedError


class CostBudget:
    def __init__(self, capacity: int, name: str = "work", unit: str = "units") -> None:
        self.capacity = capacity
        self.name = name
        self.unit = unit
        self._used = 0
        self._lock = threading.Lock()
        self._seconds_per_unit = 0.0  # moving average of observed cost

    @property
    def in_flight(self) -> int:
        return self._used

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self._used * self._seconds_per_unit)))

    @contextmanager
    def take(self, cost: int) -> Iterator[None]:
        cost = max(int(cost), 0)
        with self._lock:
            if self._used and self._used + cost > self.capacity:
                raise OverloadedError(
                    f"The server is busy with {self.name} ({self._used} of {self.capacity} {self.unit} in flight, "
                    f"this request needs {cost}); retry shortly.",
                    retry_after=self.retry_after(),
                )
            self._used += cost
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            with self._lock:
                self._used -= cost
                if cost:
                    rate = elapsed / cost
                    old = self._seconds_per_unit
                    self._seconds_per_unit = rate if not old else 0.8 * old + 0.2 * rate
