"""Fixtures for the broker: emulated regions, settings pointing at them, running app instances."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.api.app import create_app
from app.api.deps import Services
from app.emulator import Emulator
from app.settings import Region, Settings
from tests.support.servers import running_app

CALLER_KEY = "caller-key-0123456789abcdef-TEST"
UPSTREAM_KEY = "upstream-key-SECRET-9f8e7d6c5b4a"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def emulated_region(**kwargs: Any) -> AsyncIterator[Emulator]:
    kwargs.setdefault("api_keys", (UPSTREAM_KEY,))
    async with Emulator(**kwargs) as emulator:
        yield emulator


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with emulated_region(app_id=unique("app")) as emulator:
        yield emulator


@pytest.fixture
async def emu2(emu: Emulator) -> AsyncIterator[Emulator]:
    """A second region of the same app (same key, same app id), as SpatialReal's regions are."""
    async with emulated_region(app_id=emu.app_id) as emulator:
        yield emulator


def broker_settings(*regions: Emulator, **overrides: Any) -> Settings:
    """Settings for our app with `regions[0]` as the primary region and the rest as fallbacks."""
    names = list(Region)[: len(regions)]
    values: dict[str, Any] = {
        "app_env": "test",
        "spatialreal_api_key": SecretStr(UPSTREAM_KEY),
        "spatialreal_app_id": regions[0].app_id,
        "default_avatar_id": "emulator-avatar",
        "spatialreal_region": names[0],
        "spatialreal_fallback_regions": names[1:],
        "spatialreal_console_urls": {n: e.console_url for n, e in zip(names, regions, strict=True)},
        "spatialreal_ingress_urls": {n: e.ingress_url for n, e in zip(names, regions, strict=True)},
        "auth_mode": "api-key",
        "auth_api_keys": [SecretStr(CALLER_KEY)],
        "redis_url": None,
        "upstream_request_timeout": 2.0,
        "rate_limit_principal_per_minute": 0,
        "rate_limit_ip_per_minute": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Broker:
    app: FastAPI
    url: str
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def mint(
        self,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = CALLER_KEY,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent.setdefault("Authorization", f"Bearer {key}")
        return await self.client.post("/v1/session-tokens", json=body, headers=sent)


@contextlib.asynccontextmanager
async def running_broker(settings: Settings) -> AsyncIterator[Broker]:
    app = create_app(settings)
    async with (
        running_app(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield Broker(app, url, client)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "requestId"}
    code: str = body["error"]["code"]
    return code
