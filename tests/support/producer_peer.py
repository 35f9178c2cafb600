"""A raw producer peer (the producer codec over a real socket, nothing else, so tests see the
exact bytes on the wire) and the bad producer inputs of docs/protocol.md section 14, each with
its stable code: shared by the relay's producer socket tests and the RTC session's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from app.errors import ErrorCode
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

RECV_TIMEOUT = 10.0


class ProducerPeer:
    """One raw producer connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, subprotocol: str = pp.SUBPROTOCOL) -> AsyncIterator[ProducerPeer]:
        async with connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            max_size=None,
            open_timeout=RECV_TIMEOUT,
            close_timeout=2,
        ) as ws:
            yield cls(ws)

    async def send(self, message: pp.ProducerMessage) -> None:
        await self.ws.send(pp.encode_producer(message))

    async def hello(self, last_seq: int = 0) -> pp.Welcome:
        await self.send(pp.Hello(last_seq))
        welcome = await self.recv()
        assert isinstance(welcome, pp.Welcome), welcome
        return welcome

    async def recv(self) -> pp.ServerMessage:
        data = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
        assert isinstance(data, bytes), "the relay sends binary frames only"
        return pp.decode_server(data)

    async def until(self, kind: type[Any]) -> list[pp.ServerMessage]:
        out: list[pp.ServerMessage] = []
        while True:
            message = await self.recv()
            out.append(message)
            if isinstance(message, kind):
                return out

    async def closed(self) -> tuple[int, str]:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT)
        frame = self.ws.protocol.close_rcvd
        assert frame is not None, "connection lost without a close frame"
        return frame.code, frame.reason


BAD_INPUT: list[tuple[str, bytes | str, ErrorCode]] = [
    ("shorter than its header", b"\x12", ErrorCode.INVALID_REQUEST),
    ("truncated for its type", bytes((0x14, 0, 1, 0)), ErrorCode.INVALID_REQUEST),
    ("trailing bytes", pp.encode_producer(pp.Ack(0)) + b"\x00", ErrorCode.INVALID_REQUEST),
    ("reserved flag bits", bytes((0x13, 0x02, 1, 0, 0, 0)), ErrorCode.INVALID_REQUEST),
    ("a second HELLO", pp.encode_producer(pp.Hello(0)), ErrorCode.INVALID_REQUEST),
    (
        "a browser-protocol type",
        p.encode_client(p.ClientAudio(1, b"\x01\x00")),
        ErrorCode.UNKNOWN_MESSAGE_TYPE,
    ),
    ("a server type", pp.encode_ack(1), ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("odd PCM", bytes((0x12, 0, 1, 0, 0, 0, 1, 2, 3)), ErrorCode.BAD_AUDIO),
    ("empty AUDIO without END", bytes((0x12, 0, 1, 0, 0, 0)), ErrorCode.BAD_AUDIO),
    ("seq 0", bytes((0x13, 0, 0, 0, 0, 0)), ErrorCode.BAD_SEQUENCE),
    ("a skipped seq", pp.encode_producer(pp.Interrupt(2)), ErrorCode.BAD_SEQUENCE),
    ("ACK above what was sent", pp.encode_producer(pp.Ack(99)), ErrorCode.BAD_ACK),
    ("a text frame", "hello", ErrorCode.INVALID_REQUEST),
]
