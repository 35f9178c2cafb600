"""Fixtures for the relay API: an emulator, our app under uvicorn, and a tiny protocol peer.

The peer speaks `avatar-relay.v1` with the codec (`avatar_relay_client.browser_protocol`) and
nothing else, so the tests see exactly the bytes on the wire: no reconnect logic, no hidden
acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from app.api.app import create_app
from app.api.deps import Services
from app.emulator import Emulator
from app.settings import Settings
from avatar_relay_client import browser_protocol as p
from tests.support.relay import relay_test_settings
from tests.support.servers import FIXTURES, running_served

CALLER_KEY = "relay-caller-key-0123456789abcdef"
OTHER_KEY = "relay-other-key-fedcba9876543210"
AVATAR = "emulator-avatar"
SHORT_PCM = (FIXTURES / "short_16000.pcm").read_bytes()
# Every receive in these tests is an awaited event; this only turns a hang into a failure.
RECV_TIMEOUT = 10.0


def relay_settings(emu: Emulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"upstream_request_timeout": 2.0, "upstream_connect_timeout": 2.0}
    values.update(overrides)
    return relay_test_settings(emu, [CALLER_KEY, OTHER_KEY], **values)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(speed=50, record=True, frame_bytes=256) as emulator:
        yield emulator


@dataclass
class Relay:
    app: FastAPI
    url: str
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def create(self, key: str = CALLER_KEY, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/v1/relay/sessions", json=body or None, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def ticket(self, session_id: str, key: str = CALLER_KEY) -> httpx.Response:
        return await self.http.post(
            f"/v1/relay/sessions/{session_id}/tickets",
            headers={"Authorization": f"Bearer {key}"},
        )

    async def new_url(self, session_id: str) -> str:
        response = await self.ticket(session_id)
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url


@contextlib.asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[Relay]:
    app = create_app(settings)
    # Served as `avatar-relay serve` serves it: its WebSocket transport enforces limits too.
    async with running_served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield Relay(app, url, http)


RelayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Relay]]


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    async with running_relay(relay_settings(emu)) as running:
        yield running


@pytest.fixture
async def small_relay(emu: Emulator) -> AsyncIterator[Relay]:
    """A relay whose MAX_MESSAGE_BYTES is 1024."""
    async with running_relay(relay_settings(emu, max_message_bytes=1024)) as running:
        yield running


class Peer:
    """One raw protocol connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0  # client sequence numbers used so far

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        origin: str | None = None,
        subprotocols: list[str] | None = None,
    ) -> AsyncIterator[Peer]:
        protocols = [Subprotocol(s) for s in (subprotocols or [p.SUBPROTOCOL])]
        async with connect(
            url,
            subprotocols=protocols,
            origin=Origin(origin) if origin else None,
            max_size=None,
            open_timeout=RECV_TIMEOUT,
            close_timeout=2,
        ) as ws:
            yield cls(ws)

    async def send(self, message: p.ClientMessage) -> None:
        await self.ws.send(p.encode_client(message))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def hello(self, last_seq: int = 0) -> p.Welcome:
        await self.send(p.Hello(last_seq))
        welcome = await self.recv()
        assert isinstance(welcome, p.Welcome), welcome
        return welcome

    async def audio(self, pcm: bytes, end: bool = False) -> int:
        self.seq += 1
        await self.send(p.ClientAudio(self.seq, pcm, end))
        return self.seq

    async def utterance(self, pcm: bytes, chunk: int = 6400) -> None:
        """Send `pcm` in chunks, the last one with END."""
        pieces = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        for index, piece in enumerate(pieces):
            await self.audio(piece, end=index == len(pieces) - 1)

    async def interrupt(self) -> int:
        self.seq += 1
        await self.send(p.ClientInterrupt(self.seq))
        return self.seq

    async def recv(self) -> p.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
        assert isinstance(data, bytes), "the relay sends binary frames only"
        return p.decode_server(data)

    async def recv_raw(self) -> bytes:
        data = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
        assert isinstance(data, bytes)
        return data

    async def until(
        self, stop: Callable[[p.ServerMessage], bool], *, skip_control: bool = True
    ) -> list[p.ServerMessage]:
        """Messages up to and including the first for which `stop` holds (ACK/PING skipped)."""
        out: list[p.ServerMessage] = []
        while True:
            message = await self.recv()
            if isinstance(message, p.ServerPing):
                await self.send(p.ClientPong(message.nonce))
                continue
            if skip_control and isinstance(message, p.ServerAck):
                continue
            out.append(message)
            if stop(message):
                return out

    async def closed(self) -> tuple[int, str]:
        """Read until the server closes; its close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
        frame = self.ws.protocol.close_rcvd
        assert frame is not None, "connection lost without a close frame"
        return frame.code, frame.reason


def final_frame(message: p.ServerMessage) -> bool:
    return isinstance(message, p.ServerFrame) and message.end


def conversation_over(message: p.ServerMessage) -> bool:
    return final_frame(message) or isinstance(message, p.ConversationAborted)
