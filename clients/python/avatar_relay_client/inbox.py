"""The server's sequenced messages on their way to the consumer: exactly once, in order (no I/O).

The receiving counterpart of `outbox`. The inbox knows the highest server seq received (what the
next `HELLO{lastSeq}` carries, so the server replays exactly the gap) and the highest the link
acknowledged; a message out of sequence is refused, not queued, and the link resumes to get the
gap. What it accepts goes to the consumer's bounded `EventStream`, with the link's own state
changes and what the client injects itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic

from avatar_relay_client.events import SessionLost, StateChange
from avatar_relay_client.stream import Ended, EventStream
from avatar_relay_client.wire import E


class Inbox(Generic[E]):
    def __init__(
        self,
        max_pending: int,
        *,
        on_delivery: Callable[[E], None] | None = None,
        expand: Callable[[E], Sequence[E]] | None = None,
    ) -> None:
        self.last_seq = 0  # highest contiguous server seq received
        self.acked = 0  # highest server seq we acknowledged
        self._stream: EventStream[E | StateChange | SessionLost] = EventStream(max_pending)
        # Called as a sequenced message is accepted (exactly once, in order), before the
        # consumer sees it.
        self._on_delivery = on_delivery
        # What the consumer gets for a sequenced message, when that is not the message itself.
        self._expand = expand

    @property
    def unacked(self) -> int:
        """Server messages received and not acknowledged yet."""
        return self.last_seq - self.acked

    async def accept(self, seq: int, event: E) -> bool:
        """Take the server's message `seq` (waiting for room); False, and nothing taken, when it
        is not the next one."""
        if seq != self.last_seq + 1:
            return False
        self.last_seq = seq
        if self._on_delivery is not None:
            self._on_delivery(event)
        if self._expand is None:
            await self._stream.put(event)
        else:
            await self._put_all(self._expand(event))
        return True

    async def _put_all(self, events: Sequence[E]) -> None:
        """Queue them together: nothing `inject`ed can land between them."""
        if events:
            await self._stream.put(events[0])
            for event in events[1:]:
                self._stream.put_now(event)

    def inject(self, events: Sequence[E]) -> None:
        """Give the consumer events the client made itself, after everything queued so far."""
        for event in events:
            self._stream.put_now(event)

    async def changed(self, change: StateChange) -> None:
        await self._stream.put(change)

    def lost(self, lost: SessionLost) -> None:
        """The session's last words: queued past the bound."""
        self._stream.put_now(lost)

    def end(self) -> None:
        self._stream.end()

    async def take(self) -> E | StateChange | SessionLost | Ended:
        return await self._stream.take()
