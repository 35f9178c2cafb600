"""Event-loop lag: how late the loop runs a callback that was due.

One process serves every session on one event loop, so a loop kept busy delays every message of
every session by the same amount; the relay's per-message hop (`avatar_relay_hop_seconds`) cannot
see that wait, since it starts when a message is already in hand. A timer due every
`LAG_INTERVAL_SECONDS` reports how late it fired: what any message arriving at that moment waited
at most. A plain callback (no task) costs a few microseconds per firing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

LAG_INTERVAL_SECONDS: Final = 0.05


class LoopLagMonitor:
    """Calls `observe(lag_seconds)` each interval, from the running loop, until stopped."""

    def __init__(
        self, observe: Callable[[float], None], interval: float = LAG_INTERVAL_SECONDS
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._observe = observe
        self._interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._handle is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._due = loop.time() + self._interval
        self._handle = loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self._observe(max(0.0, now - self._due))
        self._due = now + self._interval
        self._handle = loop.call_at(self._due, self._fire)
