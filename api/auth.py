"""API keys at the edge: ``Authorization: Bearer <key>``; writes and admin routes always need
one, reads only when ``BLIPSEARCH_READ_ACCESS=key``.

The scope a route needs is declared once, by its ``READ``/``WRITE``/``ADMIN`` dependency; the
request guard (api/guard.py) reads it from the route to authenticate from the headers before
any body byte is read, and the dependency checks it again inside the route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from blipsearch.config import Settings
from blipsearch.errors import BlipsearchError, ForbiddenError, UnauthorizedError
from storage.api_keys import SCOPES, KeyInfo, verify
from storage.catalog import open_catalog

_bearer = HTTPBearer(auto_error=False, description="An API key from: blipsearch keys create --name NAME")


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_key(settings: Settings, key: str | None, scope: str) -> KeyInfo:
    """The key's record if it exists, is live and has ``scope``; else 401/403."""
    if not key:
        raise UnauthorizedError(
            "This route needs an API key: send 'Authorization: Bearer <key>'. "
            "Create one with: blipsearch keys create --name NAME"
        )
    info = verify(open_catalog(settings.catalog_url()), key)
    if not info.allows(scope):
        raise ForbiddenError(f"API key {info.id!r} has scope {info.scope!r}; this route needs {scope!r}.")
    return info


def authenticate(settings: Settings, authorization: str | None, scope: str) -> KeyInfo:
    """``check_key`` from a raw ``Authorization`` header value."""
    return check_key(settings, _bearer_token(authorization), scope)


def caller_scope(request: Request, settings: Settings) -> str | None:
    """The scope of the caller's key, or None for an anonymous caller (no key, or one that is
    not valid: on public reads a bad key is the same as none)."""
    key = _bearer_token(request.headers.get("authorization"))
    if not key:
        return None
    try:
        return verify(open_catalog(settings.catalog_url()), key).scope
    except BlipsearchError:
        return None


def require(scope: str) -> Callable[..., KeyInfo | None]:
    """A dependency that admits requests whose key has ``scope`` (or public reads)."""

    def check(settings: SettingsDep, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> KeyInfo | None:
        if scope == "read" and settings.read_access == "public":
            return None
        return check_key(settings, creds.credentials if creds is not None else None, scope)

    check.required_scope = scope  # type: ignore[attr-defined]
    return check


def required_scope(route: Any) -> str | None:
    """The highest scope a route's dependencies require (None: no key needed)."""
    found: list[str] = []
    stack = [getattr(route, "dependant", None)]
    while stack:
        dep = stack.pop()
        if dep is None:
            continue
        scope = getattr(dep.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
        stack.extend(dep.dependencies)
    return max(found, key=SCOPES.index) if found else None


READ = Depends(require("read"))
WRITE = Depends(require("write"))
ADMIN = Depends(require("admin"))
