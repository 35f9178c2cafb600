"""A relay session's record in the store: what every instance sharing the store knows of it.

`relay:session:<id>` holds the session's principal, avatar, sample rate, audio routing and state
(new, live, closed), so that any instance can issue tickets for it (the browser's, and a
producer's when its routing accepts one) and tell a new session from a live or a closed one.
The encoding is compact JSON; a record that does not decode is no record (sessionNotFound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final, Literal

from app.relay.conversations import AudioRouting, Role
from app.store import Store

SESSION_PREFIX: Final = "relay:session:"

State = Literal["new", "live", "closed"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    principal_id: str
    avatar_id: str
    sample_rate: int
    state: State
    routing: AudioRouting = field(default_factory=AudioRouting)

    def encode(self) -> bytes:
        data: dict[str, object] = {
            "p": self.principal_id,
            "a": self.avatar_id,
            "r": self.sample_rate,
            "st": self.state,
        }
        routing = self.routing
        if routing != AudioRouting():
            data.update(
                src=routing.source, mic=routing.forward_microphone, ap=routing.allow_producer
            )
            if not routing.echo:
                data["ne"] = True  # no echo: absent in records written before the option
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, session_id: str, raw: bytes) -> SessionRecord | None:
        try:
            data = json.loads(raw)
            state = data["st"]
            if state not in ("new", "live", "closed"):
                return None
            source = data.get("src", "browser")
            if source not in ("browser", "producer"):
                return None
            routing = AudioRouting(
                source, bool(data.get("mic")), bool(data.get("ap")), echo=not data.get("ne")
            )
            return cls(session_id, str(data["p"]), str(data["a"]), int(data["r"]), state, routing)
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def routing_roles(self) -> tuple[Role, ...]:
        return ("browser", "producer") if self.routing.has_producer else ("browser",)

    def with_state(self, state: State) -> SessionRecord:
        return SessionRecord(
            self.session_id,
            self.principal_id,
            self.avatar_id,
            self.sample_rate,
            state,
            self.routing,
        )


class SessionRecords:
    """The records in the store, by session id."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, session_id: str) -> SessionRecord | None:
        # Ids come from URLs and tickets: anything that cannot be one is no record.
        if not session_id or len(session_id) > 64 or not session_id.isascii():
            return None
        raw = await self._store.get(SESSION_PREFIX + session_id)
        return None if raw is None else SessionRecord.decode(session_id, raw)

    async def put(self, record: SessionRecord, ttl: float) -> None:
        await self._store.put(SESSION_PREFIX + record.session_id, record.encode(), ttl)
