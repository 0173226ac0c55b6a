"""Photo files as cameras and phones write them, for the photo tests: JPEGs whose EXIF a
standard EXIF writer (piexif) wrote, HEIC written by pillow-heif (libheif), DNG written by
PiDNG, and what an independent EXIF reader (exifread) says about each of them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from blipsearch.synthetic import make_image


@dataclass
class Shot:
    name: str
    taken: str | None = None  # EXIF "YYYY:MM:DD HH:MM:SS"
    offset: str | None = None  # OffsetTimeOriginal
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    gps: tuple[float, float, float] | None = None  # lat, lon, alt (m)
    fmt: str = "JPEG"  # JPEG, HEIF or DNG
    seed: int = 0


def _dms(value: float) -> tuple[tuple[int, int], ...]:
    v = abs(value)
    d = int(v)
    m = int((v - d) * 60)
    s = Fraction((v - d - m / 60) * 3600).limit_denominator(10000)
    return ((d, 1), (m, 1), (s.numerator, s.denominator))


def exif_bytes(shot: Shot, raw: dict[str, Any] | None = None) -> bytes:
    import piexif

    zeroth: dict[int, Any] = {}
    ex: dict[int, Any] = {}
    gps: dict[int, Any] = {}
    if shot.make:
        zeroth[piexif.ImageIFD.Make] = shot.make.encode()
    if shot.model:
        zeroth[piexif.ImageIFD.Model] = shot.model.encode()
    if shot.taken:
        ex[piexif.ExifIFD.DateTimeOriginal] = shot.taken.encode()
    if shot.offset:
        ex[piexif.ExifIFD.OffsetTimeOriginal] = shot.offset.encode()
    if shot.lens:
        ex[piexif.ExifIFD.LensModel] = shot.lens.encode()
    if shot.gps:
        lat, lon, alt = shot.gps
        gps = {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(lon),
            piexif.GPSIFD.GPSAltitudeRef: 0 if alt >= 0 else 1,
            piexif.GPSIFD.GPSAltitude: (round(abs(alt) * 10), 10),
        }
    for ifd, tags in (raw or {}).items():  # hostile values, written as given
        {"0th": zeroth, "Exif": ex, "GPS": gps}[ifd].update(tags)
    return piexif.dump({"0th": zeroth, "Exif": ex, "GPS": gps})


def dng_bytes(shot: Shot, width: int = 96, height: int = 64) -> bytes:
    """A DNG as PiDNG writes it: a 12-bit RGGB mosaic with Make, Model and DateTimeOriginal."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation

    rng = np.random.default_rng(shot.seed)
    mosaic = (rng.random((height, width)) * 4095).astype(np.uint16)
    t = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.TileWidth, width),
        (Tag.TileLength, height),
        (Tag.Orientation, Orientation.Horizontal),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 12),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ):
        t.set(tag, value)
    if shot.make:
        t.set(Tag.Make, shot.make)
    if shot.model:
        t.set(Tag.Model, shot.model)
    if shot.taken:
        t.set(Tag.DateTimeOriginal, shot.taken)
    writer = RAW2DNG()
    writer.options(t, path="", compress=False)
    return bytes(writer.convert(mosaic))


def dng_with_preview(preview: np.ndarray, width: int = 640, height: int = 480, make: str = "Canon") -> bytes:
    """A DNG as tifffile writes it: IFD0 the 8-bit RGB preview (NewSubfileType 1), its SubIFD the
    12-bit RGGB mosaic (NewSubfileType 0), the layout cameras and Adobe's converter use."""
    import tifffile

    rng = np.random.default_rng(width)
    cfa = (rng.random((height, width)) * 4095).astype(np.uint16)
    dng = [(50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 2, 0, 0), True)]
    camera = [(271, "s", 0, make, True), (272, "s", 0, f"{make} R", True), (50708, "s", 0, f"{make} R", True)]
    mosaic = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50717, "I", 1, 4095, True),
        (50714, "I", 1, 0, True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),
    ]
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=dng + camera)
        tif.write(cfa, photometric=32803, subfiletype=0, extratags=mosaic)
    return buf.getvalue()


def photo_bytes(shot: Shot, raw_exif: dict[str, Any] | None = None) -> bytes:
    if shot.fmt == "DNG":
        return dng_bytes(shot)
    img = make_image(shot.seed, (72, 56))
    buf = io.BytesIO()
    if shot.fmt == "HEIF":
        import pillow_heif

        pillow_heif.from_pillow(img).save(buf, quality=85, exif=exif_bytes(shot, raw_exif))
    else:
        img.save(buf, shot.fmt, exif=exif_bytes(shot, raw_exif), quality=90)
    return buf.getvalue()


SUFFIX = {"JPEG": "jpg", "HEIF": "heic", "DNG": "dng", "AVIF": "avif", "WEBP": "webp", "PNG": "png"}


def write_library(folder: Path, shots: list[Shot]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for s in shots:
        path = folder / f"{s.name}.{SUFFIX[s.fmt]}"
        path.write_bytes(photo_bytes(s))
        out[s.name] = path.resolve()
    return out


PLACES = {  # city centres: (lat, lon), what the reverse geocoder should name
    "paris": (48.8566, 2.3522),
    "tokyo": (35.6895, 139.6917),
    "nyc": (40.7128, -74.0060),
    "sydney": (-33.8688, 151.2093),
    "lyon": (45.7640, 4.8357),
    "munich": (48.1351, 11.5820),
}


def random_library(n: int, seed: int = 0) -> list[Shot]:
    """``n`` shots with varied dates (some without an offset, some without a date), cameras and
    places (some without GPS), in JPEG, HEIC and DNG."""
    rng = np.random.default_rng(seed)
    cameras = [("Apple", "iPhone 13"), ("Canon", "Canon EOS R5"), ("SONY", "ILCE-7M3"), ("FUJIFILM", "X-T4")]
    names = list(PLACES)
    shots = []
    base = datetime(2019, 1, 1, tzinfo=timezone.utc)
    for i in range(n):
        when = base + timedelta(hours=int(rng.integers(0, 5 * 365 * 24)), seconds=int(rng.integers(0, 3600)))
        make, model = cameras[int(rng.integers(0, len(cameras)))]
        fmt = ("JPEG", "JPEG", "HEIF", "DNG")[i % 4]
        lat, lon = PLACES[names[int(rng.integers(0, len(names)))]]
        jitter = rng.normal(0, 0.02, 2)
        gps = (lat + jitter[0], lon + jitter[1], float(rng.integers(-5, 900)))
        shots.append(
            Shot(
                name=f"p{i:03d}",
                taken=None if i % 7 == 3 else when.strftime("%Y:%m:%d %H:%M:%S"),
                offset=None if fmt == "DNG" or i % 5 == 1 else ("+02:00", "-05:00", "+09:00", "+00:00")[i % 4],
                make=make,
                model=model,
                lens="24-70mm F2.8" if i % 3 == 0 and fmt != "DNG" else None,
                gps=None if fmt == "DNG" or i % 6 == 5 else gps,
                fmt=fmt,
                seed=1000 + i,
            )
        )
    return shots


def _ratio(v: Any) -> float:
    return float(Fraction(v.num, v.den)) if v.den else float("nan")


def independent_reading(path: Path) -> dict[str, Any]:
    """What exifread (not Pillow) reads from ``path``, as the record columns would hold it.
    HEIC: libheif (pillow_heif.open_heif) hands over the EXIF item's bytes, which exifread parses
    as the TIFF structure they are."""
    import exifread

    data = path.read_bytes()
    if path.suffix == ".heic":
        import pillow_heif

        data = pillow_heif.open_heif(io.BytesIO(data)).info["exif"]
        data = data[6:] if data.startswith(b"Exif\x00\x00") else data
    tags = exifread.process_file(io.BytesIO(data), details=False)

    def text(key: str) -> str | None:
        v = tags.get(key)
        return str(v).strip() or None if v is not None else None

    out: dict[str, Any] = {"camera_make": text("Image Make"), "camera_model": text("Image Model")}
    out["lens"] = text("EXIF LensModel")
    taken = text("EXIF DateTimeOriginal") or text("Image DateTimeOriginal")
    offset = text("EXIF OffsetTimeOriginal")
    out["taken_at"], out["taken_at_local"] = None, None
    if taken:
        dt = datetime.strptime(taken, "%Y:%m:%d %H:%M:%S")
        if offset:
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
            out["taken_at"], out["taken_at_local"] = dt.replace(tzinfo=tz).astimezone(timezone.utc), False
        else:
            out["taken_at"], out["taken_at_local"] = dt.replace(tzinfo=timezone.utc), True
    out["gps_lat"] = out["gps_lon"] = out["gps_alt"] = None
    if "GPS GPSLatitude" in tags:
        d, m, s = (_ratio(x) for x in tags["GPS GPSLatitude"].values)
        lat = (d + m / 60 + s / 3600) * (-1 if text("GPS GPSLatitudeRef") == "S" else 1)
        d, m, s = (_ratio(x) for x in tags["GPS GPSLongitude"].values)
        lon = (d + m / 60 + s / 3600) * (-1 if text("GPS GPSLongitudeRef") == "W" else 1)
        alt = _ratio(tags["GPS GPSAltitude"].values[0])
        below = tags["GPS GPSAltitudeRef"].values[0] == 1
        out.update(gps_lat=lat, gps_lon=lon, gps_alt=-alt if below else alt)
    return out
