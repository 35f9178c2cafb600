"""The client's sequenced messages, kept until the server acknowledges them (no I/O).

Each message gets the next client seq and stays here until an ACK (or a greeting's `clientAck`)
covers it. Per connection the outbox knows how far it has written; after a reconnect the greeting
says what the server accepted, and everything after that is written again, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Pending:
    """A client message kept until the server acknowledges its seq."""

    seq: int
    data: bytes


class Outbox:
    def __init__(self) -> None:
        self._next_seq = 1
        self._pending: deque[Pending] = deque()
        self.bytes = 0  # held, not yet acknowledged
        self._sent_upto = 0  # highest seq written on the current connection
        self._written_max = 0  # highest seq ever written

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, build: Callable[[int], bytes]) -> int:
        """Give the next seq to `build` and hold its bytes; returns the seq."""
        seq = self._next_seq
        self._next_seq += 1
        data = build(seq)
        self._pending.append(Pending(seq, data))
        self.bytes += len(data)
        return seq

    def ack(self, seq: int) -> None:
        """The server has accepted everything up to `seq`: forget it."""
        while self._pending and self._pending[0].seq <= seq:
            self.bytes -= len(self._pending.popleft().data)
        self._sent_upto = max(self._sent_upto, seq)

    def reconnected(self, client_ack: int) -> None:
        """A new connection whose greeting says the server has up to `client_ack`: what it
        accepted on earlier connections is not written again; everything after it is."""
        self.ack(client_ack)
        self._sent_upto = client_ack

    def next_unwritten(self) -> Pending | None:
        """The first held message not yet written on the current connection."""
        if not self._pending:
            return None
        index = self._sent_upto + 1 - self._pending[0].seq
        if index >= len(self._pending):
            return None
        return self._pending[max(0, index)]

    def written(self, item: Pending, *, current: bool) -> bool:
        """`item` went out (on the current connection, unless a drop replaced it meanwhile).
        True when it had been written before: a resend."""
        resent = item.seq <= self._written_max
        self._written_max = max(self._written_max, item.seq)
        if current:
            self._sent_upto = item.seq
        return resent
