"""The server's WebSocket transport: uvicorn's sans-I/O websockets protocol with the relay's
limits on what a client may send before a message is complete.

- A message larger than the limit (`ws_max_size`, i.e. MAX_MESSAGE_BYTES) is refused as
  docs/protocol.md says: `ERROR{messageTooLarge}`, then close 1009. The protocol learns the size
  from the frame header, before the payload arrives, so nothing of it is buffered; the app is told
  with a disconnect whose reason is the code, and ends the session (app/relay/shell.py).
- A message that has begun must arrive in full within PARTIAL_MESSAGE_SECONDS of its first
  byte (a header announcing a large frame, then silence, would otherwise hold the socket and its
  buffer for as long as keep-alive pings are answered). The connection is closed with 1008 and
  the reason `messageIncomplete`; the session stays resumable, since a stalled network looks
  the same. Time the server itself spends not reading (back-pressure) does not count.

And a way in and a way out that cost less than ASGI's `receive` and `send` (the relay's hot path:
one of each per message):

- `write_binary` frames a binary message and writes it to the transport at once, with no
  coroutine. It declines (False) whenever the ASGI path must decide (not open, closing, paused by
  back-pressure), so waiting, raising and closing stay uvicorn's.
- `deliver_binary(handler)` hands each complete binary message to `handler` as soon as it is
  parsed, in `data_received`, instead of queueing an ASGI event for a task to wake up and read
  (uvicorn also pauses and resumes the transport's reading around every queued message). The
  relay's core is sans-I/O, so the message is handled right there. Order is kept: a message
  goes to the handler only when nothing is queued ahead of it (text frames, disconnects and
  whatever came before the handler was set still take the ASGI queue, in order). A handler that
  raises closes the connection with 1011, as an app raising under ASGI does.
"""

from __future__ import annotations

import logging
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState, PayloadTooBig
from websockets.frames import Frame, Opcode

from app.errors import ErrorCode, spec
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

# How long a begun message may take to arrive in full (256 KiB at 26 KB/s, a poor mobile link).
PARTIAL_MESSAGE_SECONDS: Final = 10.0

log = logging.getLogger("avatar_relay.websocket")

TOO_LARGE_REASON: Final = ErrorCode.MESSAGE_TOO_LARGE.value
INCOMPLETE_REASON: Final = ErrorCode.MESSAGE_INCOMPLETE.value
INTERNAL_REASON: Final = ErrorCode.INTERNAL_ERROR.value


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    partial_message_seconds: float = PARTIAL_MESSAGE_SECONDS

    _partial_timer: TimerHandle | None = None
    _on_binary: Callable[[bytes], None] | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_partial()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_partial()
        super().connection_lost(exc)

    # --- the direct write ---

    def write_binary(self, data: bytes) -> bool:
        """Frame and write one binary message now. False: not now (use ASGI `send`, which
        waits, raises or closes as the state requires)."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        conn = self.conn
        try:
            conn.send_binary(data)
        except InvalidState:
            return False
        self.transport.write(b"".join(conn.data_to_send()))
        return True

    # --- the direct read ---

    def deliver_binary(self, handler: Callable[[bytes], None] | None) -> None:
        """From now on hand each complete binary message to `handler` (None: back to ASGI)."""
        self._on_binary = handler

    def send_receive_event_to_app(self) -> None:
        handler = self._on_binary
        if (
            handler is None
            or self.curr_msg_data_type != "bytes"
            or self.close_sent
            or not self.queue.empty()
        ):
            super().send_receive_event_to_app()
            return
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.frames = []
        try:
            handler(data)
        except Exception:
            log.exception("the relay failed on a client message")
            self._on_binary = None
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": 1011, "reason": INTERNAL_REASON}
            )
            self._close(1011, INTERNAL_REASON)

    def handle_parser_exception(self) -> None:
        exc = self.conn.parser_exc
        protocol = self._relay_protocol()
        if isinstance(exc, PayloadTooBig) and protocol is not None:
            # The websockets parser refused the frame by its header and queued its close; the
            # documented ERROR goes out first, in the socket's own protocol.
            limit = self.config.ws_max_size
            text = f"message larger than {limit} bytes"
            if protocol == pp.SUBPROTOCOL:
                error = pp.encode_error(TOO_LARGE_REASON, text)
            else:
                error = p.encode_server(p.ServerError(TOO_LARGE_REASON, text))
            self.transport.write(Frame(Opcode.BINARY, error).serialize(mask=False))
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": 1009, "reason": TOO_LARGE_REASON}
            )
            self.conn.data_to_send()  # superseded by ours, below
            self._close(spec(ErrorCode.MESSAGE_TOO_LARGE).close_code, TOO_LARGE_REASON)
            return
        super().handle_parser_exception()

    # --- partial messages ---

    def _relay_protocol(self) -> str | None:
        """The relay protocol this socket speaks (the browser's or a producer's), if any."""
        response = getattr(self, "response", None)
        chosen = response.headers.get("Sec-WebSocket-Protocol") if response is not None else None
        return chosen if chosen in (p.SUBPROTOCOL, pp.SUBPROTOCOL) else None

    def _partial(self) -> bool:
        # Bytes of a frame the parser is still waiting to complete, or a fragmented message
        # whose last fragment has not come.
        return bool(self.conn.reader.buffer) or bool(self.frames)

    def _watch_partial(self) -> None:
        if self.close_sent or self.disconnected or not self.handshake_complete:
            self._cancel_partial()
            return
        if not self._partial():
            self._cancel_partial()
        elif self._partial_timer is None:
            self._partial_timer = self.loop.call_later(
                self.partial_message_seconds, self._partial_expired
            )

    def _cancel_partial(self) -> None:
        if self._partial_timer is not None:
            self._partial_timer.cancel()
            self._partial_timer = None

    def _partial_expired(self) -> None:
        self._partial_timer = None
        if self.close_sent or self.disconnected or not self._partial():
            return
        if self.read_paused:
            # We stopped reading (the app is behind): not the client's delay. Look again later.
            self._watch_partial()
            return
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": 1008, "reason": INCOMPLETE_REASON}
        )
        self._close(spec(ErrorCode.MESSAGE_INCOMPLETE).close_code, INCOMPLETE_REASON)

    def _close(self, code: int, reason: str) -> None:
        self.conn.data_to_send()
        self.transport.write(
            Frame(Opcode.CLOSE, code.to_bytes(2, "big") + reason.encode()).serialize(mask=False)
        )
        self.close_sent = True
        self.transport.close()
