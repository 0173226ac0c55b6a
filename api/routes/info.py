"""What the page needs to know before it offers an action: GET /v1/info (the server's
collection-name rule, whether import roots exist, its limits) and GET /v1/keys/me (the caller's
key, checked: a cheap authenticated request the key dialog sends when a key is saved)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from api.auth import READ, authenticate
from api.deps import SettingsDep
from api.schemas import ERRORS
from blipsearch import __version__
from storage.layout import name_pattern

router = APIRouter(prefix="/v1", tags=["system"], responses=ERRORS)


class ServerInfo(BaseModel):
    version: str
    collection_name_pattern: str = Field(
        description="The rule for new collection names, as a regular expression (an HTML pattern attribute)."
    )
    import_roots: bool = Field(description="Whether server folders can be indexed (BLIPSEARCH_IMPORT_ROOTS is set).")
    read_access: str = Field(description="public: reads need no key; key: every request needs one.")
    max_upload_bytes: int


class KeyMe(BaseModel):
    id: str
    name: str
    scope: str
    created_at: str


@router.get("/info", response_model=ServerInfo, dependencies=[READ])
def server_info(settings: SettingsDep) -> ServerInfo:
    """Never a path: only whether import roots are set."""
    return ServerInfo(
        version=__version__,
        collection_name_pattern=name_pattern(),
        import_roots=bool(settings.import_roots or settings.import_prefixes),
        read_access=settings.read_access,
        max_upload_bytes=settings.max_upload_bytes,
    )


@router.get("/keys/me", response_model=KeyMe)
def key_me(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> KeyMe:
    """The key sent in ``Authorization: Bearer``: 401 when missing, unknown or revoked."""
    info = authenticate(settings, authorization, "read")
    return KeyMe(id=info.id, name=info.name, scope=info.scope, created_at=info.created_at)
