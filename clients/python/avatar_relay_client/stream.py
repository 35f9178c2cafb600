"""The consumer's event stream: in order, bounded by its producer, closed by an end marker.

The queue itself is unbounded; the link's reader waits for room before it adds the next server
message, so the end marker (and a last `SessionLost`) can always be queued, even on a full stream.
"""

from __future__ import annotations

import asyncio
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class Ended:
    """The stream is over; every reader after this one sees it too."""


ENDED: Final = Ended()


class EventStream(Generic[T]):
    def __init__(self, max_pending: int) -> None:
        self._queue: asyncio.Queue[T | Ended] = asyncio.Queue()
        self._max_pending = max_pending
        self._room = asyncio.Event()

    async def put(self, event: T) -> None:
        """Queue `event` once fewer than `max_pending` are waiting."""
        while self._queue.qsize() >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        self._queue.put_nowait(event)

    def put_now(self, event: T) -> None:
        """Queue `event` past the bound: the stream's last words."""
        self._queue.put_nowait(event)

    def end(self) -> None:
        self._queue.put_nowait(ENDED)

    async def take(self) -> T | Ended:
        item = await self._queue.get()
        self._room.set()
        if isinstance(item, Ended):
            self.end()  # let a second reader end too
        return item
