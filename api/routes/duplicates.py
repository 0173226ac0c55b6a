"""Duplicate groups and stacks of a collection; ``POST /v1/jobs/sync`` (folders kept in sync)."""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import READ, WRITE
from api.deps import PathsDep, SettingsDep, StateDep
from api.jobs import confine
from api.paths import PathView
from api.routes.jobs import job_info
from api.schemas import ERRORS, JobInfo
from blipsearch.errors import BlipsearchError, InvalidInputError
from storage.catalog import open_catalog, utcnow
from storage.jobs import ACTIVE
from storage.layout import validate_name

log = logging.getLogger(__name__)
router = APIRouter(tags=["duplicates"], responses=ERRORS)


class StackRequest(BaseModel):
    model_config = {"extra": "forbid"}
    group: str | None = Field(default=None, max_length=64, description="A group id from GET .../duplicates.")
    keeper: int | None = Field(default=None, ge=0, description="The record search shows (default: the proposed one).")
    members: list[int] | None = Field(default=None, max_length=10_000, description="With keeper, instead of a group.")


class SyncJobRequest(BaseModel):
    model_config = {"extra": "forbid"}
    collection: str = Field(max_length=64)
    paths: list[str] = Field(min_length=1, max_length=100, description="Folders inside BLIPSEARCH_IMPORT_ROOTS.")


def _shown(payload: dict[str, Any], paths: PathView) -> dict[str, Any]:
    """Server paths as the API shows them (api/paths.py)."""
    for g in payload.get("groups", []):
        if "keeper_path" in g:
            g["keeper_path"] = paths.show(g["keeper_path"])
        for m in g["members"]:
            for k in ("uri", "path"):
                if k in m:
                    m[k] = paths.show(m[k])
    for r in payload.get("records", []):
        r["uri"] = paths.show(r.get("uri"))
    return payload


@router.get("/v1/collections/{name}/duplicates", dependencies=[READ])
def get_duplicates(
    name: str,
    settings: SettingsDep,
    paths: PathsDep,
    tier: Annotated[list[str] | None, Query(max_length=4, description="exact, reencoded, burst, near")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Duplicate groups in tiers (exact copies, re-encoded/resized, bursts, near-duplicates), each
    with its reasons (scores, distances) and a proposed keeper; ``total``: groups before ``limit``."""
    from service.duplicates import duplicates

    out = duplicates(settings, name, tier)
    out["total"] = len(out["groups"])
    out["groups"] = out["groups"][:limit]
    return _shown(out, paths)


@router.get("/v1/collections/{name}/stacks", dependencies=[READ])
def get_stacks(name: str, settings: SettingsDep) -> dict[str, Any]:
    from service.duplicates import list_stacks

    return list_stacks(settings, name)


@router.get("/v1/collections/{name}/stacks/{rid}", dependencies=[READ])
def get_stack_of(name: str, rid: int, settings: SettingsDep, paths: PathsDep) -> dict[str, Any]:
    """The stack record ``rid`` keeps or is in, with its records (for the keeper's detail view)."""
    from service.duplicates import stack_of

    return _shown(stack_of(settings, name, rid), paths)


@router.post("/v1/collections/{name}/stacks", dependencies=[WRITE])
def post_stack(name: str, body: StackRequest, settings: SettingsDep) -> dict[str, Any]:
    """Stack a duplicate group (or ``members`` under ``keeper``): search shows the keeper only; nothing is deleted."""
    from service.duplicates import stack

    if body.group is None and (body.keeper is None or not body.members):
        raise InvalidInputError("Give group, or keeper and members.")
    return stack(settings, name, group=body.group, keeper=body.keeper, members=body.members)


@router.delete("/v1/collections/{name}/stacks", dependencies=[WRITE])
def delete_stack(
    name: str,
    settings: SettingsDep,
    keeper: Annotated[int | None, Query(ge=0)] = None,
    group: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Unstack (by keeper id or group id): its records show in search again."""
    from service.duplicates import unstack

    if (keeper is None) == (group is None):
        raise InvalidInputError("Give keeper or group (one of them).")
    return unstack(settings, name, group=group, keeper=keeper)


@router.post("/v1/jobs/sync", response_model=JobInfo, status_code=202, dependencies=[WRITE])
def start_sync_job(body: SyncJobRequest, state: StateDep, paths: PathsDep) -> JobInfo:
    """Make a collection equal to server folders (inside BLIPSEARCH_IMPORT_ROOTS), in the background."""
    from indexer.sync import check_folders
    from service.indexing import collection_model

    s = state.settings
    validate_name(body.collection)
    confine(body.paths, s.import_roots, expose=s.expose_paths)  # 403 outside the roots, before anything else
    folders = check_folders(body.paths)  # as given: a symlinked folder is refused, not resolved
    model = collection_model(s, body.collection)
    catalog = open_catalog(s.catalog_url())
    job_id: str = catalog.create_job(
        "sync", body.collection, model, {"paths": [str(p) for p in folders]}, state="pending"
    )

    def run() -> None:
        from service.syncing import Syncer

        try:
            Syncer(s, folders, body.collection, embedder=state.embedder(model)).once(job_id=job_id)
        except BlipsearchError as exc:
            _fail(job_id, str(exc))
        except Exception as exc:
            log.exception("sync job %s failed", job_id)
            _fail(job_id, f"{type(exc).__name__}; see the server log")

    def _fail(jid: str, error: str) -> None:
        open_catalog(s.catalog_url()).transition(jid, ACTIVE, "failed", error=error, finished_at=utcnow())

    threading.Thread(target=run, name=f"sync-{job_id[:8]}", daemon=True).start()
    return job_info(catalog.get_job(job_id), paths)
