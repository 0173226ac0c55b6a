"""Places of GPS positions, offline: the nearest populated place (GeoNames' cities of 1,000+
people, shipped inside the ``reverse-geocode`` package: nothing is ever downloaded) gives
``country_code``, ``country``, ``region`` (first-level division: state, province...) and
``city``.

The data (~150k places) loads lazily, once per process, on the first lookup (a few seconds).
A position farther than ``MAX_PLACE_KM`` from every known place (open sea, ice) gets no place.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

MAX_PLACE_KM = 200.0
EARTH_RADIUS_KM = 6371.0088
_lock = threading.Lock()
_module: Any = None


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def fold(text: str) -> str:
    """``text`` without case or accents (``Île-de-France`` -> ``ile-de-france``), for matching names."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def available() -> bool:
    try:
        import reverse_geocode  # noqa: F401
    except ImportError:
        return False
    return True


def _geocoder() -> Any:
    global _module
    with _lock:
        if _module is None:
            import reverse_geocode

            reverse_geocode.search([(0.0, 0.0)])  # loads the shipped data once, under the lock
            _module = reverse_geocode
        return _module


def places(positions: Sequence[tuple[float, float] | None]) -> list[dict[str, str | None] | None]:
    """The place of each (lat, lon) (None where the position is None or too far from any place)."""
    want = [(i, p) for i, p in enumerate(positions) if p is not None]
    out: list[dict[str, str | None] | None] = [None] * len(positions)
    if not want:
        return out
    found = _geocoder().search([p for _, p in want])
    for (i, (lat, lon)), hit in zip(want, found, strict=True):
        if haversine_km(lat, lon, hit["latitude"], hit["longitude"]) > MAX_PLACE_KM:
            continue
        out[i] = {
            "country_code": hit.get("country_code") or None,
            "country": hit.get("country") or None,
            "region": hit.get("state") or None,
            "city": hit.get("city") or None,
        }
    return out


def place_columns(lats: Sequence[float | None], lons: Sequence[float | None]) -> dict[str, list[str | None]]:
    """The place columns (``country_code``, ``country``, ``region``, ``city``) of records with
    these GPS positions; all None where the ``places`` extra is not installed (logged once)."""
    names = ("country_code", "country", "region", "city")
    positions = [(a, b) if a is not None and b is not None else None for a, b in zip(lats, lons, strict=True)]
    if any(positions) and not available():
        _warn_missing()
        positions = [None] * len(positions)
    found = places(positions)
    return {k: [p[k] if p else None for p in found] for k in names}


_warned = False


def _warn_missing() -> None:
    global _warned
    if not _warned:
        _warned = True
        import logging

        logging.getLogger(__name__).warning(
            "GPS positions get no place names: pip install 'blipsearch[places]' (the offline reverse-geocode data)"
        )
