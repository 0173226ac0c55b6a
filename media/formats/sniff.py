"""Name an image container from its first bytes: HEIF, AVIF and camera RAW files that Pillow
alone would not read (or, for TIFF-based RAW, would read as the wrong picture).

TIFF-based RAW files (DNG, CR2, NEF, ARW, PEF) start like any TIFF: IFD0's tag numbers tell
them apart (a DNGVersion tag; Canon's ``CR`` marker; a camera ``Make`` with SubIFDs or a
reduced-resolution IFD0, as NEF/ARW/PEF write it). Only the IFD0 entry table is read.
"""

from __future__ import annotations

import struct

# ISO-BMFF brands (the ``ftyp`` box): HEIF still images and sequences, AVIF, Canon CR3.
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}
MAKER_RAW = {"NIKON": "NEF", "SONY": "ARW", "PENTAX": "PEF", "RICOH": "PEF", "SAMSUNG": "SRW"}
DNG_VERSION, MAKE, SUB_IFDS, NEW_SUBFILE_TYPE = 50706, 271, 330, 254


def _brands(data: bytes) -> list[bytes]:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return []
    size = min(struct.unpack(">I", data[:4])[0], len(data), 4096)
    return [data[8:12]] + [data[i : i + 4] for i in range(16, size - 3, 4)]


def _ifd0(data: bytes) -> dict[int, tuple[int, int, bytes]] | None:
    """IFD0's entries (tag -> (type, count, 4 value bytes)) of a TIFF, or None."""
    if data[:4] == b"II*\x00":
        end = "<"
    elif data[:4] == b"MM\x00*":
        end = ">"
    else:
        return None
    try:
        (offset,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[offset : offset + 2])
        out = {}
        for i in range(min(count, 1024)):
            e = data[offset + 2 + 12 * i : offset + 14 + 12 * i]
            tag, typ, n = struct.unpack(end + "HHI", e[:8])
            out[tag] = (typ, n, e[8:12])
        return out
    except struct.error:
        return None


def _make(data: bytes, entry: tuple[int, int, bytes], little: bool) -> str:
    typ, n, value = entry
    if typ != 2:
        return ""
    raw = value[:n] if n <= 4 else data[struct.unpack("<I" if little else ">I", value)[0] :][: min(n, 64)]
    return raw.split(b"\x00")[0].decode("ascii", "replace").strip().upper()


def sniff(data: bytes) -> str | None:
    """``HEIF``, ``AVIF``, a RAW format (``DNG``, ``CR2``, ``CR3``, ``NEF``, ``ARW``, ``PEF``,
    ``RAF``, ``ORF``, ``RW2``) or None (for Pillow to identify)."""
    brands = _brands(data)
    if brands:
        if brands[0] == b"crx ":
            return "CR3"
        if brands[0] in AVIF_BRANDS or (brands[0] not in HEIF_BRANDS and AVIF_BRANDS & set(brands)):
            return "AVIF"
        return "HEIF" if HEIF_BRANDS & set(brands) else None
    if data.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if data[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if data[:4] == b"IIU\x00":
        return "RW2"
    ifd = _ifd0(data)
    if ifd is None:
        return None
    if DNG_VERSION in ifd:
        return "DNG"
    if data[8:10] == b"CR":
        return "CR2"
    if MAKE in ifd and (SUB_IFDS in ifd or NEW_SUBFILE_TYPE in ifd):
        make = _make(data, ifd[MAKE], data[:2] == b"II")
        for prefix, fmt in MAKER_RAW.items():
            if make.startswith(prefix):
                return fmt
    return None
