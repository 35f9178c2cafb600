"""The one small key-value interface every shared piece of state goes through.

Tickets, idempotency records, rate-limit buckets, the token pool and session counters all live
behind `Store`, so one process can keep them in memory and a fleet of instances can share them in
Redis without the services noticing. Every operation is atomic on its own; the interface offers no
multi-step transactions, so services are written to need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict of one rate-limit hit.

    `retry_after` is the number of seconds until the next request would be admitted (0 when this
    one was); `remaining` is how many more requests fit right now.
    """

    allowed: bool
    retry_after: float
    remaining: int


@runtime_checkable
class Store(Protocol):
    """Atomic key-value operations with expiry. Keys are plain strings; values are bytes."""

    async def put(
        self, key: str, value: bytes, ttl: float, *, only_if_absent: bool = False
    ) -> bool:
        """Store `value` for `ttl` seconds. With `only_if_absent`, refuse (False) if a live value
        exists. Returns True when the value was written."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The live value, or None when absent or expired."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Atomically read and delete: of many concurrent callers, exactly one gets the value."""
        ...

    async def delete(self, key: str) -> None: ...

    async def hit(self, key: str, limit: int, window: float, now: float) -> RateDecision:
        """Count one request against `limit` per `window` seconds (a GCRA bucket: bursts of up
        to `limit`, then one request every `window / limit`). `now` is wall-clock seconds so
        that every instance sharing the store agrees on time."""
        ...

    async def hit_all(
        self, rules: Sequence[tuple[str, int]], window: float, now: float
    ) -> list[RateDecision]:
        """Several buckets (key, limit) at once, all or nothing: every bucket is charged when every
        one allows, none otherwise. One decision per rule, as if it were alone; the request may
        proceed when all are allowed. (One round trip where `hit` per bucket would take several.)
        """
        ...

    async def push(self, key: str, *values: bytes) -> int:
        """Append to the tail of a list; returns its new length."""
        ...

    async def pop(self, key: str) -> bytes | None:
        """Atomically remove and return the head of a list (None when empty)."""
        ...

    async def peek(self, key: str) -> bytes | None:
        """The head of a list without removing it."""
        ...

    async def length(self, key: str) -> int: ...

    async def add(self, key: str, delta: int, ttl: float | None = None) -> int:
        """Add `delta` to an integer counter and return the new value. With `ttl` the counter's
        expiry is (re)set. A counter that drops to zero or below is removed, so idle counters
        never linger."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def aclose(self) -> None: ...


def check_rules(rules: Sequence[tuple[str, int]], window: float) -> None:
    if window <= 0 or any(limit < 1 for _, limit in rules):
        raise ValueError("rate limits need a positive window and limits of at least 1")


def gcra(tat: float | None, limit: int, window: float, now: float) -> tuple[RateDecision, float]:
    """One step of the generic cell rate algorithm, shared by the in-memory store and the tests.

    `tat` is the stored "theoretical arrival time" (None when the bucket is new). Returns the
    decision and the new TAT to store when the request was allowed.
    """
    interval = window / limit
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    allow_at = new_tat - window
    # A millisecond of slack: float sums of `interval` must not refuse the limit-th request.
    if allow_at - now > 1e-3:
        return RateDecision(False, allow_at - now, 0), start
    remaining = int((window - (new_tat - now)) / interval + 1e-6)
    return RateDecision(True, 0.0, max(0, remaining)), new_tat
