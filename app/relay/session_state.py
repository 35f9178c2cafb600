"""What a relay session holds: its endpoints, conversations, delivery and drain, the views the
shell reads, and the plain data that lets another instance continue it (`snapshot`, `restore`).

`RelaySession` (`session.py`) is this state plus its rules: the events it takes and the effects
they produce. Pure, like the rest of the core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import ErrorCode
from app.relay import deadlines
from app.relay.conversations import AudioRouting, Conversations, Role
from app.relay.delivery import Delivery
from app.relay.drain import Drain
from app.relay.endpoint import Endpoint
from app.relay.limits import RelayLimits, RelayStats
from app.relay.producer_events import ProducerEvents


class SessionState:
    """The state of one relay session; `RelaySession` adds the events."""

    def __init__(
        self,
        session_id: str,
        *,
        sample_rate: int,
        limits: RelayLimits,
        new_conversation_id: Callable[[], str],
        now: float,
        routing: AudioRouting | None = None,
    ) -> None:
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.limits = limits
        self.routing = routing if routing is not None else AudioRouting()
        self.stats = RelayStats()
        self._created = now

        self._ended = False
        self._broken: ErrorCode | None = None  # buffer lost while away: resume must fail

        self._browser = Endpoint("browser", now=now)
        self._conversations = Conversations(new_conversation_id)
        self._delivery = delivery = Delivery(
            self._browser,
            self._conversations,
            limits=limits,
            stats=self.stats,
            now=now,
            echo=self.routing.echo,
        )
        self._producer: Endpoint | None = None
        self._events: ProducerEvents | None = None
        if self.routing.has_producer:
            self._producer = Endpoint("producer", now=now, required=self.routing.producer_required)
            self._events = ProducerEvents(self._producer, delivery.emit, sample_rate)
            delivery.events = self._events
            self._endpoints: tuple[Endpoint, ...] = (self._browser, self._producer)
        else:
            self._endpoints = (self._browser,)

        # draining (on_drain): no new conversations; Drained once nothing is in flight
        self._drain = Drain()
        # Restored from another instance's saved state: the conversations it had in flight
        # (their ids) are aborted when the browser is back (`restore`); conversations begun
        # here meanwhile (a producer back first) are this instance's own and go on.
        self._restored = False
        self._restored_in_flight: frozenset[str] = frozenset()

    # --- read-only views for the shell ---

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def connected(self) -> bool:
        """The browser is connected."""
        return self._browser.conn is not None

    @property
    def any_connected(self) -> bool:
        return any(ep.conn is not None for ep in self._endpoints)

    @property
    def connection(self) -> int | None:
        """The browser's current connection."""
        return self._browser.conn

    @property
    def client_seq(self) -> int:
        """Highest contiguous browser sequence number accepted."""
        return self._browser.client_seq

    @property
    def server_seq(self) -> int:
        """Highest sequence number assigned on the browser's stream."""
        return self._browser.replay.last_seq

    def endpoint(self, role: Role) -> Endpoint | None:
        """The endpoint's state (read it, do not change it); None: the session has none."""
        return self._browser if role == "browser" else self._producer

    def is_current(self, role: Role, conn: int) -> bool:
        """`conn` is the endpoint's current connection."""
        ep = self.endpoint(role)
        return ep is not None and ep.conn == conn

    @property
    def buffered_messages(self) -> int:
        return len(self._browser.replay) + self._conversations.held_messages

    @property
    def buffered_bytes(self) -> int:
        return self._browser.replay.size + self._conversations.held_bytes

    def next_deadline(self) -> float | None:
        """When the shell should call `on_tick` next at the latest (None: never again)."""
        if self._ended:
            return None
        return deadlines.next_deadline(
            self._endpoints, self.limits, created=self._created, idle_since=self._idle_since
        )

    @property
    def _idle_since(self) -> float | None:
        """What the idle timeout counts from; None: it does not apply (the session is broken)."""
        return self._delivery.last_activity if self._broken is None else None

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(ep.role for ep in self._endpoints)

    @property
    def shape_version(self) -> int:
        """Grows whenever `snapshot` would say something new (conversations started, ended,
        held, an endpoint's standing); not with released messages or acknowledgements."""
        return self._conversations.version + sum(ep.hellos + ep.required for ep in self._endpoints)

    # --- continuing on another instance ---

    def snapshot(self, now: float) -> dict[str, Any]:
        """What another instance needs, besides each endpoint's seqs and replay buffer (saved
        as they change), to continue this session: plain data for `restore`."""
        return {
            "age": now - self._created,
            "idle": now - self._delivery.last_activity,
            "broken": self._broken.value if self._broken is not None else None,
            "endpoints": {
                ep.role: {"required": ep.required, "hellos": ep.hellos} for ep in self._endpoints
            },
            "conversations": self._conversations.snapshot(),
        }

    def restore(
        self,
        snapshot: dict[str, Any],
        endpoints: dict[str, tuple[int, int, list[bytes]]],
        now: float,
    ) -> None:
        """Continue a session another instance ran (a fresh core, created with the same id,
        rate, limits and routing). `endpoints`: per role, (seq accepted from it, seq it
        acknowledged, the messages sent to it after that). The upstream connection died with
        that instance: the conversations in flight are aborted (`connectionClosed`) when the
        browser is back, after its replay, numbered after what it says it has."""
        self._created = now - float(snapshot["age"])
        self._delivery.last_activity = now - float(snapshot["idle"])
        broken = snapshot["broken"]
        self._broken = ErrorCode(broken) if broken is not None else None
        for ep in self._endpoints:
            standing = snapshot["endpoints"].get(ep.role, {})
            ep.required = bool(standing.get("required", ep.required))
            ep.hellos = int(standing.get("hellos", 0))
            client_seq, acked, messages = endpoints.get(ep.role, (0, 0, []))
            ep.client_seq = client_seq
            ep.replay.restore(acked, messages)
            ep.disconnected_at = now if ep.required else None
        self._conversations.restore(snapshot["conversations"])
        self._restored = True
        self._restored_in_flight = frozenset(c.id for c in self._conversations.expecting_upstream())
