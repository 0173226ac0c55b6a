"""PDQ hash lists: files of known hashes, streamed into a FAISS binary index (exact Hamming).

Formats (``format: auto`` tells them apart by the first line that is not blank or a comment):

* ``lines``: one 64-hex-digit hash a line; ``pdq <hash>`` (ThreatExchange's local signal-file
  form, "signal type, space, signal") is read too; blank lines and ``#`` comments are skipped;
* ``threatexchange_csv``: the CSV that ``threatexchange dataset -P --csv`` exports, with the
  header ``signal_type,signal_str,collab,category,tags``: rows whose ``signal_type`` is ``pdq``
  are loaded, rows of other signal types are counted and skipped; a headerless CSV whose first
  column is the hash (the older ``simple.HASH_PDQ.te`` cache rows) is read as well.

Malformed lines are reported with their line numbers (the first ``MAX_REPORTED``, and the
total) and the rest of the file is loaded. The file is read line by line with a bound on the
line length into one growing byte buffer (32 bytes a hash: 10M hashes are 320 MB, nothing per
line is kept), then handed to ``faiss.IndexBinaryFlat(256)``, which then holds the only copy;
its search is an exact scan of Hamming distances (a popcount per stored hash).

A list reloads itself when its file changes: every use compares the file's size, mtime and
inode with those it was loaded from (one ``stat``), and a changed file is re-read and the
index swapped in whole, so a check never sees half a list. A file that cannot be read any
more keeps the last good list and reports the error.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from blipsearch.errors import InvalidInputError, MissingDependencyError

log = logging.getLogger(__name__)
HASH_BYTES = 32
MAX_LINE = 64 * 1024  # longer lines are malformed (and skipped without being held in memory)
MAX_REPORTED = 100
CSV_HEADER = ("signal_type", "signal_str")
_HEX = frozenset("0123456789abcdefABCDEF")


class HashListError(InvalidInputError):
    code = "invalid_hash_list"


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: int = 0
    skipped: int = 0  # well-formed rows of another signal type
    malformed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"line": n, "error": ...}, the first MAX_REPORTED

    def bad(self, line: int, why: str) -> None:
        self.malformed += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append({"line": line, "error": why})

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "loaded": self.loaded, "skipped": self.skipped,
                "malformed": self.malformed, "errors": self.errors}  # fmt: skip


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the newline) — None for a line over MAX_LINE, which is
    consumed in bounded pieces."""
    n = 0
    while True:
        chunk = fh.readline(MAX_LINE + 1)
        if not chunk:
            return
        n += 1
        if len(chunk) > MAX_LINE and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = fh.readline(MAX_LINE)
            yield n, None
            continue
        yield n, chunk.rstrip(b"\r\n")


def _hash_bytes(text: str) -> bytes | str:
    """32 bytes, or why the text is not a PDQ hash."""
    s = text.strip()
    if len(s) != 2 * HASH_BYTES:
        return f"a PDQ hash is 64 hex digits, got {len(s)} characters"
    if not _HEX.issuperset(s):
        return "a PDQ hash is hex digits only (0-9, a-f)"
    return bytes.fromhex(s)


def _sniff(first: str) -> str:
    low = first.lower()
    if low.startswith("signal_type,") or ("," in first and not low.startswith("pdq ")):
        return "threatexchange_csv"
    return "lines"


def read_hashes(path: Path, fmt: str = "auto", *, max_hashes: int = 50_000_000) -> tuple[np.ndarray, LoadReport]:
    """[n, 32] uint8 hashes of a list file, and what was loaded, skipped or malformed."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise HashListError(f"Cannot read hash list {path}: {exc.strerror or exc}") from None
    buf = bytearray()
    with os.fdopen(fd, "rb", buffering=1 << 20) as fh:
        report = LoadReport(str(path), fmt)
        header: list[str] | None = None
        for n, line in _lines(fh):
            if line is None:
                report.bad(n, f"line longer than {MAX_LINE} bytes")
                continue
            try:
                text = line.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                report.bad(n, "not UTF-8 text")
                continue
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if report.format == "auto":
                report.format = _sniff(stripped)
            if report.format == "threatexchange_csv":
                row = next(csv.reader([text]), [])
                cells = [c.strip() for c in row]
                if header is None and [c.lower() for c in cells[:2]] == list(CSV_HEADER):
                    header = [c.lower() for c in cells]
                    continue
                if header is not None:
                    if len(cells) != len(header):
                        report.bad(n, f"{len(cells)} columns, the header has {len(header)}")
                        continue
                    rec = dict(zip(header, cells, strict=True))
                    if rec["signal_type"].lower() not in ("pdq", "hash_pdq"):
                        report.skipped += 1
                        continue
                    got = _hash_bytes(rec["signal_str"])
                else:  # headerless rows: the hash first
                    got = _hash_bytes(cells[0] if cells else "")
            elif report.format == "lines":
                kind, _, rest = stripped.partition(" ")
                if rest and kind.lower() == "pdq":
                    stripped = rest
                elif rest:
                    report.bad(n, "expected one PDQ hash (or 'pdq <hash>') on the line")
                    continue
                got = _hash_bytes(stripped)
            else:
                raise HashListError(f"Unknown hash list format {fmt!r}: auto, lines or threatexchange_csv")
            if isinstance(got, str):
                report.bad(n, got)
                continue
            if report.loaded >= max_hashes:
                raise HashListError(f"Hash list {path} has more than {max_hashes} hashes (the list's max_hashes).")
            buf += got
            report.loaded += 1
    if report.format == "auto":
        report.format = "lines"  # an empty file
    hashes = np.frombuffer(buf, dtype=np.uint8).reshape(-1, HASH_BYTES)  # a view: no copy
    return hashes, report


def binary_index(hashes: np.ndarray) -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("Hash lists", "faiss-cpu", "moderation") from None
    index = faiss.IndexBinaryFlat(HASH_BYTES * 8)
    if len(hashes):
        index.add(np.ascontiguousarray(hashes))
    return index


@dataclass
class Match:
    hash: str  # the list's hash
    distance: int
    query: int  # which query hash (0 = the image itself; dihedral variants after)


class HashList:
    """One list file, its index, and the stamp of the file it was built from."""

    def __init__(self, name: str, path: Path, fmt: str = "auto", *, max_hashes: int = 50_000_000) -> None:
        self.name, self.path, self.fmt, self.max_hashes = name, Path(path), fmt, max_hashes
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._state: tuple[Any, int] | None = None  # (index, number of hashes): swapped in whole
        self.report: LoadReport | None = None
        self.reload_error: str | None = None
        self.loads = 0
        self.refresh()

    def _file_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path, follow_symlinks=False)
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def refresh(self) -> bool:
        """Re-read the file if it changed since it was loaded. Returns whether it was re-read.
        The first load raises on an unreadable file; later ones keep the last good list."""
        try:
            stamp = self._file_stamp()
        except OSError as exc:
            if self._state is None:
                raise HashListError(f"Cannot read hash list {self.path}: {exc.strerror or exc}") from None
            self.reload_error = f"cannot read {self.path}: {exc.strerror or exc}"
            return False
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            try:
                hashes, report = read_hashes(self.path, self.fmt, max_hashes=self.max_hashes)
            except HashListError as exc:
                if self._state is None:
                    raise
                self.reload_error = str(exc)
                log.error("hash list %s: reload failed, keeping the previous list: %s", self.name, exc)
                return False
            if report.malformed:
                log.warning("hash list %s: %d malformed lines skipped (first: %s)", self.name, report.malformed,
                            report.errors[:3])  # fmt: skip
            index = binary_index(hashes)
            self._state, self.report, self._stamp = (index, len(hashes)), report, stamp
            del hashes  # the index holds the only copy (FAISS reconstructs a matched hash)
            self.reload_error = None
            self.loads += 1
            return True

    def __len__(self) -> int:
        return 0 if self._state is None else self._state[1]

    def nearest(self, queries: np.ndarray) -> Match | None:
        """The list hash nearest any of the query hashes ([q, 32] uint8), or None for an empty list."""
        self.refresh()
        assert self._state is not None
        index, count = self._state  # one consistent snapshot
        if count == 0:
            return None
        dist, ids = index.search(np.ascontiguousarray(queries, dtype=np.uint8), 1)
        q = int(np.argmin(dist[:, 0]))
        return Match(index.reconstruct(int(ids[q, 0])).tobytes().hex(), int(dist[q, 0]), q)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hashes": len(self), "loads": self.loads, "reload_error": self.reload_error,
                **(self.report.to_dict() if self.report else {})}  # fmt: skip
