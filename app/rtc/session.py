"""One RTC session's shell: the core, its ingress link, its limits timer, its event stream.

The ingress connection is configured with the session's LiveKit egress, so the avatar publishes
into the room; the socket brings back playback signals only. The link (`UpstreamLink`, shared
with the relay) writes audio, interrupts, pauses and resumes in order and reconnects as the
close-code contract says (`app/relay/reconnect.py`): 4002 rolls over to a new ingress session at
once, with the same egress configuration, so the avatar rejoins the same room with the same
token; 40xx refusals end the session; other losses reconnect after a jittered backoff.

The input comes from the session's producer socket (`serve`: the producer protocol through the
sans-I/O feed, app/rtc/feed.py) or in-process (`audio`, `end`, `interrupt`, `pause`, `resume`,
`close`). Every input is synchronous: it feeds the feed and its core and performs their effects
before returning, like every upstream callback, so nothing interleaves inside the core and the
producer's bytes leave in the order the feed produced them. One timer runs the core's limits and
the producer socket's HELLO, ACK and PING deadlines. Lifecycle events come out of `events()` in
order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from starlette.websockets import WebSocket

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.proto import message_pb2
from app.relay.client_link import CONTROL_HEADROOM_BYTES, CONTROL_HEADROOM_MESSAGES, ClientLink
from app.relay.effects import CloseClient, SendToClient
from app.relay.limits import RelayLimits
from app.relay.reconnect import ReconnectPolicy
from app.relay.upstream import UpstreamLink
from app.rtc.core import Effect, Event, Kind, Limits, Op, RtcCore, Upstream
from app.rtc.feed import FeedEffect, RtcFeed
from app.rtc.producer_socket import serve_producer
from app.spatialreal.client import IngressClient
from app.spatialreal.connection import IngressConnection
from app.spatialreal.messages import UpstreamMessage
from app.spatialreal.request_ids import new_request_id
from avatar_relay_client import producer_protocol as pp

log = logging.getLogger("avatar_relay.rtc")

_AUDIO: Final = bytes((pp.ProducerType.AUDIO,))

# Events kept for a listener that comes late (and for inspection).
HISTORY: Final = 256
# Audio buffered while the ingress is (re)connecting, at most.
MAX_QUEUED_AUDIO_BYTES: Final = 4 * 1024 * 1024


class EgressConnector:
    """A link's connections for one room: each a fresh ingress session with the same egress
    configuration. The first one, made while the session is being created (so its failure is
    the creator's answer), is handed to the link as it starts."""

    def __init__(
        self,
        ingress: IngressClient,
        egress: message_pb2.LiveKitEgressConfig,
        policy: ReconnectPolicy,
        *,
        metrics: Metrics | None = None,
        on_connected: Callable[[IngressConnection], None] | None = None,
    ) -> None:
        self.ingress = ingress
        self.egress = egress
        self.policy = policy
        self._metrics = metrics
        self.on_connected = on_connected
        self._adopted: IngressConnection | None = None
        self.connections = 0

    async def acquire(self, avatar_id: str, sample_rate: int) -> IngressConnection:
        conn, self._adopted = self._adopted, None
        if conn is None or conn.closed:
            conn = await self.ingress.connect(avatar_id, sample_rate, egress=self.egress)
            self.connections += 1
            if self._metrics is not None:
                self._metrics.upstream_connections_active.inc()
        if self.on_connected is not None:
            self.on_connected(conn)
        return conn

    async def connect_first(self, avatar_id: str, sample_rate: int) -> IngressConnection:
        conn = await self.ingress.connect(avatar_id, sample_rate, egress=self.egress)
        self.connections += 1
        if self._metrics is not None:
            self._metrics.upstream_connections_active.inc()
        self._adopted = conn
        return conn

    async def release(self, conn: IngressConnection) -> None:
        await conn.close()
        if self._metrics is not None:
            self._metrics.upstream_connections_active.dec()


class RtcSession:
    """See the module docstring. Made by `RtcService`, which owns the room and the limits."""

    def __init__(
        self,
        session_id: str,
        *,
        principal_id: str,
        avatar_id: str,
        sample_rate: int,
        room: str,
        limits: Limits,
        connector: EgressConnector,
        metrics: Metrics | None = None,
        on_end: Callable[[RtcSession], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wire: RelayLimits | None = None,
    ) -> None:
        self.session_id = session_id
        self.principal_id = principal_id
        self.avatar_id = avatar_id
        self.sample_rate = sample_rate
        self.room = room
        # The browser participant's identity the session was created with (new tokens default
        # to it).
        self.browser_identity = ""
        self._clock = clock
        self.core = RtcCore(lambda: new_request_id(datetime.now(UTC)), limits, clock())
        self.wire = wire or RelayLimits()
        self.feed = RtcFeed(
            session_id, self.core, sample_rate=sample_rate, limits=self.wire, now=clock()
        )
        self.links: dict[int, ClientLink] = {}  # the producer's connections, by number
        self._metrics = metrics
        self._on_end = on_end
        self.connector = connector
        connector.on_connected = self._connected
        self.link = UpstreamLink(
            connector,
            avatar_id,
            sample_rate,
            on_message=self._upstream_message,
            on_lost=self._upstream_lost,
            on_failed=self._upstream_failed,
            on_refused=self._upstream_refused,
            max_queued_bytes=MAX_QUEUED_AUDIO_BYTES,
        )
        self.history: deque[Event] = deque(maxlen=HISTORY)
        # One queue per `events()` listener, only while it listens: without one, events are kept
        # in the bounded history alone.
        self._listeners: list[asyncio.Queue[Event]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"RtcSession({self.session_id!r}, room={self.room!r})"

    # --- lifecycle ---

    def start(self) -> None:
        """Hand the first connection to the link and start the limits timer."""
        self.link.start(connect_now=True)
        self._schedule()

    @property
    def ended(self) -> bool:
        return self.core.is_closed

    @property
    def close_code(self) -> ErrorCode | None:
        return self.core.close_code

    def close(self, code: ErrorCode | None = None) -> None:
        """End the session (idempotent): live requests are aborted, the avatar leaves."""
        self._apply(self.core.close(code))

    async def wait_closed(self) -> None:
        await self.closed.wait()

    # --- the typed input (the producer protocol drives these) ---

    def audio(self, pcm: bytes, *, end: bool = False) -> str | None:
        """PCM s16le mono at the session's rate for the current utterance; its request id (None
        for an empty END with no utterance open)."""
        effects = self.core.audio(pcm, self._clock(), end=end)
        self._apply(effects)
        if self._metrics is not None and pcm:
            self._metrics.relayed("up", "audio", len(pcm))
        return next((e.req_id for e in effects if isinstance(e, Upstream)), None)

    def end(self) -> None:
        """The current utterance is complete."""
        self._apply(self.core.end(self._clock()))

    def interrupt(self) -> str | None:
        """Stop the latest request; its id, or None when nothing was speaking."""
        latest = self.core.latest
        self._apply(self.core.interrupt(self._clock()))
        return latest

    def pause(self) -> str | None:
        latest = self.core.latest
        self._apply(self.core.pause(self._clock()))
        return latest

    def resume(self) -> str | None:
        latest = self.core.latest
        self._apply(self.core.resume(self._clock()))
        return latest

    async def events(self) -> AsyncIterator[Event]:
        """Lifecycle events in order, from the oldest one still in `history`; the iteration
        ends after `closed`."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        for past in self.history:
            queue.put_nowait(past)
        self._listeners.append(queue)
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind is Kind.CLOSED:
                    return
        finally:
            self._listeners.remove(queue)

    # --- the producer's socket ---

    async def serve(self, websocket: WebSocket) -> None:
        """Attach an accepted producer socket and feed the session from it until it closes."""
        await serve_producer(self, websocket)

    def attach(self, websocket: WebSocket, conn: int) -> ClientLink:
        wire = self.wire
        link = ClientLink(
            websocket,
            conn,
            role="producer",
            max_messages=wire.replay_buffer_messages + CONTROL_HEADROOM_MESSAGES,
            max_bytes=wire.replay_buffer_bytes + CONTROL_HEADROOM_BYTES,
            metrics=self._metrics,
            on_stuck=self._stuck,
        )
        self.links[conn] = link
        link.start()
        self._perform(self.feed.on_connected(conn, self._clock()))
        return link

    def received(self, conn: int, data: bytes) -> None:
        """One binary message from producer connection `conn`."""
        metrics = self._metrics
        feed = self.feed
        if metrics is not None and data[:1] == _AUDIO and feed.connection == conn:
            metrics.relayed("up", "audio", len(data))
        resumes, failed = feed.stats.resumes, feed.stats.resumes_failed
        self._perform(feed.on_data(conn, data, self._clock()))
        if metrics is not None:
            if feed.stats.resumes != resumes:
                metrics.resume("resumed")
            if feed.stats.resumes_failed != failed:
                metrics.resume("failed")

    def refused(self, conn: int, code: ErrorCode, message: str) -> None:
        """A violation the transport found on `conn` (a text frame, a message too large)."""
        self._perform(self.feed.on_error(conn, code, message, self._clock()))

    def detached(self, conn: int) -> None:
        """Producer connection `conn` is gone."""
        self._perform(self.feed.on_disconnected(conn, self._clock()))
        self.links.pop(conn, None)

    def _stuck(self, conn: int) -> None:
        self._perform(
            self.feed.on_error(conn, ErrorCode.SLOW_CONSUMER, "not reading", self._clock())
        )

    # --- performing effects ---

    def _apply(self, effects: list[Effect]) -> None:
        """Effects of a core call made here (in-process input, upstream), through the feed."""
        self._perform(self.feed.apply(effects, self._clock()))

    def _perform(self, effects: Sequence[FeedEffect]) -> None:
        link = self.link
        stuck: list[int] = []
        for effect in effects:
            if isinstance(effect, Upstream):
                op = effect.op
                if op is Op.AUDIO:
                    link.send_audio(effect.req_id, effect.audio, effect.end)
                elif op is Op.INTERRUPT:
                    link.interrupt(effect.req_id)
                elif op is Op.PAUSE:
                    link.playback("pause", effect.req_id)
                elif op is Op.RESUME:
                    link.playback("resume", effect.req_id)
                else:
                    link.forget(effect.req_id)
            elif isinstance(effect, SendToClient):
                client = self.links.get(effect.conn)
                if client is not None and not client.send(effect.data, 0.0):
                    stuck.append(effect.conn)
            elif isinstance(effect, CloseClient):
                client = self.links.get(effect.conn)
                if client is not None:
                    client.close(effect.close_code, effect.reason)
            else:
                self._emit(effect)
        for conn in stuck:
            self._stuck(conn)
        if not self.core.is_closed:
            self._schedule()

    def _emit(self, event: Event) -> None:
        self.history.append(event)
        for queue in self._listeners:
            queue.put_nowait(event)
        fields: dict[str, object] = {"session_id": self.session_id, "event": event.kind.value}
        if event.req_id:
            fields["req_id"] = event.req_id
        if event.code is not None:
            fields["error_code"] = event.code.value
        metrics = self._metrics
        if event.kind in (Kind.ENDED, Kind.INTERRUPTED, Kind.ABORTED):
            if metrics is not None:
                metrics.rtc_request_ended(event.kind.value)
            log.info("rtc request %s", event.kind.value, extra=fields)
        elif event.kind is Kind.CLOSED:
            log.info("rtc session closed", extra=fields)
            self._closing = asyncio.get_running_loop().create_task(self._shut())

    async def _shut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.link.aclose()
        writers = [c.task for c in self.links.values() if c.task is not None]
        if writers:
            await asyncio.wait(writers, timeout=5.0)
        if self._on_end is not None:
            self._on_end(self)
        self.closed.set()

    # --- the timer ---

    def _schedule(self) -> None:
        """Arm the timer for the feed's next deadline, unless an earlier one is armed."""
        # A millisecond late, so the tick finds the deadline passed.
        at = self.feed.deadline() + 0.001
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, at - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._perform(self.feed.on_tick(self._clock()))

    # --- upstream callbacks (synchronous, from the link's tasks) ---

    def _connected(self, conn: IngressConnection) -> None:
        self._apply(self.core.connected(conn.playback_control))
        log.info(
            "rtc ingress session confirmed",
            extra={"session_id": self.session_id, "connection_id": conn.connection_id},
        )

    def _upstream_message(self, message: UpstreamMessage, received_at: float) -> None:
        now = self._clock()
        if message.error is not None:
            if message.req_id:
                self._apply(self.core.failed(message.req_id, message.error.code))
            return
        if message.is_animation:
            before = self.core.duplicates
            self._perform(self.feed.signal(message.req_id, message.end, now))
            if self.core.duplicates != before and self._metrics is not None:
                self._metrics.rtc_duplicate_signals_total.inc()
            return
        playback = message.playback
        if playback is not None:
            self._perform(
                self.feed.playback(
                    message.req_id, playback.state, playback.played_ms, playback.reason, now
                )
            )

    def _upstream_lost(self, error: AppError) -> bool:
        log.warning("rtc ingress connection lost", extra=error.log_fields())
        if self._metrics is not None and error.spec.upstream:
            self._metrics.upstream_error(error.code)
        if error.code is ErrorCode.IDLE_TIMEOUT:
            # The avatar left the room after the silence the session allows: so does the session.
            self.close(ErrorCode.IDLE_TIMEOUT)
            return False
        self._apply(self.core.lost(error.code))
        # The avatar stays in the room: reconnect as soon as the policy allows.
        return True

    def _upstream_failed(self, req_ids: list[str], error: AppError) -> None:
        for req_id in req_ids:
            self._apply(self.core.failed(req_id, error.code))

    def _upstream_refused(self, error: AppError) -> None:
        if self._metrics is not None:
            self._metrics.upstream_error(error.code)
        self.close(error.code)
