"""The ingress WebSocket: websockets' client connection, with a way in that skips its queue.

websockets hands every received message to a queue (its `Assembler`) that a task reading with
`recv()` wakes up for: a future, a task switch and the coroutine chain back up, once per
animation frame. With a handler set (`on_binary`), a complete binary message goes to the handler
as soon as it is parsed, in `data_received`, and the queue is left to what the handler must not
take: text frames, fragmented messages and anything behind a message still queued (so the order
is the wire's). The end of the connection still reaches `recv()` as before.

A handler that raises fails the connection (1011), as a reader that raised would end it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

log = logging.getLogger("avatar_relay.spatialreal")


class IngressWebSocket(ClientConnection):
    on_binary: Callable[[bytes], None] | None = None

    def process_event(self, event: Event) -> None:
        handler = self.on_binary
        if (
            handler is None
            or not isinstance(event, Frame)
            or event.opcode is not Opcode.BINARY
            or not event.fin
            or len(self.recv_messages.frames)
        ):
            super().process_event(event)
            return
        try:
            handler(bytes(event.data))
        except Exception:
            log.exception("an ingress message handler failed")
            self.on_binary = None
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "handler failed")
            self.send_data()
