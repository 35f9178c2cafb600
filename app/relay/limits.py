"""A relay session's limits (from the settings) and its counters, for the core and its shell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True, slots=True)
class RelayLimits:
    max_message_bytes: int = 256 * 1024
    replay_buffer_messages: int = 4096
    replay_buffer_bytes: int = 16 * 1024 * 1024
    resume_window: float = 30.0
    idle_timeout: float = 120.0
    max_session: float = 3600.0
    ping_interval: float = 15.0
    hello_timeout: float = 10.0
    # Acknowledge client chunks in batches: an ACK per chunk would double the messages, and
    # every ACK is a message and a timer wake-up per session. 25 chunks are a second of 40 ms
    # audio; what waits for an ACK is only the client's resend buffer (bench/README.md).
    ack_every: int = 25
    ack_delay: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayLimits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            replay_buffer_messages=settings.replay_buffer_messages,
            replay_buffer_bytes=settings.replay_buffer_bytes,
            resume_window=float(settings.resume_window_seconds),
            idle_timeout=settings.idle_timeout_seconds,
            max_session=settings.max_session_seconds,
        )


@dataclass(slots=True)
class RelayStats:
    """Counters for metrics and tests; the shell reads them, the core only increments."""

    conversations_started: int = 0
    client_duplicates: int = 0
    frames_dropped: int = 0
    resumes: int = 0  # of either endpoint
    replayed_messages: int = 0
    producer_events: int = 0
