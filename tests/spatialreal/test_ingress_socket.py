"""The ingress socket's direct way in (app/spatialreal/ingress_socket.py), over a real socket:
what is handed over and what `receive()` returns add up to the wire's messages, once each and in
order; a handler that raises fails the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from app.errors import AppError
from app.spatialreal.connection import IngressConnection
from app.spatialreal.ingress_socket import IngressWebSocket
from app.spatialreal.messages import UpstreamMessage

Script = Callable[[ServerConnection], Awaitable[None]]


def raw_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False, extensions=[])


@contextlib.asynccontextmanager
async def ingress(script: Script) -> AsyncIterator[IngressConnection]:
    """An IngressConnection on an IngressWebSocket, to a server that runs `script` once the
    client said it is ready (so the handler is set before anything is sent)."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await script(ws)
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", create_connection=IngressWebSocket) as ws:
            yield IngressConnection(
                ws, connection_id="c1", region="test", avatar_id="a", sample_rate=16000
            )


async def read_all(conn: IngressConnection, seen: list[bytes]) -> None:
    while (message := await conn.receive()) is not None:
        seen.append(message.raw)


async def test_handed_over_and_received_add_up_to_the_wire_in_order() -> None:
    messages = [bytes([n]) * 40 for n in range(1, 7)]

    async def script(ws: ServerConnection) -> None:
        one, two, three, four, five, six = messages
        # One segment: a message, a text frame (queued), one behind it, a fragmented one, one
        # behind that; then, later, one more on its own.
        ws.transport.write(
            raw_frame(Opcode.BINARY, one)
            + raw_frame(Opcode.TEXT, b"ignored")
            + raw_frame(Opcode.BINARY, two)
            + raw_frame(Opcode.BINARY, three[:10], fin=False)
            + raw_frame(Opcode.CONT, three[10:])
            + raw_frame(Opcode.BINARY, four)
        )
        await asyncio.sleep(0.05)
        ws.transport.write(raw_frame(Opcode.BINARY, five))
        await asyncio.sleep(0.05)
        ws.transport.write(raw_frame(Opcode.BINARY, six))
        await asyncio.sleep(0.05)
        await ws.close()

    seen: list[bytes] = []
    handed: list[bytes] = []

    def on_message(message: UpstreamMessage) -> None:
        handed.append(message.raw)
        seen.append(message.raw)

    async with ingress(script) as conn:
        assert conn.deliver(on_message)
        await conn._ws.send(b"ready")
        await asyncio.wait_for(read_all(conn, seen), 5)
    assert seen == messages
    # The first and the last two came straight from the socket; the rest through receive().
    assert handed == [messages[0], messages[4], messages[5]]


async def test_without_a_handler_everything_goes_through_receive() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send(b"\x01" * 10)
        await ws.send(b"\x02" * 10)
        await ws.close()

    seen: list[bytes] = []
    async with ingress(script) as conn:
        await conn._ws.send(b"ready")
        await asyncio.wait_for(read_all(conn, seen), 5)
    assert seen == [b"\x01" * 10, b"\x02" * 10]


async def test_a_handler_that_raises_fails_the_connection() -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection) -> None:
        await ws.send(b"\x01" * 10)
        await ws.wait_closed()
        closed.set_result(ws.close_code)

    def on_message(message: UpstreamMessage) -> None:
        raise RuntimeError("a bug")

    async with ingress(script) as conn:
        conn.deliver(on_message)
        await conn._ws.send(b"ready")
        with pytest.raises(AppError) as failure:
            await asyncio.wait_for(conn.receive(), 5)
        assert failure.value.code.value == "connectionClosed"
    assert await asyncio.wait_for(closed, 5) == 1011
