"""Typed FastAPI dependencies: what a route needs from the process, declared in its signature
(``state: StateDep``) instead of looked up on ``request.app.state``. They are ``async`` so
FastAPI runs them on the event loop (a plain ``def`` dependency costs a thread-pool hop each).

    @router.post("/x")
    def handler(body: Body, state: StateDep, settings: SettingsDep) -> Out: ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.paths import PathView
from api.state import AppState
from blipsearch.config import Settings


async def get_state(request: Request) -> AppState:
    """The process's ``AppState`` (api/app.py puts it on the application)."""
    state: AppState = request.app.state.blip
    return state


async def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_paths(settings: Annotated[Settings, Depends(get_settings)]) -> PathView:
    """How server paths are shown to clients (api/paths.py)."""
    return PathView(settings)


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PathsDep = Annotated[PathView, Depends(get_paths)]
