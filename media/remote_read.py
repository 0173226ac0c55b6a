"""The read-back branch for stored uris that are not local files: object URLs (and members
of object tar shards) and ``dataset://`` rows. ``safe_read.read_verified`` hands these here;
the same checks apply (bounded read, the bytes must hash to the record's sha256)."""

from __future__ import annotations

from blipsearch.errors import SourceUnavailableError
from media.dataset_rows import PREFIX, OpenLocal, read_dataset_verified
from media.objects import is_remote, read_remote_verified


def handles(uri: str) -> bool:
    return uri.startswith(PREFIX) or is_remote(uri)


def read_stored(uri: str, sha256: str | None, max_bytes: int, open_local: OpenLocal) -> bytes:
    """The verified bytes of a remote or dataset-row original (see media/objects.py,
    media/dataset_rows.py); ``open_local`` opens a local dataset file without following links."""
    if uri.startswith(PREFIX):
        return read_dataset_verified(uri, sha256, max_bytes, open_local)
    return read_remote_verified(uri, sha256, max_bytes)


def read_unverified(uri: str, max_bytes: int) -> bytes:
    """The bytes at a remote or dataset-row uri, without a hash to check (``read_uri``)."""
    from media.dataset_rows import read_row, split_dataset_uri
    from media.objects import read_remote

    parts = split_dataset_uri(uri)
    if uri.startswith(PREFIX):
        if parts is None:
            raise SourceUnavailableError("Unusable dataset uri.")
        return read_row(*parts, max_bytes)
    return read_remote(uri, max_bytes)
