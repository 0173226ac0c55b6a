"""What the API shows of server paths: by default no absolute path leaves the server.

A record's ``uri`` (and a job failure's ``path``) is shown relative to the import root or the
data dir it lies in, or as its file name alone when it lies in neither (a CLI-indexed folder);
a tar member keeps its ``#member``. A model named by a local directory is shown by its folder
name (``model``), in every response, metrics label and error message (``text``).
``BLIPSEARCH_EXPOSE_PATHS=true`` shows them unchanged (a trusted deployment whose clients filter
by ``uri_prefix`` on absolute paths).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from blipsearch.config import Settings
from media.tar import is_tar

# An absolute path inside a message: a "/" not preceded by a word character, ":", "/" or a
# closing bracket (so never the path part of a URL or a route template), up to a quote, blank,
# comma or bracket.
_ABS_PATH = re.compile(r"(?<![\w:/.~}\])>-])/[^\s'\"`,;()\[\]{}<>]+")
# First components of this API's own routes: a message naming a route ("upload files to POST
# /v1/collections/{name}/images") keeps it.
_ROUTE_ROOTS = frozenset(
    {"v1", "v2", "api", "knn-service", "indices-list", "metadata", "meta", "metrics", "healthz", "readyz"}
    | {"ping", "predict", "docs", "redoc", "openapi.json", ".well-known"}
)


class PathView:
    def __init__(self, settings: Settings) -> None:
        self.expose = settings.expose_paths
        bases: list[Path] = [*settings.import_roots, settings.data_dir]
        seen: list[Path] = []
        for b in bases:
            for form in (Path(os.path.abspath(b.expanduser())), b.expanduser().resolve()):
                if form not in seen:
                    seen.append(form)
        self.bases: Sequence[Path] = seen

    def show(self, uri: str | None) -> str | None:
        if uri is None or self.expose:
            return uri
        if uri.startswith("dataset://"):  # a row of a dataset file: the file shown like any path
            location, sep, frag = uri[len("dataset://") :].rpartition("#")
            return f"dataset://{self.show(location) if '://' not in location else location}{sep}{frag}"
        if "://" in uri:  # an object URL names no server file: shown as it is
            return uri
        head, sep, member = uri.rpartition("#")
        if not (sep and member and is_tar(head)):
            head, sep, member = uri, "", ""
        path = Path(head)
        shown = path.name
        for base in self.bases:
            if path.is_absolute() and path.is_relative_to(base) and path != base:
                shown = str(path.relative_to(base))
                break
        return f"{shown}{sep}{member}"

    def model(self, model_id: str | None) -> str | None:
        """A model id as responses show it: a local directory by its folder name, a hub id as it is."""
        if model_id is None or self.expose or not model_id.startswith(("/", "~")):
            return model_id
        return Path(model_id).name or model_id

    def models(self, model_ids: Sequence[str]) -> list[str]:
        return [self.model(m) or m for m in model_ids]

    def text(self, message: str | None) -> str | None:
        """``message`` with absolute paths under the known bases shown relative to them, and any
        other absolute path (a model directory, a temp file) by its last component."""
        if message is None or self.expose:
            return message
        for base in sorted(self.bases, key=lambda b: len(str(b)), reverse=True):
            message = message.replace(str(base) + os.sep, "").replace(str(base), "<root>")
        return self.hide(message)

    @staticmethod
    def hide(message: str) -> str:
        """``message`` with every absolute path replaced by its last component."""

        def shown(m: re.Match[str]) -> str:
            path = m.group(0)
            if path.split("/", 2)[1].rstrip(".:") in _ROUTE_ROOTS:
                return path
            return Path(path).name or "<root>"

        return _ABS_PATH.sub(shown, message)
