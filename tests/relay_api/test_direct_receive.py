"""Client messages handed to the relay straight from the transport (`deliver_binary`,
app/api/websocket.py): several messages in one TCP segment, order with what takes the ASGI queue,
and a handler that raises."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from app.relay.session import RelaySession
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import SHORT_PCM, Peer, Relay


def client_frame(data: bytes | str) -> bytes:
    """One masked client frame, as a browser frames it."""
    opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
    payload = data.encode() if isinstance(data, str) else data
    return Frame(opcode, payload).serialize(mask=True, extensions=[])


def chunks(count: int) -> list[bytes]:
    size = len(SHORT_PCM) // count // 2 * 2
    return [SHORT_PCM[i * size : (i + 1) * size] for i in range(count)]


async def test_many_messages_in_one_segment_are_each_handled_once_in_order(relay: Relay) -> None:
    body = await relay.create()
    pieces = chunks(12)
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        wire = [
            p.encode_client(p.ClientAudio(seq, pcm, seq == len(pieces)))
            for seq, pcm in enumerate(pieces, start=1)
        ]
        peer.ws.transport.write(b"".join(client_frame(m) for m in wire))
        echoed: list[bytes] = []
        acked = 0
        while acked < len(pieces) or len(echoed) < len(pieces):
            message = await peer.recv()
            if isinstance(message, p.ServerAck):
                acked = max(acked, message.seq)
            elif isinstance(message, p.ServerAudio):
                echoed.append(message.pcm)
            elif isinstance(message, p.ServerPing):
                await peer.send(p.ClientPong(message.nonce))
    assert acked == len(pieces)
    assert echoed == pieces


async def test_a_text_frame_queued_ahead_keeps_its_place(relay: Relay) -> None:
    # The text frame takes the ASGI queue and ends the session; the audio right behind it in
    # the same segment must wait its turn, so it is never relayed.
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        audio = p.encode_client(p.ClientAudio(1, SHORT_PCM[:3200], True))
        peer.ws.transport.write(client_frame("hello?") + client_frame(audio))
        seen: list[p.ServerMessage] = []
        while True:
            message = await peer.recv()
            seen.append(message)
            if isinstance(message, p.ServerError):
                break
        assert message.code == "invalidRequest"
        assert not any(isinstance(m, p.ServerAudio | p.ServerAck) for m in seen), seen
        assert (await peer.closed())[0] == 4400


async def test_a_handler_that_raises_closes_1011_and_the_server_goes_on(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RelaySession.on_data

    def on_data(self: RelaySession, role: Any, conn: int, data: bytes, now: float) -> Any:
        if data[:1] == bytes([p.ClientType.AUDIO]) and data.endswith(b"\x7f" * 8):
            raise RuntimeError("a bug in the relay")
        return original(self, role, conn, data, now)

    monkeypatch.setattr(RelaySession, "on_data", on_data)
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.audio(b"\x01\x00" * 800)
        await peer.until(lambda m: isinstance(m, p.ServerAudio))
        await peer.audio(b"\x7f" * 1600)
        assert await peer.closed() == (1011, "internalError")
    # Only that connection: another session is relayed as before.
    other = await relay.create()
    async with Peer.open(other["url"]) as peer:
        await peer.hello()
        await peer.audio(SHORT_PCM[:3200], end=True)
        echo = await peer.until(lambda m: isinstance(m, p.ServerAudio))
        assert isinstance(echo[-1], p.ServerAudio)
