"""Capture metadata of a photo from its EXIF (and XMP where EXIF lacks a value): when it was
taken, with which camera and lens, where.

``capture_metadata`` returns the typed record columns (``CAPTURE_FIELDS``) and notes on what
was dropped. Nothing here fails an image: an unreadable or absurd value (year 0, a latitude
over 90, NaN, a 0/0 rational, garbage bytes) is left out with a note, and text tags are cut to
``MAX_TEXT`` characters.

``taken_at``: DateTimeOriginal (else DateTimeDigitized, else XMP's exif:DateTimeOriginal /
xmp:CreateDate / photoshop:DateCreated), to the second. With OffsetTimeOriginal (or a zone in
the XMP value) it is the UTC instant and ``taken_at_local`` is false; without one it is the
camera's wall-clock time stored as if it were UTC, and ``taken_at_local`` is true.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image

CAPTURE_FIELDS = ("taken_at", "taken_at_local", "camera_make", "camera_model", "lens", "gps_lat", "gps_lon", "gps_alt")
MAX_TEXT = 128
EARLIEST_YEAR = 1826  # the first photograph; anything before is a clock that was never set
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL = 271, 272
DATETIME_ORIGINAL, DATETIME_DIGITIZED, OFFSET_ORIGINAL, OFFSET_DIGITIZED = 36867, 36868, 36881, 36882
LENS_MODEL = 42036
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_XMP_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


class Notes(list[str]):
    def drop(self, field: str, value: Any, why: str) -> None:
        self.append(f"{field} {str(value)[:40]!r} dropped: {why}")


def _text(value: Any, field: str, notes: Notes) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        notes.drop(field, value, "not text")
        return None
    value = value.replace("\x00", "").strip()
    if not value:
        return None
    if not value.isprintable():
        value = "".join(c for c in value if c.isprintable()).strip()
        if not value:
            notes.drop(field, "", "no printable text")
            return None
    if len(value) > MAX_TEXT:
        notes.append(f"{field} cut to {MAX_TEXT} characters")
        value = value[:MAX_TEXT]
    return value


def _offset(value: Any) -> timezone | None:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    m = _OFFSET.match(text.strip().replace("\x00", "")) if isinstance(text, str) else None
    if not m:
        return None
    minutes = int(m[2]) * 60 + int(m[3])
    if minutes > 14 * 60 or int(m[3]) >= 60:
        return None
    return timezone((-1 if m[1] == "-" else 1) * timedelta(minutes=minutes))


def _valid_date(parts: tuple[int, ...], field: str, raw: Any, notes: Notes) -> datetime | None:
    try:
        dt = datetime(*parts[:6])  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        notes.drop(field, raw, "not a real date")
        return None
    if not EARLIEST_YEAR <= dt.year <= datetime.now(timezone.utc).year + 1:
        notes.drop(field, raw, f"year {dt.year} is out of range")
        return None
    return dt


def _taken_at(date: Any, offset: Any, field: str, notes: Notes) -> tuple[datetime, bool] | None:
    text = date.decode("ascii", "replace") if isinstance(date, bytes) else date
    if not isinstance(text, str):
        return None
    text = text.replace("\x00", "").strip()
    if not text or set(text) <= set("0: -"):  # "0000:00:00 00:00:00": a camera without a clock
        if text:
            notes.drop(field, text, "no date set")
        return None
    m = _EXIF_DATE.match(text)
    if not m:
        notes.drop(field, text, "not an EXIF date")
        return None
    dt = _valid_date(tuple(int(g) for g in m.groups()), field, text, notes)
    if dt is None:
        return None
    tz = _offset(offset) if offset is not None else None
    if offset is not None and tz is None:
        notes.drop("OffsetTimeOriginal", offset, "not a UTC offset")
    return _as_stored(dt, tz)


def _as_stored(dt: datetime, tz: timezone | None) -> tuple[datetime, bool]:
    if tz is None:  # wall-clock time of unknown zone: kept as is, marked local
        return dt.replace(tzinfo=timezone.utc), True
    return dt.replace(tzinfo=tz).astimezone(timezone.utc), False


def _rational(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:  # (numerator, denominator)
        return v[0] / v[1] if v[1] else math.nan
    return float(v)


def _coordinate(value: Any, ref: Any, field: str, limit: float, notes: Notes) -> float | None:
    if value is None:
        return None
    try:
        parts = [_rational(x) for x in (value if isinstance(value, tuple | list) else (value,))]
        deg = parts[0] + (parts[1] / 60 if len(parts) > 1 else 0) + (parts[2] / 3600 if len(parts) > 2 else 0)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        notes.drop(field, value, "not a number")
        return None
    if not math.isfinite(deg) or not 0 <= deg <= limit:
        notes.drop(field, value, f"not within 0..{limit:g} degrees")
        return None
    ref_s = (ref.decode("ascii", "replace") if isinstance(ref, bytes) else str(ref or "")).strip("\x00 ").upper()
    return -deg if ref_s in ("S", "W") else deg


def _altitude(value: Any, ref: Any, notes: Notes) -> float | None:
    if value is None:
        return None
    try:
        alt = _rational(value)
    except (TypeError, ValueError, ZeroDivisionError):
        notes.drop("GPSAltitude", value, "not a number")
        return None
    if not math.isfinite(alt) or not -12_000 <= alt <= 100_000:
        notes.drop("GPSAltitude", value, "not a plausible altitude")
        return None
    below = ref in (1, b"\x01", "\x01") or (isinstance(ref, bytes | str) and ref[:1] in (b"\x01", "\x01", "1", b"1"))
    return -alt if below else alt


def _ifd(exif: Image.Exif, tag: int, notes: Notes) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:  # noqa: BLE001 - a broken sub-IFD: its values are missing, the rest stays
        notes.append(f"EXIF sub-IFD {tag:#x} unreadable")
        return {}


def capture_metadata(exif: Image.Exif | None, xmp: bytes | None = None) -> tuple[dict[str, Any], list[str]]:
    """The ``CAPTURE_FIELDS`` found in ``exif`` / ``xmp`` (absent ones are None), and notes."""
    notes = Notes()
    out: dict[str, Any] = dict.fromkeys(CAPTURE_FIELDS)
    base: dict[int, Any] = {}
    sub: dict[int, Any] = {}
    gps: dict[int, Any] = {}
    if exif is not None:
        try:
            base = dict(exif)
        except Exception:  # noqa: BLE001
            notes.append("EXIF unreadable")
        sub = _ifd(exif, EXIF_IFD, notes) if EXIF_IFD in base else {}
        gps = _ifd(exif, GPS_IFD, notes) if GPS_IFD in base else {}
    for tag, offset_tag in ((DATETIME_ORIGINAL, OFFSET_ORIGINAL), (DATETIME_DIGITIZED, OFFSET_DIGITIZED)):
        date = sub.get(tag, base.get(tag))  # DNG writers may keep it in IFD0
        taken = _taken_at(date, sub.get(offset_tag, base.get(offset_tag)), "DateTimeOriginal", notes) if date else None
        if taken:
            out["taken_at"], out["taken_at_local"] = taken
            break
    out["camera_make"] = _text(base.get(MAKE), "Make", notes)
    out["camera_model"] = _text(base.get(MODEL), "Model", notes)
    out["lens"] = _text(sub.get(LENS_MODEL), "LensModel", notes)
    lat = _coordinate(gps.get(2), gps.get(1), "GPSLatitude", 90, notes)
    lon = _coordinate(gps.get(4), gps.get(3), "GPSLongitude", 180, notes)
    if (lat is None) != (lon is None):
        notes.append("GPS position dropped: latitude or longitude missing")
    elif lat is not None:
        out["gps_lat"], out["gps_lon"] = lat, lon
        out["gps_alt"] = _altitude(gps.get(6), gps.get(5), notes)
    if xmp:
        _from_xmp(xmp, out, notes)
    return out, list(notes)


def _xmp_value(xmp: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        m = re.search(rf'{name}\s*=\s*"([^"]{{0,256}})"', xmp) or re.search(rf"<{name}>([^<]{{0,256}})</{name}>", xmp)
        if m:
            return m[1].strip()
    return None


def _xmp_gps(text: str | None, limit: float, field: str, notes: Notes) -> float | None:
    """XMP's ``DD,MM.mmmK`` (or ``DD,MM,SSK``) coordinate."""
    if not text:
        return None
    m = re.match(r"^(\d{1,3}),(\d{1,2}(?:\.\d+)?)(?:,(\d{1,2}(?:\.\d+)?))?([NSEW])$", text.strip().upper())
    if not m:
        notes.drop(field, text, "not an XMP coordinate")
        return None
    deg = int(m[1]) + float(m[2]) / 60 + (float(m[3]) / 3600 if m[3] else 0)
    if deg > limit:
        notes.drop(field, text, f"not within 0..{limit:g} degrees")
        return None
    return -deg if m[4] in "SW" else deg


def _from_xmp(packet: bytes, out: dict[str, Any], notes: Notes) -> None:
    """Fill what EXIF did not say from the XMP packet (read as text, bounded: no XML parser)."""
    xmp = packet[: 1 << 20].decode("utf-8", "replace")
    if out["taken_at"] is None:
        text = _xmp_value(xmp, ("exif:DateTimeOriginal", "xmp:CreateDate", "photoshop:DateCreated"))
        m = _XMP_DATE.match(text) if text else None
        if text and not m:
            notes.drop("xmp DateTimeOriginal", text, "not an ISO date")
        if m:
            parts = tuple(int(g) if g else 0 for g in m.groups()[:6])
            dt = _valid_date(parts, "xmp DateTimeOriginal", text, notes)
            if dt is not None:
                zone = m[7]
                tz = timezone.utc if zone == "Z" else (_offset(zone) if zone else None)
                out["taken_at"], out["taken_at_local"] = _as_stored(dt, tz)
    for field, names in (
        ("camera_make", ("tiff:Make",)),
        ("camera_model", ("tiff:Model",)),
        ("lens", ("exifEX:LensModel", "aux:Lens")),
    ):
        if out[field] is None:
            out[field] = _text(_xmp_value(xmp, names), field, notes)
    if out["gps_lat"] is None:
        lat = _xmp_gps(_xmp_value(xmp, ("exif:GPSLatitude",)), 90, "xmp GPSLatitude", notes)
        lon = _xmp_gps(_xmp_value(xmp, ("exif:GPSLongitude",)), 180, "xmp GPSLongitude", notes)
        if lat is not None and lon is not None:
            out["gps_lat"], out["gps_lon"] = lat, lon


def capture_columns(exif: Image.Exif | None, xmp: bytes | None = None) -> dict[str, Any]:
    """The record columns: ``CAPTURE_FIELDS`` and ``capture_notes``, the JSON list of notes
    (``[]`` when nothing was dropped: a null ``capture_notes`` means the metadata was never read)."""
    import json

    out, notes = capture_metadata(exif, xmp)
    return {**out, "capture_notes": json.dumps(notes)}


def read_capture(data: bytes) -> dict[str, Any]:
    """Capture metadata of an image file's bytes from its container header alone (no pixel is
    decoded): for re-reading the metadata of records already indexed."""
    import io
    import warnings

    from media.decode import RAW_FORMATS, container_exif, raw_exif
    from media.formats.sniff import sniff

    kind = sniff(data)
    if kind in RAW_FORMATS:
        return capture_columns(raw_exif(data))
    if kind == "HEIF":
        from media.formats.heif import ensure_opener

        ensure_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opened = Image.open(io.BytesIO(data))
            return capture_columns(*container_exif(opened))
    except Exception as exc:  # noqa: BLE001 - an unreadable header: no metadata, said in the note
        return {**dict.fromkeys(CAPTURE_FIELDS), "capture_notes": f'["metadata unreadable: {type(exc).__name__}"]'}
