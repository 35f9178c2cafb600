"""Upstream for relay sessions: the ingress connection each session owns, and a warm pool.

`UpstreamPool` hands out confirmed ingress connections. With `UPSTREAM_POOL_SIZE` > 0 it keeps
that many pre-connected per (avatar, sample rate) that has been asked for (the default pair from
the start), so a new relay session skips token + connect + handshake. Pooled connections are
recycled before upstream would close them for inactivity (`POOL_MAX_IDLE_SECONDS`); each costs
one session token per recycle.

`UpstreamLink` is one relay session's side of it: a queue of operations (audio chunks and
interrupts) written in order by one writer task, a reader task per connection handing messages
back, and (re)connection on demand. It never talks to the session core itself: it reports through
three callbacks, and the shell turns those into core events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.relay import eager
from app.spatialreal.client import IngressClient, IngressConnection, UpstreamMessage

log = logging.getLogger("avatar_relay.upstream")

# The emulator (and, as far as is known, SpatialReal) closes an ingress session after 60 s
# without audio; hand out only connections well inside that.
POOL_MAX_IDLE_SECONDS: Final = 40.0
# After a failed refill, wait before trying again (grows to the maximum while failures last).
POOL_RETRY_SECONDS: Final = 1.0
POOL_RETRY_MAX_SECONDS: Final = 30.0
# Distinct (avatar, rate) pairs the pool keeps warm; the allow-list is small in practice.
POOL_MAX_KEYS: Final = 16

PoolKey = tuple[str, int]


class ConnectionTracker:
    """Counts open ingress connections in the gauge, each exactly once."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._open: set[int] = set()

    def opened(self, conn: IngressConnection) -> None:
        if id(conn) not in self._open:
            self._open.add(id(conn))
            if self._metrics is not None:
                self._metrics.upstream_connections_active.inc()

    async def close(self, conn: IngressConnection) -> None:
        if id(conn) in self._open:
            self._open.discard(id(conn))
            if self._metrics is not None:
                self._metrics.upstream_connections_active.dec()
        await conn.close()


@dataclass(slots=True)
class _Pooled:
    conn: IngressConnection
    opened_at: float


class UpstreamPool:
    """Ingress connections on demand, from a warm pool when one is configured."""

    def __init__(
        self,
        ingress: IngressClient,
        *,
        size: int = 0,
        metrics: Metrics | None = None,
        default_key: PoolKey | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ingress = ingress
        self.size = size
        self.tracker = ConnectionTracker(metrics)
        self._clock = clock
        self._ready: dict[PoolKey, deque[_Pooled]] = {}
        self._refillers: dict[PoolKey, asyncio.Task[None]] = {}
        self._wake: dict[PoolKey, asyncio.Event] = {}
        self._default_key = default_key
        self._closed = False
        self.hits = 0
        self.misses = 0

    def start(self) -> None:
        if self.size > 0 and self._default_key is not None:
            self._watch(self._default_key)

    def ready(self, avatar_id: str, sample_rate: int) -> int:
        """Pooled connections waiting for (avatar, rate)."""
        return len(self._ready.get((avatar_id, sample_rate), ()))

    async def acquire(self, avatar_id: str, sample_rate: int) -> IngressConnection:
        """A confirmed connection: a fresh pooled one if available, else a new one.
        Raises AppError (the ingress client's codes) when connecting fails."""
        key = (avatar_id, sample_rate)
        if self.size > 0:
            self._watch(key)
            ready = self._ready.get(key)
            now = self._clock()
            while ready:
                item = ready.popleft()
                self._wake[key].set()
                if not item.conn.closed and now - item.opened_at < POOL_MAX_IDLE_SECONDS:
                    self.hits += 1
                    return item.conn
                await self.tracker.close(item.conn)
            self.misses += 1
        conn = await self._ingress.connect(avatar_id, sample_rate)
        self.tracker.opened(conn)
        return conn

    async def release(self, conn: IngressConnection) -> None:
        """Close a connection handed out by `acquire` (used connections are never pooled again:
        upstream requests may still be in flight on them)."""
        await self.tracker.close(conn)

    def _watch(self, key: PoolKey) -> None:
        if self._closed or key in self._refillers or len(self._refillers) >= POOL_MAX_KEYS:
            return
        self._ready.setdefault(key, deque())
        self._wake[key] = asyncio.Event()
        self._refillers[key] = asyncio.create_task(self._refill(key), name=f"upstream-pool-{key}")

    async def _refill(self, key: PoolKey) -> None:
        ready = self._ready[key]
        wake = self._wake[key]
        backoff = POOL_RETRY_SECONDS
        while not self._closed:
            now = self._clock()
            while ready and (
                ready[0].conn.closed or now - ready[0].opened_at >= POOL_MAX_IDLE_SECONDS
            ):
                await self.tracker.close(ready.popleft().conn)
            if len(ready) < self.size:
                try:
                    conn = await self._ingress.connect(*key)
                except Exception as error:
                    code = error.code.value if isinstance(error, AppError) else "internalError"
                    log.warning("upstream pool refill failed", extra={"error_code": code})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, POOL_RETRY_MAX_SECONDS)
                    continue
                backoff = POOL_RETRY_SECONDS
                self.tracker.opened(conn)
                ready.append(_Pooled(conn, self._clock()))
                continue
            # Full: sleep until something is taken or the oldest needs recycling.
            wake.clear()
            wait = max(0.05, ready[0].opened_at + POOL_MAX_IDLE_SECONDS - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._refillers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for ready in self._ready.values():
            while ready:
                await self.tracker.close(ready.popleft().conn)


# --- one session's upstream ---


@dataclass(frozen=True, slots=True)
class _Audio:
    req_id: str
    audio: bytes
    end: bool


@dataclass(frozen=True, slots=True)
class _Interrupt:
    req_id: str


_Op = _Audio | _Interrupt

OnMessage = Callable[[UpstreamMessage, float], None]
OnLost = Callable[[AppError], bool]
OnFailed = Callable[[list[str], AppError], None]


class UpstreamLink:
    """One relay session's ingress connection: ordered writes, reads, (re)connection.

    - `on_message(message, received_at)`: every message read (`received_at` is perf_counter).
    - `on_lost(error) -> reconnect_now`: the connection failed or closed; queued operations were
      dropped (their conversations are the ones the loss aborts). Return True to reconnect at
      once rather than when the next audio comes.
    - `on_failed(req_ids, error)`: connecting failed; the queued operations of those requests were
      dropped.

    Callbacks run synchronously in the link's tasks; they must not await.
    """

    def __init__(
        self,
        pool: UpstreamPool,
        avatar_id: str,
        sample_rate: int,
        *,
        on_message: OnMessage,
        on_lost: OnLost,
        on_failed: OnFailed,
        max_queued_bytes: int,
    ) -> None:
        self._pool = pool
        self.avatar_id = avatar_id
        self.sample_rate = sample_rate
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_failed = on_failed
        self._max_queued_bytes = max_queued_bytes
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

    def send_audio(self, req_id: str, audio: bytes, end: bool) -> None:
        if self._closed:
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
        if self._queued_bytes > self._max_queued_bytes and self._conn is not None:
            # Upstream is not taking audio as fast as the client sends it: treat it as lost
            # rather than buffer without bound; the shell aborts and reconnects.
            # Deferred: this runs while the shell performs effects, and the loss's own effects
            # must come after those.
            error = AppError(ErrorCode.CONNECTION_FAILED, "ingress is not accepting audio")
            asyncio.get_running_loop().call_soon(self._lose, self._conn, error)

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
            if not self._ops and not self._want_connection:
                self._wake.clear()
                await self._wake.wait()
                continue
            conn = self._conn
            if conn is None:
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
            ids = self._drop_ops()
            log.warning("relay upstream connect failed", extra=error.log_fields())
            if ids:
                self._on_failed(ids, error)
            return None
        if self._closed:
            await self._pool.release(conn)
            return None
        self._conn = conn
        self._sent_ids = set()
        self.connections += 1
        self._reader = asyncio.create_task(self._read_loop(conn), name="relay-upstream-reader")
        return conn

    async def _read_loop(self, conn: IngressConnection) -> None:
        pending_error: AppError | None = None
        on_message = self._on_message
        clock = time.perf_counter
        try:
            while True:
                message = await conn.receive()
                if message is None:
                    break
                if message.error is not None and not message.req_id:
                    # A connection-level SERVER_ERROR (idle timeout, ...): the close follows,
                    # and this is the reason to report for it.
                    pending_error = message.error
                    continue
                on_message(message, clock())
        except AppError as error:
            pending_error = pending_error or error
        if pending_error is None:
            pending_error = AppError(ErrorCode.CONNECTION_CLOSED, "ingress closed the connection")
        self._lose(conn, pending_error)

    def _lose(self, conn: IngressConnection, error: AppError) -> None:
        if conn is not self._conn or self._closed:
            return
        self._conn = None
        self._sent_ids = set()
        self._drop_ops()
        reader = self._reader
        self._reader = None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        closing = asyncio.create_task(self._pool.release(conn), name="relay-upstream-close")
        self._background.add(closing)
        closing.add_done_callback(self._background.discard)
        if self._on_lost(error):
            self._want_connection = True
            self._wake.set()
