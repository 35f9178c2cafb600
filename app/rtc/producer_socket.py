"""The receive side of an RTC session's producer socket: bytes in, the feed's effects out.

Thin on purpose: every rule (HELLO, sequencing, acks, what a message means) is the feed's
(app/rtc/feed.py). This loop only numbers the connection, turns the transport's refusals (a text
frame, a message over the size limit) into the feed's `on_error`, and tells it when the socket is
gone. Writes go through the connection's `ClientLink` (app/relay/shell.py), bounded like a relay
session's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from app.errors import ErrorCode
from app.logs import bind
from app.relay.client_link import CLOSE_GRACE_SECONDS, DISCONNECTS, WRITE_TIMEOUT_SECONDS
from app.relay.shell import next_connection_id
from avatar_relay_client import producer_protocol as pp

if TYPE_CHECKING:
    from app.rtc.session import RtcSession


async def serve_producer(session: RtcSession, websocket: WebSocket) -> None:
    conn = next_connection_id()
    with bind(session_id=session.session_id, connection_id=f"p{conn}"):
        link = session.attach(websocket, conn)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] != "websocket.receive":
                    if message.get("reason") == ErrorCode.MESSAGE_TOO_LARGE.value:
                        # Refused by its header; the transport already sent the ERROR.
                        session.refused(conn, ErrorCode.MESSAGE_TOO_LARGE, "")
                    break
                data = message.get("bytes")
                if data is None:
                    text = f"text frames are not part of {pp.SUBPROTOCOL}"
                    session.refused(conn, ErrorCode.INVALID_REQUEST, text)
                    continue
                session.received(conn, data)
        except DISCONNECTS:
            pass  # the transport failed under us: same as a disconnect
        finally:
            session.detached(conn)
            link.close(1000, "")
            if link.task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(link.task), CLOSE_GRACE_SECONDS + WRITE_TIMEOUT_SECONDS
                    )
