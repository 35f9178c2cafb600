"""Limits the WebSocket transport enforces before a message is complete (app/api/websocket.py):
an announced size over MAX_MESSAGE_BYTES, and a begun message that stops arriving."""

from __future__ import annotations

import asyncio
import os
import struct
import time

import pytest
from websockets import Subprotocol
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from app.api.websocket import RelayWebSocketProtocol
from app.emulator import Emulator
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import SHORT_PCM, Peer, Relay, relay_settings, running_relay


def frame_header(length: int) -> bytes:
    """A masked client BINARY frame header (FIN set) announcing `length` payload bytes."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 1 << 16:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return b"\x82" + size + os.urandom(4)


async def test_a_huge_message_gets_the_error_before_the_1009_close(small_relay: Relay) -> None:
    # Far beyond MAX_MESSAGE_BYTES + 64 (the old transport limit closed with a bare 1009).
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send_raw(b"\x02\x00" + b"\x00" * (1 << 20))
        error = await peer.recv()
        assert isinstance(error, p.ServerError), error
        assert error.code == "messageTooLarge"
        assert await peer.closed() == (1009, "messageTooLarge")
    # A violation like any other: the session is over.
    refused = await small_relay.ticket(body["sessionId"])
    assert refused.json()["error"]["code"] == "sessionClosed"
    assert small_relay.services.sessions.live_count == 0


async def test_the_header_alone_is_enough_to_refuse(small_relay: Relay) -> None:
    # The frame header announces 16 MiB; not one payload byte follows. The answer comes at once:
    # the server does not wait for (or buffer) what it would refuse anyway.
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        peer.ws.transport.write(frame_header(16 << 20))
        error = await peer.recv()
        assert isinstance(error, p.ServerError)
        assert error.code == "messageTooLarge"
        assert await peer.closed() == (1009, "messageTooLarge")


@pytest.fixture
def quick_partial(monkeypatch: pytest.MonkeyPatch) -> float:
    bound = 0.5
    monkeypatch.setattr(RelayWebSocketProtocol, "partial_message_seconds", bound)
    return bound


async def test_a_stalled_message_is_cut_within_the_bound(
    small_relay: Relay, quick_partial: float
) -> None:
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        started = time.monotonic()
        # A header announcing 600 bytes (within the limit), ten of them, then nothing.
        peer.ws.transport.write(frame_header(600) + b"\x02\x00" + b"\x00" * 8)
        assert await peer.closed() == (1008, "messageIncomplete")
        waited = time.monotonic() - started
    assert quick_partial <= waited < quick_partial + 2
    # A stalled network looks the same: the session waits for the client to resume.
    again = await small_relay.ticket(body["sessionId"])
    assert again.status_code == 201
    async with Peer.open(again.json()["url"]) as resumed:
        welcome = await resumed.hello()
        assert welcome.resumed


async def test_a_slow_but_moving_message_within_the_bound_is_accepted(
    small_relay: Relay, quick_partial: float
) -> None:
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        message = p.encode_client(p.ClientAudio(1, b"\x01\x00" * 100, True))
        header = frame_header(len(message))
        mask = header[-4:]
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
        # The message in three pieces, the whole taking less than the bound.
        peer.ws.transport.write(header + masked[:50])
        await asyncio.sleep(quick_partial / 4)
        peer.ws.transport.write(masked[50:120])
        await asyncio.sleep(quick_partial / 4)
        peer.ws.transport.write(masked[120:])
        ack = await peer.until(lambda m: isinstance(m, p.ServerAck), skip_control=False)
        assert ack[-1] == p.ServerAck(1)


# What Chromium offers on every WebSocket.
CHROMIUM_OFFER = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]


def browser_connect(url: str) -> connect:
    return connect(
        url, subprotocols=[Subprotocol(p.SUBPROTOCOL)], extensions=CHROMIUM_OFFER, compression=None
    )


async def test_compression_is_off_by_default_whatever_the_browser_offers(relay: Relay) -> None:
    body = await relay.create()
    async with browser_connect(body["url"]) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(p.encode_client(p.Hello(0)))
        assert isinstance(p.decode_server(bytes(await ws.recv())), p.Welcome)  # type: ignore[arg-type]


async def test_relay_compression_negotiates_permessage_deflate(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu, relay_compression=True)) as relay:
        body = await relay.create()
        async with browser_connect(body["url"]) as ws:
            assert ws.response is not None
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            peer = Peer(ws)
            await peer.hello()
            pcm = SHORT_PCM[:6400]
            await peer.audio(pcm, end=True)
            echoed = b""
            frames = 0
            while True:
                message = await peer.recv()
                if isinstance(message, p.ServerAudio):
                    echoed += message.pcm
                elif isinstance(message, p.ServerFrame):
                    frames += 1
                    if message.end:
                        break
            assert echoed == pcm
            assert frames == 5
