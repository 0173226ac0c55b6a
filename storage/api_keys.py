"""API keys: ``bsk_<id>_<secret>``; the catalog keeps the id, a name, a scope and sha256(key).

Keys are 256-bit random secrets, so an unsalted sha256 is enough to make the stored hash
useless to someone who reads the database, and it allows a constant-time lookup by id.
Scopes are ordered: ``read`` < ``write`` < ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from blipsearch.errors import InvalidInputError, NotFoundError, UnauthorizedError
from storage.catalog import ApiKeyRow, Catalog, utcnow

SCOPES = ("read", "write", "admin")
PREFIX = "bsk_"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scope: str
    created_at: str
    revoked: bool

    def allows(self, scope: str) -> bool:
        return not self.revoked and SCOPES.index(self.scope) >= SCOPES.index(scope)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.scope, row.created_at.isoformat(), row.revoked_at is not None)


def create_key(catalog: Catalog, name: str, scope: str = "write") -> tuple[str, KeyInfo]:
    """A new key (returned once, never stored) and its record."""
    if scope not in SCOPES:
        raise InvalidInputError(f"Unknown scope {scope!r}: use one of {', '.join(SCOPES)}.")
    if not name or len(name) > 128:
        raise InvalidInputError("A key needs a name of 1-128 characters.")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with catalog.session() as s:
        row = ApiKeyRow(id=key_id, name=name, scope=scope, key_hash=_hash(key), created_at=utcnow())
        s.add(row)
        s.flush()
        return key, _info(row)


def revoke_key(catalog: Catalog, key_id: str) -> KeyInfo:
    with catalog.session() as s:
        row = s.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFoundError(f"No API key with id {key_id!r}. List them with: blipsearch keys list")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


def list_keys(catalog: Catalog) -> list[KeyInfo]:
    with catalog.session() as s:
        return [_info(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]


def verify(catalog: Catalog, key: str) -> KeyInfo:
    """The key's record, or UnauthorizedError for a malformed, unknown or revoked key."""
    parts = key.removeprefix(PREFIX).split("_", 1) if key.startswith(PREFIX) else []
    if len(parts) != 2 or len(key) > 200:
        raise UnauthorizedError("Malformed API key.")
    with catalog.session() as s:
        row = s.get(ApiKeyRow, parts[0])
        if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
            raise UnauthorizedError("Unknown API key.")
        if row.revoked_at is not None:
            raise UnauthorizedError("This API key was revoked.")
        return _info(row)
