"""The in-process store: one dict, expiry against an injected monotonic clock.

Used when no Redis is configured (a single instance) and in tests. Operations never await, so each
is atomic with respect to the event loop. Expired keys are purged as time passes (a heap ordered by
expiry, at most one entry per key), so memory stays bounded by what is live.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.store.base import RateDecision, check_rules, gcra


@dataclass(slots=True)
class _Entry:
    value: bytes | deque[bytes] | int | float
    expires_at: float | None


class MemoryStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        # (expiry, key) per key with an expiry; a key whose expiry moved later is re-queued
        # when its old slot comes up, so the heap never holds more than one entry per key.
        self._expiries: list[tuple[float, str]] = []
        self._queued: set[str] = set()

    # --- housekeeping ---

    def _purge(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            self._queued.discard(key)
            entry = self._data.get(key)
            if entry is None or entry.expires_at is None:
                continue
            if entry.expires_at <= now:
                del self._data[key]
            else:
                self._schedule(key, entry.expires_at)

    def _schedule(self, key: str, expires_at: float) -> None:
        if key not in self._queued:
            self._queued.add(key)
            heapq.heappush(self._expiries, (expires_at, key))

    def _live(self, key: str) -> _Entry | None:
        now = self._clock()
        self._purge(now)
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._data[key]
            return None
        return entry

    def _set(self, key: str, value: bytes | deque[bytes] | int | float, ttl: float | None) -> None:
        expires_at = None if ttl is None else self._clock() + ttl
        self._data[key] = _Entry(value, expires_at)
        if expires_at is not None:
            self._schedule(key, expires_at)

    def __len__(self) -> int:
        """Live keys (after purging the expired ones)."""
        self._purge(self._clock())
        return len(self._data)

    # --- the Store interface ---

    async def put(
        self, key: str, value: bytes, ttl: float, *, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and self._live(key) is not None:
            return False
        self._set(key, bytes(value), ttl)
        return True

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return entry.value if entry is not None and isinstance(entry.value, bytes) else None

    async def take(self, key: str) -> bytes | None:
        value = await self.get(key)
        if value is not None:
            del self._data[key]
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def hit(self, key: str, limit: int, window: float, now: float) -> RateDecision:
        return (await self.hit_all([(key, limit)], window, now))[0]

    async def hit_all(
        self, rules: Sequence[tuple[str, int]], window: float, now: float
    ) -> list[RateDecision]:
        check_rules(rules, window)
        steps = []
        for key, limit in rules:
            entry = self._live(key)
            tat = entry.value if entry is not None and isinstance(entry.value, float) else None
            steps.append((key, *gcra(tat, limit, window, now)))
        decisions = [decision for _, decision, _ in steps]
        if all(d.allowed for d in decisions):
            for key, _, new_tat in steps:
                self._set(key, new_tat, new_tat - now)
        return decisions

    def _list(self, key: str, create: bool) -> deque[bytes] | None:
        entry = self._live(key)
        if entry is not None and isinstance(entry.value, deque):
            return entry.value
        if not create:
            return None
        items: deque[bytes] = deque()
        self._set(key, items, None)
        return items

    async def push(self, key: str, *values: bytes) -> int:
        items = self._list(key, create=True)
        assert items is not None
        items.extend(bytes(v) for v in values)
        return len(items)

    async def pop(self, key: str) -> bytes | None:
        items = self._list(key, create=False)
        if not items:
            return None
        value = items.popleft()
        if not items:
            del self._data[key]
        return value

    async def peek(self, key: str) -> bytes | None:
        items = self._list(key, create=False)
        return items[0] if items else None

    async def length(self, key: str) -> int:
        items = self._list(key, create=False)
        return len(items) if items is not None else 0

    async def add(self, key: str, delta: int, ttl: float | None = None) -> int:
        entry = self._live(key)
        current = entry.value if entry is not None and isinstance(entry.value, int) else 0
        value = current + delta
        if value <= 0:
            self._data.pop(key, None)
            return value
        if ttl is not None:
            self._set(key, value, ttl)
        elif entry is not None and isinstance(entry.value, int):
            entry.value = value
        else:
            self._set(key, value, None)
        return value

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._data.clear()
        self._expiries.clear()
        self._queued.clear()
