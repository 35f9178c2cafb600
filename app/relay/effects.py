"""What the relay core asks its I/O shell to do. The core returns these; the shell performs them
in order, right away, before feeding the core its next event.

`conn` names the connection an effect is meant for, of either endpoint (the browser's or a
producer's; the shell numbers connections uniquely across both); the shell drops effects for a
connection that is no longer current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.errors import ErrorCode

Outcome = Literal["completed", "interrupted", "aborted"]


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Write one already-encoded binary WebSocket message to a connection (either endpoint)."""

    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close this client connection. The session lives on unless SessionEnded follows."""

    conn: int
    close_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SendUpstream:
    """One CLIENT_AUDIO_INPUT{req_id, audio, end} on the session's ingress connection."""

    req_id: str
    audio: bytes
    end: bool


@dataclass(frozen=True, slots=True)
class InterruptUpstream:
    """CLIENT_INTERRUPT{req_id}: the relay no longer wants this request's frames."""

    req_id: str


@dataclass(frozen=True, slots=True)
class ReleaseUpstream:
    """The session will never use its ingress connection again; close it (the session lingers
    only to tell a reconnecting client that its gap is lost)."""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session is over: release everything. `code` is None for a normal end (BYE)."""

    code: ErrorCode | None


@dataclass(frozen=True, slots=True)
class ConversationEnded:
    """For metrics and logs: a conversation left the browser's stream (or was cancelled), with
    how much of it the browser's stream had been given."""

    req_id: str
    outcome: Outcome
    code: ErrorCode | None = None
    audio_bytes: int = field(default=0, compare=False)
    frames: int = field(default=0, compare=False)
    message: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class InputRefused:
    """The instance is draining and the client's message `seq` would start a new conversation:
    neither it nor anything after it is accepted (or acknowledged) here, so the client keeps it
    and sends it again wherever the session continues. Told once per drain, for logs."""

    seq: int
    code: ErrorCode


@dataclass(frozen=True, slots=True)
class Drained:
    """The instance is draining and no conversation is in flight any more (or the client's
    refused input includes an interrupt): the session can be handed over now."""


Effect = (
    SendToClient
    | CloseClient
    | SendUpstream
    | InterruptUpstream
    | ReleaseUpstream
    | SessionEnded
    | ConversationEnded
    | InputRefused
    | Drained
)
