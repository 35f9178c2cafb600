"""One request on an ingress connection as the emulator plays it: audio received, frames sent,
and playback control (pause / resume, October 2026, behind the `playback_control` capability).

Pause and resume are queued on the request by the receiver and applied by the frame sender at
its next decision point, so a SERVER_PLAYBACK_STATE always follows the last frame sent before it
and its `played_ms` counts exactly the frames before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from app.emulator.ogg import OggGranules
from app.emulator.wire import FRAME_MS, FRAME_SECONDS

# What the emulator declares in SERVER_CONFIRM_SESSION.capabilities when playback control is on:
# pause/resume work, and playback states are reported.
PLAYBACK_CAPABILITIES = ("playback_control", "playback_state")

# `reason` of an INTERRUPTED state when a pause was held past the limit.
PAUSE_TIMEOUT_REASON = "pause_timeout"
# `reason` of an INTERRUPTED state after a CLIENT_INTERRUPT (egress mode).
EXPLICIT_REASON = "explicit"


class Control(Enum):
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(eq=False)
class Request:
    req_id: str
    t0: float
    """When its first audio arrived (loop time); frame k is due at t0 + k * 40 ms / speed."""
    units: int = 0
    """Audio received: PCM bytes, or Opus samples at 48 kHz."""
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ogg: OggGranules | None = None
    frames_sent: int = 0
    controls: deque[Control] = field(default_factory=deque)
    paused_since: float | None = None
    announced: bool = False
    """Whether a playback state has been sent for it yet."""
    interrupted: bool = False
    """Egress mode: a CLIENT_INTERRUPT stopped its playout."""

    def update(self) -> None:
        self.changed.set()

    def control(self, kind: Control) -> None:
        self.controls.append(kind)
        self.update()

    def due(self, index: int, speed: float) -> float:
        return self.t0 + index * FRAME_SECONDS / speed

    @property
    def played_ms(self) -> int:
        """Content played so far: 40 ms per frame sent (it does not advance while paused)."""
        return self.frames_sent * FRAME_MS

    def apply(self, kind: Control, now: float) -> None:
        """Pause, or resume where it stopped (pacing shifts by the time spent paused)."""
        if kind is Control.PAUSE:
            if self.paused_since is None:
                self.paused_since = now
        elif self.paused_since is not None:
            self.t0 += now - self.paused_since
            self.paused_since = None
