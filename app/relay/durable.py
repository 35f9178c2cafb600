"""A live relay session's durable half: what its shell saves so that another instance can
continue the session (`app/store/relay_state.py` keeps it in Redis).

Per endpoint, the core's delivery state is saved as it changes: the seq accepted from the
endpoint, the seq it acknowledged, and the messages sent to it and not acknowledged (appended as
they are sent, trimmed as they are acknowledged). The core's own state (its conversations,
the endpoints' standing) is saved as a snapshot (`RelaySession.snapshot`) whenever it changes
shape: a conversation started or ended, messages held behind the live one, a connection.

Saves are write-behind (batched by the store, one script call per flush), so the hot path, a
frame of a conversation already saved, is written to its socket at once. What a successor could
not make sense of without a save waits for it, in order with everything after it (the gate):

- a message that acknowledges client input (ACK, WELCOME's clientAck): once that client seq is
  saved, so no acknowledged input can be missing after a crash;
- the output of an event that changed the core's shape (a conversation's first message, its
  end, an interrupt): once the snapshot is saved, so a successor knows of every conversation the
  client has seen begin, and of none it has seen end.

After a crash, what was sent but not saved yet is at most plain frames of conversations the
successor knows: it takes the client's `HELLO{lastSeq}` as the truth for those (see
`RelaySession.restore`) and aborts the conversations in flight explicitly.
"""

from __future__ import annotations

import base64
import functools
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from app.relay.client_link import ClientLink
from app.relay.conversations import Role
from app.relay.effects import CloseClient, Effect, SendToClient, SessionEnded
from app.relay.session import RelaySession
from app.store.relay_state import EndpointDelta, RelayStateStore, Saved, SessionDelta
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    """The core's snapshot as the store keeps it: JSON, bytes as {"b": base64}."""
    return json.dumps(snapshot, default=_bytes_out, separators=(",", ":")).encode()


def decode_snapshot(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw, object_hook=_bytes_in)
    return data


def _bytes_out(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"not JSON: {type(value).__name__}")


def _bytes_in(value: dict[str, Any]) -> object:
    if value.keys() == {"b"} and isinstance(value["b"], str):
        return base64.b64decode(value["b"])
    return value


# An output action held by the gate (a socket write or close), run once released.
Action = Callable[[], None]

_BROWSER_ACK: Final = int(p.ServerType.ACK)
_BROWSER_WELCOME: Final = int(p.ServerType.WELCOME)
_PRODUCER_ACK: Final = int(pp.EventType.ACK)
_RESUME_FAILED: Final = frozenset({p.ServerType.RESUME_FAILED, pp.EventType.RESUME_FAILED})


class DurableSession:
    """The `Saving` source of one live session, and its output gate."""

    def __init__(
        self,
        core: RelaySession,
        store: RelayStateStore,
        *,
        on_lost: Callable[[], None],
        clock: Callable[[], float],
        saved_seqs: dict[Role, int] | None = None,
    ) -> None:
        self._core = core
        self._clock = clock
        self._store = store
        self._on_lost = on_lost
        self.session_id = core.session_id
        self._roles: tuple[Role, ...] = core.roles
        # Per endpoint, the highest seq handed to a delta (a restored session starts from what
        # was loaded).
        self._saved_upto: dict[Role, int] = dict(saved_seqs or {})
        self._saved_client: dict[Role, int] = {
            role: self._endpoint_client_seq(role) if saved_seqs else 0 for role in self._roles
        }
        self._full = saved_seqs is None
        self._shape_dirty = True
        self._held: deque[Action] = deque()
        self._covered = 0  # held actions the delta in flight covers
        self._pending_client: dict[Role, int] = {}
        self._acks: dict[int, tuple[Role, int, Action]] = {}
        self._shape = core.shape_version
        self.lost_lease = False
        self.closed = False

    @property
    def endpoint_names(self) -> Sequence[str]:
        return self._roles

    def _endpoint_client_seq(self, role: Role) -> int:
        endpoint = self._core.endpoint(role)
        return 0 if endpoint is None else endpoint.client_seq

    # --- what the shell tells it ---

    def perform(
        self,
        effects: list[Effect],
        links: Mapping[int, ClientLink],
        received_at: float,
        sender: Callable[[ClientLink, bytes, float], Action],
    ) -> int:
        """Socket output of one event, through the gate: an ACK once its client seq is saved;
        the output of an event that changed the snapshot, a WELCOME acknowledging unsaved
        input, and everything for a producer once saved; the rest (frames of saved
        conversations) at once. Returns how many RESUME_FAILED messages were among it."""
        version = self._core.shape_version
        shape = version != self._shape
        self._shape = version
        gate = self.needs_gate(shape=shape)
        resume_failed = 0
        for effect in effects:
            if type(effect) is SendToClient:
                link = links.get(effect.conn)
                if link is None:
                    continue
                kind = effect.data[0]
                action = sender(link, effect.data, received_at)
                if link.role == "browser" and kind == _BROWSER_ACK:
                    self.hold_ack(effect.conn, "browser", action)
                    continue
                if link.role == "producer" and kind == _PRODUCER_ACK:
                    self.hold_ack(effect.conn, "producer", action)
                    continue
                if not gate and (link.role == "producer" or kind == _BROWSER_WELCOME):
                    gate = self.unsaved_input() or link.role == "producer"
                if gate:
                    self.hold(action)
                else:
                    action()
                if kind in _RESUME_FAILED:
                    resume_failed += 1
            elif type(effect) is CloseClient:
                link = links.get(effect.conn)
                if link is not None:
                    close = functools.partial(link.close, effect.close_code, effect.reason)
                    if gate:
                        self.hold(close)
                    else:
                        close()
            elif type(effect) is SessionEnded:
                # Over: what waits for a save goes out now (nothing more will be saved).
                self.release_all()
        self.changed(shape=shape or gate)
        return resume_failed

    def changed(self, *, shape: bool) -> None:
        """The core changed (`shape`: more than its counters and replay buffers)."""
        if self.closed:
            return
        if shape:
            self._shape_dirty = True
        self._store.mark(self, urgent=shape)

    def needs_gate(self, *, shape: bool) -> bool:
        """Whether this event's output must wait for a save: it changed the snapshot, or
        output is already waiting (order)."""
        return shape or bool(self._held)

    def unsaved_input(self) -> bool:
        """Some endpoint's accepted seq is not saved yet (a WELCOME would acknowledge it)."""
        return any(
            self._endpoint_client_seq(role) > self._saved_client[role] for role in self._roles
        )

    def hold(self, action: Action) -> None:
        self._held.append(action)

    def hold_ack(self, conn: int, role: Role, action: Action) -> None:
        """An ACK goes out once the seq it acknowledges is saved; a later one replaces it."""
        seq = self._endpoint_client_seq(role)
        if seq <= self._saved_client[role]:
            self._acks.pop(conn, None)
            action()
            return
        self._acks[conn] = (role, seq, action)

    def release_all(self) -> None:
        """The session is over: what waits goes out now, in order."""
        held, self._held = self._held, deque()
        self._covered = 0
        for action in held:
            action()
        acks, self._acks = self._acks, {}
        for _, _, action in acks.values():
            action()

    def close(self) -> None:
        """Nothing more is saved or held from now on (what waits is dropped)."""
        self.closed = True
        self._held.clear()
        self._acks.clear()

    # --- Saving ---

    def delta(self) -> SessionDelta:
        core = self._core
        endpoints = []
        for role in self._roles:
            endpoint = core.endpoint(role)
            assert endpoint is not None
            replay = endpoint.replay
            start = replay.acked if self._full else max(replay.acked, self._saved_upto.get(role, 0))
            entries = list(replay.after(start))
            endpoints.append(
                EndpointDelta(
                    role,
                    endpoint.client_seq,
                    replay.acked,
                    start + 1,
                    entries,
                    live=endpoint.conn is not None,
                )
            )
            self._saved_upto[role] = replay.last_seq
            self._pending_client[role] = endpoint.client_seq
        snapshot = None
        if self._shape_dirty or self._full:
            snapshot = encode_snapshot(core.snapshot(self._clock()))
        self._shape_dirty = False
        self._full = False
        self._covered = len(self._held)
        return SessionDelta(endpoints, snapshot)

    def lost(self) -> None:
        if not self.closed:
            self.lost_lease = True
            self.close()
            self._on_lost()

    def saved(self, delta: SessionDelta, outcome: Saved) -> None:
        if self.closed:
            return
        if outcome is Saved.LOST:
            self.lost()
            return
        if self._acks:
            self._store.mark(self)  # a resync or a later seq: the ACKs wait for the next save
        if outcome is Saved.RESYNC:
            self._full = True
            self._shape_dirty = True
            return
        self._saved_client.update(self._pending_client)
        for conn, (role, seq, action) in list(self._acks.items()):
            if seq <= self._saved_client[role]:
                del self._acks[conn]
                action()
        covered, self._covered = self._covered, 0
        for _ in range(covered):
            if not self._held:
                break
            self._held.popleft()()
        if self._held:
            self._store.mark(self, urgent=True)
