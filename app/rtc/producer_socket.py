"""The receive side of an RTC session's producer socket: bytes in, the feed's effects out.

Thin on purpose: every rule (HELLO, sequencing, acks, what a message means) is the feed's
(app/rtc/feed.py). This only numbers the connection, reads it as every core's socket is read
(app/relay/socket_reader.py: the transport's refusals, a text frame or a message over the size
limit, become the feed's `on_error`), and tells the feed when the socket is gone. Writes go
through the connection's `ClientLink` (app/relay/client_link.py), bounded like a relay
session's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from app.logs import bind
from app.relay.client_link import CLOSE_GRACE_SECONDS, WRITE_TIMEOUT_SECONDS
from app.relay.shell import next_connection_id
from app.relay.socket_reader import read_socket
from avatar_relay_client import producer_protocol as pp

if TYPE_CHECKING:
    from app.rtc.session import RtcSession


async def serve_producer(session: RtcSession, websocket: WebSocket) -> None:
    conn = next_connection_id()
    with bind(session_id=session.session_id, connection_id=f"p{conn}"):
        link = session.attach(websocket, conn)
        try:
            await read_socket(
                websocket,
                subprotocol=pp.SUBPROTOCOL,
                on_data=lambda data: session.received(conn, data),
                on_refused=lambda code, text: session.refused(conn, code, text),
            )
        finally:
            session.detached(conn)
            link.close(1000, "")
            if link.task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(link.task), CLOSE_GRACE_SECONDS + WRITE_TIMEOUT_SECONDS
                    )
