"""API keys at the edge: ``Authorization: Bearer <key>``; writes and admin routes always need
one, reads only when ``BLIPSEARCH_READ_ACCESS=key``."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from blipsearch.errors import ForbiddenError, UnauthorizedError
from storage.api_keys import KeyInfo, verify
from storage.catalog import open_catalog

_bearer = HTTPBearer(auto_error=False, description="An API key from: blipsearch keys create --name NAME")


def require(scope: str) -> Callable[..., KeyInfo | None]:
    """A dependency that admits requests whose key has ``scope`` (or public reads)."""

    def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> KeyInfo | None:
        settings = request.app.state.blip.settings
        if scope == "read" and settings.read_access == "public":
            return None
        if creds is None or not creds.credentials:
            raise UnauthorizedError(
                "This route needs an API key: send 'Authorization: Bearer <key>'. "
                "Create one with: blipsearch keys create --name NAME"
            )
        info = verify(open_catalog(settings.catalog_url()), creds.credentials)
        if not info.allows(scope):
            raise ForbiddenError(f"API key {info.id!r} has scope {info.scope!r}; this route needs {scope!r}.")
        return info

    return check


READ = Depends(require("read"))
WRITE = Depends(require("write"))
ADMIN = Depends(require("admin"))
