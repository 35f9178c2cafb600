"""One RTC session's rules, sans I/O: the typed input and the lifecycle it reports.

The avatar speaks **requests**, one per utterance. The session's input (today the REST tests,
next the server-side producer protocol) is a small set of values fed to `RtcCore`:

- `audio(pcm)`: PCM for the current utterance; the first chunk after an END opens a new request
  with a fresh request id, which stays the same until END;
- `end()`: the utterance is complete (its last audio may be empty);
- `interrupt()`: stop the latest request (the one taking audio, else the last one playing);
- `pause()` / `resume()`: hold and continue the latest request's playout; refused with
  `playbackControlUnavailable` unless the ingress declared `playback_control`.

Upstream, in LiveKit egress mode, the ingress reports each request's playout as animation
messages without animation data: the first marks the start, `end=true` marks the playout
drained, and an `end` can come more than once. SERVER_PLAYBACK_STATE messages report pauses,
resumes and interruptions (a held pause can time out). The core turns all of it into one clean
lifecycle per request: `started` (audio accepted), `playing`, `paused` / `resumed`, and exactly
one ending: `ended`, `interrupted` or `aborted`. Duplicates and signals for requests that already
ended are dropped and counted.

Every call returns the effects to perform, in order: `Upstream` operations for the ingress link
and `Event`s for the session's listener. Time is passed in; `deadline()` says when `tick()` is
next due (the idle and maximum-duration limits).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from app.errors import AppError, ErrorCode

# Request ids that ended, kept to recognise their late or repeated signals.
ENDED_MEMORY: Final = 64


class Op(StrEnum):
    AUDIO = "audio"
    INTERRUPT = "interrupt"
    PAUSE = "pause"
    RESUME = "resume"
    FORGET = "forget"  # the request is over: the link needs no interrupt for it any more


@dataclass(frozen=True, slots=True)
class Upstream:
    """An operation for the ingress link."""

    op: Op
    req_id: str
    audio: bytes = b""
    end: bool = False


class Kind(StrEnum):
    STARTED = "started"  # a request took its first audio
    PLAYING = "playing"  # the avatar started playing it in the room
    PAUSED = "paused"
    RESUMED = "resumed"
    ENDED = "ended"  # its playout drained
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"  # lost with the ingress connection, or failed upstream
    CLOSED = "closed"  # the session ended (`code` says why; None: closed by its owner)


@dataclass(frozen=True, slots=True)
class Event:
    """A lifecycle event. `req_id` is empty for `closed`."""

    kind: Kind
    req_id: str = ""
    code: ErrorCode | None = None
    played_ms: int | None = None
    reason: str = ""


Effect = Upstream | Event


class Phase(StrEnum):
    QUEUED = "queued"  # audio accepted, not playing yet
    PLAYING = "playing"
    PAUSED = "paused"


@dataclass(slots=True)
class Limits:
    idle_seconds: float
    max_seconds: float


class RtcCore:
    """The rules of one RTC session; see the module docstring."""

    def __init__(self, new_id: Callable[[], str], limits: Limits, now: float) -> None:
        self._new_id = new_id
        self.limits = limits
        self.started_at = now
        self._last_activity = now
        self.playback_control = False
        self.open: str | None = None  # the request taking audio
        self._live: OrderedDict[str, Phase] = OrderedDict()  # not ended yet, oldest first
        self._ended: OrderedDict[str, Kind] = OrderedDict()
        self.is_closed = False
        self.close_code: ErrorCode | None = None
        self.duplicates = 0  # signals dropped: repeated ends, signals of ended requests
        self.audio_bytes = 0

    # --- queries ---

    @property
    def latest(self) -> str | None:
        """The request interrupt, pause and resume act on."""
        if self.open is not None:
            return self.open
        return next(reversed(self._live), None)

    def phase(self, req_id: str) -> Phase | Kind | None:
        """A live request's phase, an ended one's ending, or None if unknown."""
        return self._live.get(req_id) or self._ended.get(req_id)

    def deadline(self) -> float:
        limits = self.limits
        return min(self._last_activity + limits.idle_seconds, self.started_at + limits.max_seconds)

    # --- the session's input ---

    def audio(self, pcm: bytes, now: float, *, end: bool = False) -> list[Effect]:
        self._refuse_if_closed()
        if len(pcm) % 2:
            raise AppError(ErrorCode.BAD_AUDIO, "PCM s16le audio has an even number of bytes")
        self._last_activity = now
        out: list[Effect] = []
        req_id = self.open
        if req_id is None:
            if not pcm and end:
                return out  # END with nothing open: nothing to end
            req_id = self._new_id()
            self.open = req_id
            self._live[req_id] = Phase.QUEUED
            out.append(Event(Kind.STARTED, req_id))
        self.audio_bytes += len(pcm)
        if end:
            self.open = None
        out.append(Upstream(Op.AUDIO, req_id, pcm, end))
        return out

    def end(self, now: float) -> list[Effect]:
        return self.audio(b"", now, end=True)

    def interrupt(self, now: float) -> list[Effect]:
        self._refuse_if_closed()
        self._last_activity = now
        req_id = self.latest
        if req_id is None:
            return []
        if self.open == req_id:
            self.open = None
        return [Upstream(Op.INTERRUPT, req_id), *self._finish(req_id, Kind.INTERRUPTED)]

    def pause(self, now: float) -> list[Effect]:
        return self._control(Op.PAUSE, now)

    def resume(self, now: float) -> list[Effect]:
        return self._control(Op.RESUME, now)

    def _control(self, op: Op, now: float) -> list[Effect]:
        self._refuse_if_closed()
        if not self.playback_control:
            raise AppError(
                ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE,
                "the avatar service did not declare playback_control: pause and resume"
                " are not available",
            )
        self._last_activity = now
        req_id = self.latest
        return [] if req_id is None else [Upstream(op, req_id)]

    def close(self, code: ErrorCode | None = None) -> list[Effect]:
        """End the session: every live request is aborted, then `closed`."""
        if self.is_closed:
            return []
        out: list[Effect] = []
        for req_id in list(self._live):
            out += self._finish(req_id, Kind.ABORTED, code or ErrorCode.SESSION_CLOSED)
        self.open = None
        self.is_closed = True
        self.close_code = code
        out.append(Event(Kind.CLOSED, code=code))
        return out

    def tick(self, now: float) -> list[Effect]:
        if self.is_closed:
            return []
        if now >= self.started_at + self.limits.max_seconds:
            return self.close(ErrorCode.SESSION_DURATION_EXCEEDED)
        if now >= self._last_activity + self.limits.idle_seconds:
            return self.close(ErrorCode.IDLE_TIMEOUT)
        return []

    # --- upstream ---

    def connected(self, playback_control: bool) -> list[Effect]:
        self.playback_control = playback_control
        return []

    def lost(self, code: ErrorCode) -> list[Effect]:
        """The ingress connection is gone (a new one, if any, knows none of its requests)."""
        out: list[Effect] = []
        for req_id in list(self._live):
            out += self._finish(req_id, Kind.ABORTED, code)
        self.open = None
        return out

    def signal(self, req_id: str, end: bool, now: float) -> list[Effect]:
        """An egress playback signal (an animation message) for `req_id`."""
        phase = self._live.get(req_id)
        if phase is None:
            self.duplicates += 1
            return []
        self._last_activity = now
        out: list[Effect] = []
        if phase is Phase.QUEUED:
            self._live[req_id] = Phase.PLAYING
            out.append(Event(Kind.PLAYING, req_id))
        if end and req_id != self.open:
            out += self._finish(req_id, Kind.ENDED)
        return out

    def playback(
        self, req_id: str, state: str, played_ms: int, reason: str, now: float
    ) -> list[Effect]:
        """A SERVER_PLAYBACK_STATE for `req_id`."""
        phase = self._live.get(req_id)
        if phase is None:
            self.duplicates += 1
            return []
        self._last_activity = now
        if state == "playing":
            if phase is Phase.PAUSED:
                self._live[req_id] = Phase.PLAYING
                return [Event(Kind.RESUMED, req_id, played_ms=played_ms)]
            return self.signal(req_id, False, now)
        if state == "paused" and phase is not Phase.PAUSED:
            self._live[req_id] = Phase.PAUSED
            return [Event(Kind.PAUSED, req_id, played_ms=played_ms)]
        if state == "ended" and req_id != self.open:
            return self._finish(req_id, Kind.ENDED, played_ms=played_ms)
        if state == "interrupted":
            # The server gave the request up (a held pause timed out, or it was preempted).
            if self.open == req_id:
                self.open = None
            return self._finish(req_id, Kind.INTERRUPTED, played_ms=played_ms, reason=reason)
        return []

    def failed(self, req_id: str, code: ErrorCode) -> list[Effect]:
        """A SERVER_ERROR for `req_id`: the request is lost, the connection stays."""
        if req_id not in self._live:
            return []
        if self.open == req_id:
            self.open = None
        return self._finish(req_id, Kind.ABORTED, code)

    # --- internals ---

    def _refuse_if_closed(self) -> None:
        if self.is_closed:
            raise AppError(ErrorCode.SESSION_CLOSED, "the RTC session has ended")

    def _finish(
        self,
        req_id: str,
        kind: Kind,
        code: ErrorCode | None = None,
        *,
        played_ms: int | None = None,
        reason: str = "",
    ) -> list[Effect]:
        if self._live.pop(req_id, None) is None:
            return []
        self._ended[req_id] = kind
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        return [
            Upstream(Op.FORGET, req_id),
            Event(kind, req_id, code=code, played_ms=played_ms, reason=reason),
        ]
