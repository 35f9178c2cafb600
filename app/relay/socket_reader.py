"""A client socket's way in: each binary message to its session, once and in order, until the
socket is gone. Used by every socket a core reads (the relay's browser and producer sockets, an
RTC session's producer socket), so they read alike.

Messages come straight from the transport as they are parsed where the server has that way in
(`deliver_binary`, app/api/websocket.py: no ASGI event, no task wake-up per message), in the
logging context of the connection; the rest comes through ASGI's `receive` as before (text
frames, the transport's refusals, the disconnect, and everything under a server without it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from starlette.websockets import WebSocket

from app.errors import ErrorCode
from app.relay.client_link import DISCONNECTS, direct_receiver

OnData = Callable[[bytes], None]
OnRefused = Callable[[ErrorCode, str], None]


async def read_socket(
    websocket: WebSocket, *, subprotocol: str, on_data: OnData, on_refused: OnRefused
) -> None:
    """Read until the socket is gone (a disconnect, or the transport failed under us).

    `on_refused(code, text)`: the client broke a rule the transport enforces, a text frame
    (invalidRequest) or a message over the size limit (messageTooLarge: the transport already
    sent the ERROR and closes)."""
    deliver = direct_receiver(websocket)
    if deliver is not None:
        context = contextvars.copy_context()

        def in_context(data: bytes) -> None:
            context.run(on_data, data)

        deliver(in_context)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] != "websocket.receive":
                if message.get("reason") == ErrorCode.MESSAGE_TOO_LARGE.value:
                    on_refused(ErrorCode.MESSAGE_TOO_LARGE, "")
                return
            data = message.get("bytes")
            if data is None:
                on_refused(ErrorCode.INVALID_REQUEST, f"text frames are not part of {subprotocol}")
                continue
            on_data(data)
    except DISCONNECTS:
        return  # the transport failed under us: same as a disconnect
    finally:
        if deliver is not None:
            deliver(None)
