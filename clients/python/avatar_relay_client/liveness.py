"""When a quiet socket is presumed dead (no I/O): a dead network path sends no FIN.

After a third of `timeout` without a message the link PINGs (once per silence; the server's
PONG, or anything else, ends the silence); after `timeout` it gives the socket up and resumes.
"""

from __future__ import annotations

from typing import Final, Literal

MAX_NONCE: Final = 0xFFFF_FFFF


class Liveness:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last_rx = 0.0  # loop time of the last message from the server
        self._pinged_at = 0.0
        self._nonce = 0

    def heard(self, now: float) -> None:
        self.last_rx = now

    def check(self, now: float) -> Literal["ping", "drop"] | None:
        """What to do about the silence so far: PING, drop the socket, or nothing yet."""
        silent = now - self.last_rx
        if silent > self.timeout:
            return "drop"
        if silent > self.timeout / 3 and self._pinged_at < self.last_rx:
            self._pinged_at = now
            return "ping"
        return None

    def next_nonce(self) -> int:
        self._nonce = (self._nonce + 1) & MAX_NONCE
        return self._nonce
