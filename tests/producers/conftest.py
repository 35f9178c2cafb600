"""A real relay (our app under uvicorn, as `avatar-relay serve` runs it) in front of a recording
emulator, and the two clients of a producer session: the producer (`Producer`) and the page
(`RelayClient` joined to the session the app server created)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.api.app import create_app
from app.emulator import Emulator
from avatar_relay_client import RelayClient
from avatar_relay_client.producer import Producer
from avatar_relay_client.producer_session import ProducerSession, create_session
from tests.support.relay import relay_test_settings
from tests.support.servers import FIXTURES, running_served

CALLER_KEY = "producer-caller-key-0123456789abcd"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}
PCM = (FIXTURES / "short_16000.pcm").read_bytes()
CHUNK_BYTES = 1280  # 40 ms of 16 kHz s16le
CHUNKS = [PCM[i : i + CHUNK_BYTES] for i in range(0, len(PCM), CHUNK_BYTES)]
# Every wait in these tests is on an event; this only turns a hang into a failure.
WAIT = 20.0


@dataclass
class Relay:
    url: str
    app: FastAPI
    emulator: Emulator
    http: httpx.AsyncClient

    async def session(self, **fields: Any) -> ProducerSession:
        return await create_session(self.url, headers=AUTH, http=self.http, **fields)

    @contextlib.asynccontextmanager
    async def pair(
        self, session: ProducerSession | None = None, **options: Any
    ) -> AsyncIterator[tuple[Producer, RelayClient]]:
        """The page's client and the producer of one session, both connected."""
        session = session or await self.session()
        page = RelayClient(self.url, headers=AUTH, session=session.answer, **options)
        producer = Producer(self.url, session, headers=AUTH, **options)
        await page.start()
        try:
            await producer.start()
            try:
                yield producer, page
            finally:
                await producer.close(bye=False)
        finally:
            await page.close()


@contextlib.asynccontextmanager
async def running_relay(speed: float = 50.0, **overrides: Any) -> AsyncIterator[Relay]:
    async with Emulator(port=0, speed=speed, record=True) as emulator:
        settings = relay_test_settings(emulator, [CALLER_KEY], **overrides)
        app = create_app(settings)
        async with running_served(app) as url, httpx.AsyncClient(timeout=10) as http:
            yield Relay(url, app, emulator, http)


async def take_until(client: Any, stop: Any, *, within: float = WAIT) -> list[Any]:
    """A client's events up to and including the first `stop` accepts (state changes skipped)."""
    from avatar_relay_client import StateChange

    out: list[Any] = []
    async with asyncio.timeout(within):
        while True:
            event = await client.next_event()
            if isinstance(event, StateChange):
                continue
            out.append(event)
            if stop(event):
                return out
