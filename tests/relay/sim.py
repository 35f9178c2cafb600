"""Helpers for driving the relay core in tests: deterministic ids and effect decoding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.relay.conversations import AudioRouting
from app.relay.effects import Effect, SendToClient
from app.relay.session import RelayLimits, RelaySession
from avatar_relay_client import browser_protocol as p


class Ids:
    """Conversation ids in the upstream request-id shape, deterministic per instance."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"20260101000000_{self.count:012d}"


def cid(n: int) -> str:
    return f"20260101000000_{n:012d}"


def new_session(
    now: float = 0.0, routing: AudioRouting | None = None, **limits: Any
) -> RelaySession:
    return RelaySession(
        "rs_test",
        sample_rate=16000,
        limits=RelayLimits(**limits),
        new_conversation_id=Ids(),
        now=now,
        routing=routing,
    )


def to_client(effects: Iterable[Effect], conn: int | None = None) -> list[p.ServerMessage]:
    """Decode what the effects would write to the client (optionally to one connection)."""
    return [
        p.decode_server(e.data)
        for e in effects
        if isinstance(e, SendToClient) and (conn is None or e.conn == conn)
    ]


def of_type(effects: Iterable[Effect], kind: type[Any]) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def connect(
    session: RelaySession, conn: int = 1, last_seq: int = 0, now: float = 0.0
) -> list[Effect]:
    effects = session.on_client_connected(conn, now)
    return effects + session.on_client_message(conn, p.Hello(last_seq), now)


def audio(seq: int, pcm: bytes = b"\x01\x00", end: bool = False) -> p.ClientAudio:
    return p.ClientAudio(seq, pcm, end)
