"""WebDataset shards that are not local files: an object (``s3://bucket/shards/00000.tar``)
streamed front to back, or the output of a ``pipe:`` command.

Both are ``WebDatasetSource`` with another byte stream, so samples, metadata members and
failures work as for a local shard. A member's uri is ``<shard URL>#<member>``: an object
shard's members read back through media/objects.py; a pipe's never do (reading it back would
mean running the command again, which a server never does).

``pipe:<command>`` runs ``<command>`` through the shell and reads its standard output as a tar
(``pipe:aws s3 cp s3://bucket/00000.tar -``): only from the CLI behind ``--allow-pipe``, never
from the API.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import IO, Any

from indexer.sources.base import SourceItem
from indexer.sources.tree import Tree
from indexer.sources.webdataset import WebDatasetSource
from media.objects import failure_reason, one_line, open_object

PIPE_PREFIX = "pipe:"


class ObjectShardSource(WebDatasetSource):
    def __init__(self, tree: Tree, path: str, max_member_bytes: int | None = None) -> None:
        self.tree = tree
        self.key = path
        # The shard's name in member uris: its URL (WebDatasetSource formats "<path>#<member>").
        self.path = tree.uri(path)  # type: ignore[assignment]
        self.max_member_bytes = max_member_bytes
        self._count: int | None = None

    def stream(self) -> IO[bytes]:
        try:
            return open_object(self.tree.uri(self.key), self.tree.options)
        except Exception as exc:  # noqa: BLE001 - a missing/forbidden shard is the shard's failure
            raise OSError(f"{failure_reason(exc)}: {one_line(exc)}") from None

    def count(self) -> int | None:
        return None


class _PipeStream:
    """A command's stdout as a readable stream; closing it ends the command."""

    def __init__(self, command: str) -> None:
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def read(self, n: int = -1) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n)

    def close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> _PipeStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PipeShardSource(WebDatasetSource):
    def __init__(self, spec: str, max_member_bytes: int | None = None) -> None:
        self.command = spec[len(PIPE_PREFIX) :].strip()
        self.path = spec  # type: ignore[assignment]
        self.max_member_bytes = max_member_bytes
        self._count: int | None = None
        self._last: _PipeStream | None = None

    def stream(self) -> IO[bytes]:
        self._last = _PipeStream(self.command)
        return self._last  # type: ignore[return-value]

    def __iter__(self) -> Iterator[SourceItem]:
        yield from super().__iter__()
        if self._last is not None and self._last.proc.returncode not in (0, None):
            code = self._last.proc.returncode
            yield SourceItem(f"{self.path}#", error=f"the pipe: command exited with status {code}")

    def count(self) -> int | None:
        return None
