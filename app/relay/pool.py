"""The warm pool of upstream connections for relay sessions.

`UpstreamPool` hands out confirmed ingress connections. With `UPSTREAM_POOL_SIZE` > 0 it keeps
that many pre-connected per (avatar, sample rate) that has been asked for (the default pair from
the start), so a new relay session skips token + connect + handshake. Pooled connections are
recycled before upstream would close them for inactivity (`POOL_MAX_IDLE_SECONDS`); each costs
one session token per recycle. A refill that upstream refuses with a non-retryable close code
waits the longest backoff before asking again.
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

from app.errors import AppError
from app.metrics import Metrics
from app.relay.reconnect import ReconnectPolicy, refuses
from app.spatialreal.client import IngressClient
from app.spatialreal.connection import IngressConnection

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
        policy: ReconnectPolicy | None = None,
    ) -> None:
        self._ingress = ingress
        self.size = size
        # How the sessions it serves reconnect (the pool's own refills back off on their own).
        self.policy = policy or ReconnectPolicy()
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
                    if isinstance(error, AppError) and refuses(error):
                        # Upstream said retrying cannot help: ask again only rarely.
                        backoff = POOL_RETRY_MAX_SECONDS
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
