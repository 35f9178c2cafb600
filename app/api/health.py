"""Liveness: is the process up, and which upstream is it talking to."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app import __version__
from app.settings import Settings

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]
    upstream: Literal["emulator", "spatialreal"]
    region: str
    version: str


@router.get("/healthz", summary="Liveness, and which upstream this server talks to")
async def healthz(request: Request) -> Health:
    settings: Settings = request.app.state.settings
    return Health(
        status="ok",
        upstream="emulator" if settings.emulator_mode else "spatialreal",
        region=settings.primary_region.value,
        version=__version__,
    )
