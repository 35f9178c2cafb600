"""One relay session's upstream: the ingress connection it owns (the pool is app/relay/pool.py).

`UpstreamLink` is a queue of operations (audio chunks and interrupts) written in order by one
writer task, a reader task per connection handing messages back, and (re)connection on demand,
when and whether as `app/relay/reconnect.py` decides (the close-code contract: refuse, roll over,
or retry with jittered backoff). It never talks to the session core itself: it reports through
callbacks, and the shell turns those into core events. Upstream messages it has no use for
(anything but animation frames and errors) are handed on like any other and ignored by the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from app.errors import AppError, ErrorCode
from app.relay import eager
from app.relay.reconnect import Action, Reconnect, ReconnectPolicy
from app.spatialreal.connection import IngressConnection
from app.spatialreal.messages import UpstreamMessage

log = logging.getLogger("avatar_relay.upstream")

# --- one session's upstream ---


@dataclass(frozen=True, slots=True)
class _Audio:
    req_id: str
    audio: bytes
    end: bool


@dataclass(frozen=True, slots=True)
class _Interrupt:
    req_id: str


@dataclass(frozen=True, slots=True)
class _Playback:
    """Pause or resume (egress mode with `playback_control`)."""

    kind: Literal["pause", "resume"]
    req_id: str


_Op = _Audio | _Interrupt | _Playback


class Connector(Protocol):
    """Where a link gets its connections: the relay's warm pool, or RTC mode's egress
    connector (each RTC session's connections are configured for its own room)."""

    policy: ReconnectPolicy

    async def acquire(self, avatar_id: str, sample_rate: int) -> IngressConnection: ...

    async def release(self, conn: IngressConnection) -> None: ...


OnMessage = Callable[[UpstreamMessage, float], None]
OnLost = Callable[[AppError], bool]
OnFailed = Callable[[list[str], AppError], None]
OnRefused = Callable[[AppError], None]


class UpstreamLink:
    """One relay session's ingress connection: ordered writes, reads, (re)connection.

    - `on_message(message, received_at)`: every message read (`received_at` is perf_counter).
    - `on_lost(error) -> reconnect_now`: the connection failed or closed; queued operations were
      dropped (their conversations are the ones the loss aborts). Return True to reconnect at
      once rather than when the next audio comes.
    - `on_failed(req_ids, error)`: connecting failed; the queued operations of those requests were
      dropped.
    - `on_refused(error)`: upstream closed (or failed the handshake) with a non-retryable close
      code; queued operations were dropped and the link will never connect again. Without it,
      `on_lost` / `on_failed` are called instead.

    After a loss with 4002 (session duration) the link reconnects at once, whatever `on_lost`
    answers; after other retryable losses and failed connects, not before the policy's backoff.

    Callbacks run synchronously in the link's tasks; they must not await.
    """

    def __init__(
        self,
        pool: Connector,
        avatar_id: str,
        sample_rate: int,
        *,
        on_message: OnMessage,
        on_lost: OnLost,
        on_failed: OnFailed,
        max_queued_bytes: int,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._pool = pool
        self.avatar_id = avatar_id
        self.sample_rate = sample_rate
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_failed = on_failed
        self._on_refused = on_refused
        self._max_queued_bytes = max_queued_bytes
        self.reconnect = Reconnect(pool.policy)
        self._not_before = 0.0  # loop time before which no connect starts (backoff)
        self._delivered = False  # the current connection delivered a frame
        # Why the current connection is ending, when it said so before closing.
        self._ending: AppError | None = None
        self._ops: deque[_Op] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._want_connection = False
        self._conn: IngressConnection | None = None
        self._sent_ids: set[str] = set()  # requests with audio sent on the current connection
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writing = False  # the writer task is sending a queued operation
        self._blocked: tuple[IngressConnection, eager.Blocked] | None = None  # an eager write
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        self.connections = 0  # connections used so far (tests, logs)

    @property
    def connection(self) -> IngressConnection | None:
        return self._conn

    def start(self, *, connect_now: bool) -> None:
        self._want_connection = connect_now
        self._writer = asyncio.create_task(self._write_loop(), name="relay-upstream-writer")
        if connect_now:
            self._wake.set()

    @property
    def refused(self) -> AppError | None:
        """The non-retryable upstream verdict, once there is one (the link stays down)."""
        return self.reconnect.refused

    def send_audio(self, req_id: str, audio: bytes, end: bool) -> None:
        if self._closed:
            return
        refused = self.reconnect.refused
        if refused is not None:
            # Deferred like every failure: the shell is performing effects right now.
            asyncio.get_running_loop().call_soon(self._fail_refused, req_id, refused)
            return
        conn = self._conn
        if conn is not None and not self._ops and not self._writing and self._blocked is None:
            # Nothing ahead of it: write now (see app/relay/eager.py); only a write that blocks
            # on back-pressure is left to the writer task.
            self._sent_ids.add(req_id)
            try:
                blocked = eager.start(conn.send_audio(req_id, audio, end))
            except AppError as failure:
                # Deferred, like the overflow below: the loss's effects come after the ones
                # the shell is performing now.
                asyncio.get_running_loop().call_soon(self._lose, conn, failure)
                return
            if blocked is not None:
                self._blocked = (conn, blocked)
                self._wake.set()
            return
        self._ops.append(_Audio(req_id, audio, end))
        self._queued_bytes += len(audio)
        self._wake.set()
        if self._queued_bytes > self._max_queued_bytes:
            # Deferred: this runs while the shell performs effects, and the loss's own effects
            # must come after those.
            loop = asyncio.get_running_loop()
            if self._conn is not None:
                # Upstream is not taking audio as fast as the client sends it: treat it as lost
                # rather than buffer without bound; the shell aborts and reconnects.
                error = AppError(ErrorCode.CONNECTION_FAILED, "ingress is not accepting audio")
                loop.call_soon(self._lose, self._conn, error)
            else:
                # Waiting out a backoff: the audio of the waiting conversations goes.
                error = AppError(ErrorCode.UPSTREAM_UNAVAILABLE, "upstream is reconnecting")
                loop.call_soon(self._fail_queued, error)

    def interrupt(self, req_id: str) -> None:
        if self._closed:
            return
        kept: deque[_Op] = deque()
        for op in self._ops:
            if op.req_id == req_id:
                if isinstance(op, _Audio):
                    self._queued_bytes -= len(op.audio)
                continue
            kept.append(op)
        self._ops = kept
        # Audio that never left needs no interrupt; a request the server knows about does.
        if req_id in self._sent_ids:
            self._ops.append(_Interrupt(req_id))
            self._wake.set()

    def playback(self, kind: Literal["pause", "resume"], req_id: str) -> None:
        """Pause or resume `req_id`, in order with its audio (nothing to do before it left)."""
        if self._closed or (req_id not in self._sent_ids and not self._pending(req_id)):
            return
        self._ops.append(_Playback(kind, req_id))
        self._wake.set()

    def _pending(self, req_id: str) -> bool:
        return any(isinstance(op, _Audio) and op.req_id == req_id for op in self._ops)

    def forget(self, req_id: str) -> None:
        """The request's conversation is over: no interrupt will be needed for it."""
        self._sent_ids.discard(req_id)

    async def aclose(self) -> None:
        """Stop everything and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ops.clear()
        current = asyncio.current_task()
        for task in (self._writer, self._reader):
            if task is not None and task is not current:
                task.cancel()
        for task in (self._writer, self._reader):
            if task is not None and task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._blocked is not None:  # an eager write the writer never got to
            self._blocked[1].close()
            self._blocked = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)

    # --- internals ---

    def _fail_refused(self, req_id: str, error: AppError) -> None:
        if not self._closed:
            self._on_failed([req_id], error)

    def _fail_queued(self, error: AppError) -> None:
        if self._closed or self._conn is not None or self._queued_bytes <= self._max_queued_bytes:
            return
        ids = self._drop_ops()
        if ids:
            self._on_failed(ids, error)

    def _refuse(self, error: AppError) -> None:
        """Never connect again: report the verdict once (the session ends on it)."""
        self._want_connection = False
        ids = self._drop_ops()
        log.warning("upstream refused the session; not reconnecting", extra=error.log_fields())
        if self._on_refused is not None:
            self._on_refused(error)
        elif ids:
            self._on_failed(ids, error)

    def _drop_ops(self) -> list[str]:
        ids = list(dict.fromkeys(op.req_id for op in self._ops))
        self._ops.clear()
        self._queued_bytes = 0
        return ids

    async def _write_loop(self) -> None:
        while not self._closed:
            if self._blocked is not None:
                written, blocked = self._blocked
                try:
                    await blocked.finish()
                except AppError as error:
                    self._lose(written, error)
                finally:
                    self._blocked = None
                continue
            if self.reconnect.refused is not None or (not self._ops and not self._want_connection):
                self._wake.clear()
                await self._wake.wait()
                continue
            conn = self._conn
            if conn is None:
                wait = self._not_before - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)  # backing off; audio keeps queueing meanwhile
                    continue
                conn = await self._connect()
                if conn is None:
                    continue
            self._want_connection = False
            while self._ops and conn is self._conn:
                op = self._ops.popleft()
                self._writing = True
                try:
                    if isinstance(op, _Audio):
                        self._queued_bytes -= len(op.audio)
                        self._sent_ids.add(op.req_id)
                        await conn.send_audio(op.req_id, op.audio, op.end)
                    elif isinstance(op, _Playback):
                        if op.kind == "pause":
                            await conn.pause(op.req_id)
                        else:
                            await conn.resume(op.req_id)
                    else:
                        self._sent_ids.discard(op.req_id)
                        await conn.interrupt(op.req_id)
                except AppError as error:
                    self._lose(conn, error)
                finally:
                    self._writing = False

    async def _connect(self) -> IngressConnection | None:
        try:
            conn = await self._pool.acquire(self.avatar_id, self.sample_rate)
        except AppError as error:
            self._want_connection = False
            decision = self.reconnect.after_connect_failure(error)
            if decision.action is Action.REFUSE:
                self._refuse(error)
                return None
            self._not_before = asyncio.get_running_loop().time() + decision.delay
            ids = self._drop_ops()
            log.warning(
                "relay upstream connect failed; next attempt in %.2fs",
                decision.delay,
                extra=error.log_fields(),
            )
            if ids:
                self._on_failed(ids, error)
            return None
        if self._closed:
            await self._pool.release(conn)
            return None
        self._conn = conn
        self._sent_ids = set()
        self._delivered = False
        self.connections += 1
        self._reader = asyncio.create_task(self._read_loop(conn), name="relay-upstream-reader")
        return conn

    async def _read_loop(self, conn: IngressConnection) -> None:
        """The connection's end, and what it could not hand over as it came (`_received`)."""
        self._ending = None
        conn.deliver(functools.partial(self._received, conn))
        try:
            while True:
                message = await conn.receive()
                if message is None or not self._received(conn, message):
                    break
        except AppError as error:
            self._ending = self._ending or error
        ending = self._ending or AppError(
            ErrorCode.CONNECTION_CLOSED, "ingress closed the connection"
        )
        self._lose(conn, ending)

    def _received(self, conn: IngressConnection, message: UpstreamMessage) -> bool:
        """One upstream message, as it came. False: the connection is done with (lost)."""
        if conn is not self._conn:
            return False
        error = message.error
        if error is not None:
            if error.close_code is not None:
                # A SERVER_ERROR with a close-contract code decides the connection's fate like
                # the close itself: act on it now.
                self._lose(conn, error)
                return False
            if not message.req_id:
                # A connection-level SERVER_ERROR (idle timeout, ...): the close follows, and
                # this is the reason to report for it.
                self._ending = error
                return True
        elif message.is_animation:
            self._delivered = True
            if message.end:
                self.reconnect.healthy()
        self._on_message(message, time.perf_counter())
        return True

    def _lose(self, conn: IngressConnection, error: AppError) -> None:
        if conn is not self._conn or self._closed:
            return
        self._conn = None
        conn.deliver(None)
        self._sent_ids = set()
        self._drop_ops()
        reader = self._reader
        self._reader = None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        closing = asyncio.create_task(self._pool.release(conn), name="relay-upstream-close")
        self._background.add(closing)
        closing.add_done_callback(self._background.discard)
        decision = self.reconnect.after_loss(error, delivered=self._delivered)
        if decision.action is Action.REFUSE:
            if self._on_refused is not None:
                self._refuse(error)
                return
            self._on_lost(error)  # no one to end the session: abort, but never reconnect
            return
        self._not_before = asyncio.get_running_loop().time() + decision.delay
        reconnect_now = self._on_lost(error)
        if decision.action is Action.ROLL_OVER or reconnect_now:
            self._want_connection = True
            self._wake.set()
