"""A client connection's outgoing side: one browser or producer socket's ordered writes, the
bounded queue behind a write that blocks, and the task that finishes such writes and closes it.

The relay shell (`shell.py`) performs the core's `SendToClient` and `CloseClient` effects on it.
A connection whose queue outgrows its bounds, or whose write does not finish within
`WRITE_TIMEOUT_SECONDS`, is reported to the shell (`slowConsumer`) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import WebSocketException

from app.metrics import Kind, Metrics
from app.relay import eager
from app.relay.conversations import Role
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

log = logging.getLogger("avatar_relay.relay")

__all__ = [
    "CLOSE_GRACE_SECONDS",
    "CONTROL_HEADROOM_BYTES",
    "CONTROL_HEADROOM_MESSAGES",
    "DISCONNECTS",
    "WRITE_TIMEOUT_SECONDS",
    "ClientLink",
    "direct_receiver",
    "metric_kind",
]
# A socket write that cannot finish within this long means the client (or its network) has
# stopped reading.
WRITE_TIMEOUT_SECONDS: Final = 10.0
# After the close frame is queued, how long the writer may take to get it out before the TCP
# connection is cut.
CLOSE_GRACE_SECONDS: Final = 2.0
# Room in a connection's queue beyond the replay buffer's bounds, for unsequenced control
# messages (PONG, ACK, ERROR) that the replay buffer does not count.
CONTROL_HEADROOM_MESSAGES: Final = 256
CONTROL_HEADROOM_BYTES: Final = 64 * 1024

_KIND_BY_TYPE: Final[dict[int, Kind]] = {
    p.ServerType.AUDIO: "audio",
    p.ServerType.FRAME: "frame",
    p.ClientType.AUDIO: "audio",
    pp.ProducerType.AUDIO: "audio",
    pp.EventType.MICROPHONE: "audio",
}
# What a write or a read raises when the client went away or the socket is already closed:
# starlette's disconnect, the ASGI server's (uvicorn raises an OSError subclass), a closed
# transport, a send after close (RuntimeError), or the websockets library's own exceptions.
DISCONNECTS: Final = (OSError, RuntimeError, WebSocketDisconnect, WebSocketException)


def metric_kind(data: bytes) -> Kind:
    """The `relayed` metric's kind of one binary message."""
    return _KIND_BY_TYPE.get(data[0], "control") if data else "control"


def _protocol(websocket: WebSocket) -> object:
    # uvicorn's protocols hand the app a bound `receive` whose owner holds the transport.
    return getattr(getattr(websocket, "_receive", None), "__self__", None)


def direct_receiver(
    websocket: WebSocket,
) -> Callable[[Callable[[bytes], None] | None], None] | None:
    """The transport's way to hand over binary messages as they are parsed, without ASGI
    (`deliver_binary`, app/api/websocket.py), when the server has one."""
    deliver: Callable[[Callable[[bytes], None] | None], None] | None = getattr(
        _protocol(websocket), "deliver_binary", None
    )
    return deliver


def _abort_transport(websocket: WebSocket) -> None:
    """Cut the TCP connection under a WebSocket whose close cannot get through."""
    transport = getattr(_protocol(websocket), "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()


class ClientLink:
    """One client connection's outgoing side: writes in order, a bounded queue behind a write
    that blocks, and the task that finishes such writes and closes the socket.

    A write goes straight to the transport (`write_binary`: framed and written at once, no
    coroutine and no ASGI message) when the protocol has it and takes it; else it is started at
    once (`eager.start`) when nothing is queued ahead of it: on an open, writable socket it
    completes without suspending, so the common case costs no task switch and no timer. Only a
    write that blocks (the transport is paused: the client is not reading fast enough) goes to
    the writer task, which waits for it with WRITE_TIMEOUT_SECONDS while later messages queue up
    behind it, bounded.
    """

    def __init__(
        self,
        websocket: WebSocket,
        conn: int,
        *,
        role: Role = "browser",
        max_messages: int,
        max_bytes: int,
        metrics: Metrics | None,
        on_stuck: Callable[[int], None],
    ) -> None:
        self.websocket = websocket
        self.conn = conn
        self.role: Role = role
        self._send = websocket.send
        # The transport's batched synchronous write (app/api/websocket.py), when it has one.
        self._direct: Callable[[bytes], bool] | None = getattr(
            _protocol(websocket), "write_binary", None
        )
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._on_stuck = on_stuck
        self._queue: deque[tuple[bytes, float]] = deque()
        self._bytes = 0
        # The write that blocked (and its message), until the writer task finished it.
        self._blocked: tuple[eager.Blocked, bytes, float] | None = None
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.broken = False  # overflowed or stuck: nothing more is written
        self.gone = False  # the peer went away under a write: nothing more is written
        self.task: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._close is not None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"relay-client-writer-{self.conn}")

    def send(self, data: bytes, received_at: float) -> bool:
        """Write one message now, or queue it behind a blocked write; False when the queue is
        over its bounds (the caller ends the session with slowConsumer)."""
        if self._close is not None or self.broken or self.gone:
            return True
        if self._blocked is None and not self._queue:
            self._write(data, received_at)
            return True
        self._queue.append((data, received_at))
        self._bytes += len(data)
        if len(self._queue) > self._max_messages or self._bytes > self._max_bytes:
            # The write in flight may finish (a frame is never cut short); the rest is dropped.
            self.broken = True
            self._queue.clear()
            self._bytes = 0
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued has been written."""
        if self._close is None:
            self._close = (code, reason)
            self._wake.set()

    def _write(self, data: bytes, received_at: float) -> None:
        """Start one write; a write that blocks is handed to the writer task."""
        direct = self._direct
        try:
            if direct is not None and direct(data):
                blocked = None
            else:
                blocked = eager.start(self._send({"type": "websocket.send", "bytes": data}))
        except DISCONNECTS as exc:
            self._lost(exc)
            return
        except Exception:
            log.exception("relay client write failed")
            self._lost(None)
            _abort_transport(self.websocket)
            return
        if blocked is not None:
            self._blocked = (blocked, data, received_at)
            self._wake.set()
            return
        metrics = self._metrics
        if metrics is not None:
            metrics.relayed("down", metric_kind(data), len(data))
            if received_at:
                metrics.observe_hop(time.perf_counter() - received_at)

    def _lost(self, exc: BaseException | None) -> None:
        # The peer is gone (or the socket closed under us): the socket reader sees the
        # disconnect and tells the core; nothing more is written here.
        if exc is not None:
            log.debug("relay client write ended: %s", type(exc).__name__)
        self.gone = True
        self._queue.clear()
        self._bytes = 0
        if self._blocked is not None:
            self._blocked[0].close()
            self._blocked = None
        self._wake.set()

    async def _run(self) -> None:
        websocket = self.websocket
        try:
            while True:
                if self._blocked is not None:
                    blocked, data, received_at = self._blocked
                    try:
                        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                            await blocked.finish()
                    except TimeoutError:
                        self._blocked = None
                        self.broken = True
                        self._queue.clear()
                        self._bytes = 0
                        self._on_stuck(self.conn)
                        continue
                    self._blocked = None
                    metrics = self._metrics
                    if metrics is not None:
                        metrics.relayed("down", metric_kind(data), len(data))
                        if received_at:
                            metrics.observe_hop(time.perf_counter() - received_at)
                    # Drain what queued up behind it, each write started at once again.
                    while self._queue and self._blocked is None and not self.gone:
                        data, received_at = self._queue.popleft()
                        self._bytes -= len(data)
                        self._write(data, received_at)
                    continue
                if self.gone:
                    return
                if self._close is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
            code, reason = self._close
            try:
                async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                    await websocket.close(code, reason)
            except TimeoutError:
                _abort_transport(websocket)
        except DISCONNECTS as exc:
            self._lost(exc)
        except Exception:
            log.exception("relay client writer failed")
            _abort_transport(websocket)
