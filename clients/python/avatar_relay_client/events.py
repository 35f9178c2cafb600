"""The link's own events in the consumer's stream, next to the protocol's sequenced messages.

`StateChange` says the socket went down or came back; `SessionLost` is the last event of a
session that cannot continue but whose setup is fine (a new session would work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from avatar_relay_client.errors import ErrorCode

State = Literal["connected", "disconnected", "resumed"]


@dataclass(frozen=True, slots=True)
class StateChange:
    """The socket went down or came back. `resumed`: a reconnect continued the session."""

    state: State
    reconnects: int


# Endings after which this session cannot continue but a new one would work: the link puts one
# `SessionLost` event in the stream for them, right before the stream ends with the error.
SESSION_LOST: Final = frozenset(
    {
        ErrorCode.SESSION_NOT_FOUND,
        ErrorCode.GOING_AWAY,
        ErrorCode.RESUME_FAILED,
        ErrorCode.SESSION_CLOSED,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.SESSION_DURATION_EXCEEDED,
    }
)


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The session is over and cannot be resumed, but nothing is wrong with the setup (its
    instance died and its state was not kept, it expired, the server shut down without handing
    it over, ...). `action` says what to do: "newSession", create a new session. The last event
    of the stream, which then raises the RelayError with the same code."""

    code: ErrorCode
    message: str
    action: Literal["newSession"] = "newSession"
