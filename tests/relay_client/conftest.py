"""A real relay server (our app under uvicorn) in front of a recording emulator, over loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from app.api.app import create_app
from app.emulator import Emulator
from tests.support.relay import relay_test_settings
from tests.support.servers import running_app

CALLER_KEY = "relay-client-caller-key-0123456789"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}


@dataclass
class Relay:
    url: str
    app: FastAPI
    emulator: Emulator


@contextlib.asynccontextmanager
async def running_relay(speed: float = 50.0, **overrides: Any) -> AsyncIterator[Relay]:
    """Emulator (recording what it receives and sends) + the relay app pointed at it."""
    async with Emulator(port=0, speed=speed, record=True) as emulator:
        app = create_app(relay_test_settings(emulator, [CALLER_KEY], **overrides))
        async with running_app(app) as url:
            yield Relay(url, app, emulator)
