"""Update rules on re-indexing, shared by the local pipeline and the Ray runner.

Given the collection's live ``uri → (id, sha256)`` map:

* new content at a known uri: the new record replaces the old one (``new`` returns the old
  (id, sha256), which the commit tombstones together with adding the new record);
* a known uri whose content is now indexed under another uri (a duplicate): its old record is
  stale and is tombstoned at the next commit (``take_stale``);
* unchanged content: nothing to do.
"""

from __future__ import annotations


class UriUpdates:
    def __init__(self, by_uri: dict[str, tuple[int, str]]) -> None:
        self.by_uri = by_uri
        self.stale: dict[int, str] = {}

    def _changed(self, uri: str, sha: str | None) -> tuple[int, str] | None:
        old = self.by_uri.get(uri)
        if old is None or not sha or old[1] == sha:
            return None
        del self.by_uri[uri]
        return old

    def new(self, uri: str, sha: str | None) -> tuple[int, str] | None:
        """A new record for ``uri``: the (id, sha256) it replaces, if any."""
        return self._changed(uri, sha)

    def duplicate(self, uri: str, sha: str | None) -> None:
        """``uri`` holds content already indexed (here or under another uri)."""
        old = self._changed(uri, sha)
        if old is not None:
            self.stale[old[0]] = old[1]

    def take_stale(self) -> dict[int, str]:
        out, self.stale = self.stale, {}
        return out
