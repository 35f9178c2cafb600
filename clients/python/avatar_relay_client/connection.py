"""One socket of the reliable link: opened, greeted, and its traffic counted.

The link (`link`) lives across a succession of these. Opening one says `HELLO{lastSeq}` and
takes the server's greeting before anything else is read or written; from then on every frame
both ways is counted in the link's `ClientStats`, and every frame received feeds its `Liveness`.
"""

from __future__ import annotations

import asyncio
from typing import Generic

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.liveness import Liveness
from avatar_relay_client.reconnect import Lost, closed_error, open_socket
from avatar_relay_client.stats import ClientStats
from avatar_relay_client.wire import E, Greeting, Inbound, Wire, expect_greeting


class Connection(Generic[E]):
    """A greeted socket: frames written and read, the server's in the link's vocabulary."""

    def __init__(
        self, ws: ClientConnection, wire: Wire[E], stats: ClientStats, liveness: Liveness
    ) -> None:
        self._ws = ws
        self._wire = wire
        self._stats = stats
        self._liveness = liveness

    async def write(self, data: bytes) -> None:
        await self._ws.send(data)
        self._stats.messages_sent += 1
        self._stats.bytes_sent += len(data)

    async def receive(self) -> Inbound[E]:
        """The next server message; the socket's own errors (`ConnectionClosed`, `OSError`)
        pass through, a frame that is not the protocol's raises PROTOCOL_ERROR."""
        return self._decode(await self._ws.recv())

    async def greet(self, last_seq: int, within: float) -> Greeting:
        """Say HELLO{last_seq}; the greeting must follow `within` seconds."""
        try:
            await self.write(self._wire.hello(last_seq))
            async with asyncio.timeout(within):
                raw = await self._ws.recv()
        except ConnectionClosed as exc:
            raise closed_error(exc) from None
        except (OSError, TimeoutError) as exc:
            raise Lost(f"no greeting: {exc}") from None
        return expect_greeting(self._decode(raw), last_seq)

    def abort(self) -> None:
        """Drop the TCP connection at once: no close frame."""
        self._ws.transport.abort()

    async def close(self) -> None:
        await self._ws.close()

    def _decode(self, raw: str | bytes) -> Inbound[E]:
        self._liveness.heard(asyncio.get_running_loop().time())
        if isinstance(raw, str):
            raise RelayError(ErrorCode.PROTOCOL_ERROR, "relay server sent a text frame")
        self._stats.messages_received += 1
        self._stats.bytes_received += len(raw)
        try:
            return self._wire.read(raw)
        except RelayError as exc:
            raise RelayError(
                ErrorCode.PROTOCOL_ERROR, f"bad server message: {exc.message}"
            ) from None


async def connect(
    wire: Wire[E],
    url: str,
    *,
    last_seq: int,
    stats: ClientStats,
    liveness: Liveness,
    origin: str | None,
    open_timeout: float,
    max_size: int,
) -> tuple[Connection[E], Greeting]:
    """Open a socket to `url`, say HELLO{last_seq} and take the greeting (or abort it)."""
    ws = await open_socket(
        url,
        subprotocol=wire.subprotocol,
        origin=origin,
        open_timeout=open_timeout,
        max_size=max_size,
    )
    connection = Connection(ws, wire, stats, liveness)
    try:
        greeting = await connection.greet(last_seq, open_timeout)
    except BaseException:
        connection.abort()
        raise
    return connection, greeting
