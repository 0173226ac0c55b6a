"""WebDataset shards: member sizes are checked from the tar headers before reading, so a huge
member never enters memory."""

from __future__ import annotations

import io
import tarfile

from indexer.sources.webdataset import WebDatasetSource
from tests.helpers import make_image


def _png() -> bytes:
    buf = io.BytesIO()
    make_image(0, (40, 30)).save(buf, "PNG")
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (never held): a large member costs the test no memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.left)
        b[:n] = b"\0" * n
        self.left -= n
        return n


def _shard(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, size, data in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(data) if data is not None else io.BufferedReader(_Zeros(size)))


def test_oversized_members_are_failures_or_skipped_unread(tmp_path):
    big = 3 << 20  # over the 1 MiB limit below
    png = _png()
    _shard(
        tmp_path / "s.tar.gz",
        [
            ("000.png", len(png), png),
            ("000.json", 9, b'{"a": 1}\n'),
            ("001.png", big, None),  # an image over the file limit: a per-item failure
            ("002.bin", big, None),  # neither image nor metadata: skipped unread
            ("002.png", len(png), png),
            ("003.txt", big, None),  # metadata over its limit: left out
            ("003.png", len(png), png),
        ],
    )
    read: list[int] = []
    real = tarfile.ExFileObject.read

    def spy(self, size=-1):  # type: ignore[no-untyped-def]
        out = real(self, size)
        read.append(len(out))
        return out

    tarfile.ExFileObject.read = spy  # type: ignore[method-assign]
    try:
        items = list(WebDatasetSource(tmp_path / "s.tar.gz", max_member_bytes=1 << 20))
    finally:
        tarfile.ExFileObject.read = real  # type: ignore[method-assign]
    by_uri = {it.uri.rpartition("#")[2]: it for it in items}
    assert set(by_uri) == {"000.png", "001.png", "002.png", "003.png"}
    assert by_uri["000.png"].meta == {"a": 1} and by_uri["000.png"].data == png
    assert by_uri["001.png"].data is None and "BLIPSEARCH_MAX_FILE_BYTES" in (by_uri["001.png"].error or "")
    assert by_uri["002.png"].data == png and by_uri["003.png"].data == png and "text" not in by_uri["003.png"].meta
    assert max(read) < 1 << 20  # no large member was ever read into memory
