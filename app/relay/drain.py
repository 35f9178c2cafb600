"""Draining: what a session still accepts while its instance is going away.

Pure, like the rest of the core. Conversations in flight go on to their end; the message that
would start a new one is not accepted (neither processed nor acknowledged: the endpoint resends
it to the session's next instance), once per endpoint (`InputRefused`); the session is drained
as soon as nothing is in flight, at once when refused input holds an interrupt.
"""

from __future__ import annotations

from app.errors import ErrorCode
from app.relay.conversations import Role
from app.relay.effects import Effect, InputRefused
from app.relay.endpoint import Endpoint


class Drain:
    __slots__ = ("_drained", "_now", "_refused_from", "active")

    def __init__(self) -> None:
        self.active = False
        self._refused_from: dict[Role, int] = {}  # per endpoint, the first seq not accepted
        self._now = False  # refused input holds an interrupt: hand over at once
        self._drained = False

    def refuses(self, ep: Endpoint, seq: int, starts: bool, out: list[Effect]) -> bool:
        """Not accepting `seq` because it, or a message before it, would start a new
        conversation (`starts`: this message would). Resends of accepted numbers and sequence
        gaps take their usual paths."""
        if seq <= ep.client_seq:
            return False
        if ep.role not in self._refused_from:
            if not starts or seq != ep.client_seq + 1:
                return False
            self._refused_from[ep.role] = seq
            out.append(InputRefused(seq, ErrorCode.GOING_AWAY))
        return True

    def refuses_interrupt(self, ep: Endpoint, seq: int, out: list[Effect]) -> bool:
        """An INTERRUPT behind refused input: not accepted, and nothing more is waited for."""
        if self.refuses(ep, seq, False, out):
            self._now = True
            return True
        return False

    def done(self, *, in_flight: bool, ended: bool) -> bool:
        """True once, when the draining session has nothing left to wait for."""
        if not self.active or self._drained or ended or (in_flight and not self._now):
            return False
        self._drained = True
        return True
