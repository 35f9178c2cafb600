"""A real relay server (our app under uvicorn) in front of a recording emulator, over loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from app.api.app import create_app
from app.emulator import Emulator
from app.server import emulator_settings
from app.settings import Settings
from tests.support.servers import running_app

CALLER_KEY = "relay-client-caller-key-0123456789"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}


@dataclass
class Relay:
    url: str
    app: FastAPI
    emulator: Emulator


def relay_settings(emulator: Emulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "auth_mode": "api-key",
        "auth_api_keys": [SecretStr(CALLER_KEY)],
        "redis_url": None,
        "rate_limit_principal_per_minute": 0,
        "rate_limit_ip_per_minute": 0,
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    return emulator_settings(settings, emulator)


@contextlib.asynccontextmanager
async def running_relay(speed: float = 50.0, **overrides: Any) -> AsyncIterator[Relay]:
    """Emulator (recording what it receives and sends) + the relay app pointed at it."""
    async with Emulator(port=0, speed=speed, record=True) as emulator:
        app = create_app(relay_settings(emulator, **overrides))
        async with running_app(app) as url:
            yield Relay(url, app, emulator)
