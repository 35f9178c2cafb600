"""Fixtures for RTC mode: an emulator (SpatialReal + the LiveKit stand-in), our app configured
with that LiveKit, and the session's lifecycle events as they come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.app import create_app
from app.api.deps import Services
from app.emulator import DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET, Emulator
from app.rtc.core import Event, Kind
from app.rtc.session import RtcSession
from app.settings import Settings
from tests.support.relay import relay_test_settings
from tests.support.servers import FIXTURES, running_served

CALLER_KEY = "rtc-caller-key-0123456789abcdef"
OTHER_KEY = "rtc-other-key-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}
PCM = (FIXTURES / "short_16000.pcm").read_bytes()
WAIT = 10.0


def rtc_settings(emu: Emulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "upstream_request_timeout": 2.0,
        "upstream_connect_timeout": 2.0,
        "livekit_url": emu.livekit_url,
        "livekit_api_key": DEFAULT_LIVEKIT_API_KEY,
        "livekit_api_secret": DEFAULT_LIVEKIT_API_SECRET,
        "upstream_backoff_initial_seconds": 0.05,
    }
    values.update(overrides)
    return relay_test_settings(emu, [CALLER_KEY, OTHER_KEY], **values)


@dataclass
class Rtc:
    app: FastAPI
    url: str
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def create(self, key: str = CALLER_KEY, **body: Any) -> dict[str, Any]:
        response = await self.post(key, **body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def post(self, key: str = CALLER_KEY, **body: Any) -> httpx.Response:
        return await self.http.post(
            "/v1/rtc/sessions", json=body or None, headers={"Authorization": f"Bearer {key}"}
        )

    async def delete(self, session_id: str, key: str = CALLER_KEY) -> httpx.Response:
        return await self.http.delete(
            f"/v1/rtc/sessions/{session_id}", headers={"Authorization": f"Bearer {key}"}
        )

    def session(self, session_id: str) -> RtcSession:
        principal = next(iter(self.services.rtc._live.values())).principal_id
        return self.services.rtc.get(session_id, principal)


@contextlib.asynccontextmanager
async def running_rtc(settings: Settings) -> AsyncIterator[Rtc]:
    app = create_app(settings)
    async with running_served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield Rtc(app, url, http)


RtcFactory = Callable[..., contextlib.AbstractAsyncContextManager[Rtc]]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(speed=50, record=True, frame_bytes=64) as emulator:
        yield emulator


@pytest.fixture
async def rtc(emu: Emulator) -> AsyncIterator[Rtc]:
    async with running_rtc(rtc_settings(emu)) as running:
        yield running


class Listener:
    """Collects a session's lifecycle events from `RtcSession.events()` as they come."""

    def __init__(self, session: RtcSession) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(session))

    async def _run(self, session: RtcSession) -> None:
        async for event in session.events():
            self.events.append(event)
            self._changed.set()

    def kinds(self, req_id: str | None = None) -> list[Kind]:
        return [e.kind for e in self.events if req_id is None or e.req_id == req_id]

    async def until(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def event(self, kind: Kind, req_id: str | None = None) -> Event:
        def found() -> bool:
            return any(e.kind is kind and req_id in (None, e.req_id) for e in self.events)

        await self.until(found)
        return next(e for e in self.events if e.kind is kind and req_id in (None, e.req_id))

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
