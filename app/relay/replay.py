"""The replay buffer: every sequenced server message, kept until the client acknowledges it.

Sequence numbers are implicit: the buffer holds `acked + 1 .. last_seq` contiguously, so storing
the encoded bytes is enough and trimming is a popleft.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReplayBuffer:
    __slots__ = ("_acked", "_bytes", "_items")

    def __init__(self) -> None:
        self._items: deque[bytes] = deque()
        self._acked = 0
        self._bytes = 0

    @property
    def acked(self) -> int:
        """Highest sequence number the client has confirmed (0 = none)."""
        return self._acked

    @property
    def last_seq(self) -> int:
        """Highest sequence number assigned so far (0 = none)."""
        return self._acked + len(self._items)

    @property
    def next_seq(self) -> int:
        return self._acked + len(self._items) + 1

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def append(self, data: bytes) -> None:
        """Store the message that carries `next_seq` (the caller encoded it with that number)."""
        self._items.append(data)
        self._bytes += len(data)

    def ack(self, seq: int) -> None:
        """Forget everything up to and including `seq`; `seq` must not exceed `last_seq`."""
        items = self._items
        while self._acked < seq:
            self._bytes -= len(items.popleft())
            self._acked += 1

    def after(self, seq: int) -> Iterator[bytes]:
        """The kept messages with a sequence number above `seq` (which must be >= `acked`)."""
        skip = seq - self._acked
        for index, data in enumerate(self._items):
            if index >= skip:
                yield data

    def restore(self, acked: int, items: list[bytes]) -> None:
        """Take a saved buffer: `items` carry seq `acked + 1` onwards."""
        self._acked = acked
        self._items = deque(items)
        self._bytes = sum(map(len, items))

    def skip_to(self, seq: int) -> None:
        """The client already has everything up to `seq`, beyond `last_seq` (sent by an instance
        that died before saving it): numbering goes on after it."""
        self.clear()
        self._acked = max(self._acked, seq)

    def clear(self) -> None:
        """Drop every message without acknowledging it (the session can no longer resume)."""
        # Numbering continues: the dropped numbers are gone, not reusable.
        self._acked += len(self._items)
        self._items.clear()
        self._bytes = 0
