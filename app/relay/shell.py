"""The relay shell: one relay session's I/O around its pure core (`RelaySession`).

    browser or producer socket --(bytes)--> RelayRunner.serve --> core.on_data --> effects
    ingress (UpstreamLink reader) --> core.on_upstream_frame --> effects
    timer (loop.call_at next_deadline) --> core.on_tick --> effects

Every core event is fed from the event loop's single thread and its effects are *performed
synchronously*: writes are appended to the connection's bounded outgoing queue (`ClientLink`),
upstream operations to the session's `UpstreamLink` queue. Nothing awaits between an event and
its effects, so events can never interleave inside the core, whichever task received them, and the
bytes leave in exactly the order the core produced them. The tasks of a session are: the socket
handlers (the browser's, and a producer's when it has one), one writer per connection, the
upstream writer and reader.

Back-pressure: a connection's queue is bounded (messages and bytes) and each socket write must
finish within `WRITE_TIMEOUT_SECONDS`; either limit ends the session with `slowConsumer` instead of
growing memory. The core bounds what is kept for replay (REPLAY_BUFFER_*).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final

from starlette.websockets import WebSocket

from app.errors import AppError, ErrorCode
from app.logs import bind
from app.metrics import Metrics
from app.relay.client_link import (
    CLOSE_GRACE_SECONDS,
    CONTROL_HEADROOM_BYTES,
    CONTROL_HEADROOM_MESSAGES,
    WRITE_TIMEOUT_SECONDS,
    ClientLink,
    metric_kind,
)
from app.relay.conversations import AudioRouting, Role
from app.relay.durable import DurableSession, decode_snapshot
from app.relay.effects import (
    CloseClient,
    ConversationEnded,
    Drained,
    Effect,
    InputRefused,
    InterruptUpstream,
    ReleaseUpstream,
    SendToClient,
    SendUpstream,
    SessionEnded,
)
from app.relay.pool import UpstreamPool
from app.relay.session import RelayLimits, RelaySession
from app.relay.socket_reader import read_socket
from app.relay.upstream import UpstreamLink
from app.spatialreal.messages import UpstreamMessage
from app.spatialreal.request_ids import new_request_id
from app.store.relay_state import RelayStateStore, SavedSession
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

log = logging.getLogger("avatar_relay.relay")

_RESUME_FAILED: Final = frozenset({p.ServerType.RESUME_FAILED, pp.EventType.RESUME_FAILED})
_SUBPROTOCOLS: Final[dict[Role, str]] = {"browser": p.SUBPROTOCOL, "producer": pp.SUBPROTOCOL}

_connection_ids = itertools.count(1)


def next_connection_id() -> int:
    """A connection number unique in this process, across every session's sockets."""
    return next(_connection_ids)


class RelayRunner:
    """One live relay session: its core, its upstream link, its client connections, its timer."""

    def __init__(
        self,
        session_id: str,
        *,
        principal_id: str,
        avatar_id: str,
        sample_rate: int,
        limits: RelayLimits,
        pool: UpstreamPool,
        metrics: Metrics | None = None,
        on_end: Callable[[RelayRunner, ErrorCode | None], None] | None = None,
        routing: AudioRouting | None = None,
        state_store: RelayStateStore | None = None,
        restored: SavedSession | None = None,
    ) -> None:
        self.session_id = session_id
        self.principal_id = principal_id
        self.avatar_id = avatar_id
        self.sample_rate = sample_rate
        self.limits = limits
        self.routing = routing if routing is not None else AudioRouting()
        self._metrics = metrics
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self.core = RelaySession(
            session_id,
            sample_rate=sample_rate,
            limits=limits,
            new_conversation_id=lambda: new_request_id(datetime.now(UTC)),
            now=self._loop.time(),
            routing=self.routing,
        )
        self.upstream = UpstreamLink(
            pool,
            avatar_id,
            sample_rate,
            on_message=self._on_upstream_message,
            on_lost=self._on_upstream_lost,
            on_failed=self._on_upstream_failed,
            max_queued_bytes=limits.replay_buffer_bytes,
            on_refused=self._on_upstream_refused,
        )
        # With Redis: the durable half, saved as the session changes (app/relay/durable.py).
        self.durable: DurableSession | None = None
        self._state_store = state_store
        if state_store is not None:
            saved_seqs = None
            if restored is not None:
                saved_seqs = self._restore(restored)
            self.durable = DurableSession(
                self.core,
                state_store,
                on_lost=self._lost,
                clock=self._loop.time,
                saved_seqs=saved_seqs,
            )
        # A refusal that came while no endpoint was attached: told to the next one that comes.
        self._refusal: AppError | None = None
        self._links: dict[int, ClientLink] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        self.end_code: ErrorCode | None = None
        self.ended = False

    # --- lifecycle ---

    def start(self, *, connect_upstream: bool = True) -> None:
        """Start the upstream link (connecting now, so the first audio finds it ready) and the
        session's timers (the resume window runs until a client connects)."""
        with bind(session_id=self.session_id):
            self.upstream.start(connect_now=connect_upstream)
        self._schedule()

    def _restore(self, saved: SavedSession) -> dict[Role, int]:
        """Continue from the state another instance saved; per endpoint, what is saved."""
        endpoints = {
            name: (state.client_seq, state.acked, state.messages)
            for name, state in saved.endpoints.items()
        }
        snapshot = decode_snapshot(saved.core) if saved.core is not None else None
        if snapshot is not None:
            self.core.restore(snapshot, endpoints, self._loop.time())
        roles = self.core.roles
        return {role: saved.endpoints[role].last for role in roles if role in saved.endpoints}

    async def handover(self) -> None:
        """Draining: save what is left, stop saving, tell the endpoints to reconnect and resume
        (1012 sessionMoved: the next instance continues), give the session up."""
        durable = self.durable
        store = self._state_store
        if durable is None or store is None or self.ended:
            self.shutdown()
            return
        durable.changed(shape=True)
        try:
            await store.settled(within=CLOSE_GRACE_SECONDS)
        except TimeoutError:
            log.warning("handover: the session's state could not be saved in time")
        durable.close()
        self._perform(self.core.on_handover(self._loop.time()))
        with contextlib.suppress(AppError):
            await store.release(self.session_id)

    def _lost(self) -> None:
        """Another instance took the session over (this one was presumed dead or draining):
        the endpoints go there, nothing more is saved from here."""
        log.warning("relay session taken over by another instance")
        self._perform(self.core.on_handover(self._loop.time()))

    def drain(self) -> None:
        """The server is draining: conversations in flight go on, new ones are not accepted
        (`wait_drained` returns once nothing is in flight)."""
        with bind(session_id=self.session_id):
            self._perform(self.core.on_drain(self._loop.time()))

    async def wait_drained(self) -> None:
        """Until no conversation is in flight (after `drain`) or the session ended."""
        await self._drained.wait()

    def shutdown(self) -> None:
        """The server is going away: the endpoints get ERROR{goingAway} and close 1001."""
        self._perform(self.core.on_shutdown(self._loop.time()))

    async def wait_closed(self) -> None:
        """Until the session ended and its client writers finished (their close frames out)."""
        await self._closed.wait()
        writers = [link.task for link in self._links.values() if link.task is not None]
        if writers:
            await asyncio.wait(writers, timeout=CLOSE_GRACE_SECONDS + 1)
        if self._background:
            await asyncio.wait(list(self._background), timeout=CLOSE_GRACE_SECONDS + 1)

    # --- the client socket ---

    async def serve(self, websocket: WebSocket, role: Role = "browser") -> None:
        """Attach an accepted socket of the browser or the producer and relay until it
        disconnects (a newer connection, an error, BYE or the session's end closes it from our
        side)."""
        conn = next_connection_id()
        limits = self.limits
        link = ClientLink(
            websocket,
            conn,
            role=role,
            max_messages=limits.replay_buffer_messages + CONTROL_HEADROOM_MESSAGES,
            max_bytes=limits.replay_buffer_bytes + CONTROL_HEADROOM_BYTES,
            metrics=self._metrics,
            on_stuck=self._on_client_stuck,
        )
        self._links[conn] = link
        loop = self._loop
        core = self.core
        metrics = self._metrics
        prefix = "c" if role == "browser" else "p"

        def on_data(data: bytes) -> None:
            if metrics is not None and core.is_current(role, conn):
                metrics.relayed("up", metric_kind(data), len(data))
            resumes = core.stats.resumes
            self._perform(core.on_data(role, conn, data, loop.time()))
            if core.stats.resumes != resumes and metrics is not None:
                metrics.resume("resumed")

        def on_refused(code: ErrorCode, text: str) -> None:
            # A violation the transport found ends the session like any other (protocol §6).
            self._perform(core.on_error(role, conn, code, text, loop.time()))

        with bind(session_id=self.session_id, connection_id=f"{prefix}{conn}"):
            link.start()
            self._perform(core.on_connected(role, conn, loop.time()))
            if self._refusal is not None:
                self._deliver_refusal(self._refusal)
            try:
                await read_socket(
                    websocket,
                    subprotocol=_SUBPROTOCOLS[role],
                    on_data=on_data,
                    on_refused=on_refused,
                )
            finally:
                self._perform(core.on_disconnected(role, conn, loop.time()))
                link.close(1000, "")
                if link.task is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(link.task), CLOSE_GRACE_SECONDS + WRITE_TIMEOUT_SECONDS
                        )
                self._links.pop(conn, None)

    def _on_client_stuck(self, conn: int) -> None:
        link = self._links.get(conn)
        if link is None:
            return
        self._perform(
            self.core.on_error(
                link.role,
                conn,
                ErrorCode.SLOW_CONSUMER,
                f"the {link.role} is not reading",
                self._loop.time(),
            )
        )

    # --- upstream callbacks (synchronous, from the link's tasks) ---

    def _on_upstream_message(self, message: UpstreamMessage, received_at: float) -> None:
        now = self._loop.time()
        if message.is_animation:
            effects = self.core.on_upstream_frame(message.req_id, message.raw, message.end, now)
            # A frame only ever moves the core's deadlines later (or ends the session, which
            # cancels the timer): the armed tick stays valid and re-arms itself when it runs.
            self._perform(effects, received_at, reschedule=False)
        elif message.error is not None:
            error = message.error
            if self._metrics is not None:
                self._metrics.upstream_error(error.code)
            log.info("upstream request failed", extra=error.log_fields())
            self._perform(
                self.core.on_upstream_error(message.req_id, error.code, error.message, now)
            )

    def _on_upstream_lost(self, error: AppError) -> bool:
        if self._metrics is not None:
            self._metrics.upstream_error(error.code)
        effects = self.core.on_upstream_lost(error.code, error.message, self._loop.time())
        aborted = any(isinstance(e, ConversationEnded) for e in effects)
        log.info(
            "upstream connection lost",
            extra={**error.log_fields(), "aborted_conversations": aborted},
        )
        self._perform(effects)
        # Reconnect now when the loss hurt a conversation (the next utterance likely follows);
        # an idle session reconnects when it next has audio, instead of churning tokens.
        return aborted and not self.ended

    def _on_upstream_refused(self, error: AppError) -> None:
        """Upstream will not take this session (a non-retryable close code): the conversations
        waiting on it are aborted with that code, and the session ends with ERROR{code}: at
        once if an endpoint is attached, else when one next connects (within the resume
        window)."""
        if self._metrics is not None:
            self._metrics.upstream_error(error.code)
        if self.core.any_connected:
            self._deliver_refusal(error)
            return
        self._refusal = error
        self._perform(self.core.on_upstream_lost(error.code, error.message, self._loop.time()))

    def _deliver_refusal(self, error: AppError) -> None:
        self._perform(self.core.on_upstream_refused(error.code, error.message, self._loop.time()))

    def _on_upstream_failed(self, req_ids: list[str], error: AppError) -> None:
        if self._metrics is not None:
            self._metrics.upstream_error(error.code)
        for req_id in req_ids:
            self._perform(
                self.core.on_upstream_error(req_id, error.code, error.message, self._loop.time())
            )

    # --- effects ---

    def _perform(
        self, effects: list[Effect], received_at: float = 0.0, *, reschedule: bool = True
    ) -> None:
        if self.durable is not None and not self.durable.closed:
            failed = self.durable.perform(effects, self._links, received_at, self._sender)
            if failed and self._metrics is not None:
                self._metrics.resume("failed")
            effects = [e for e in effects if type(e) not in (SendToClient, CloseClient)]
        links = self._links
        stuck: list[int] = []
        for effect in effects:
            if type(effect) is SendToClient:
                link = links.get(effect.conn)
                if link is not None and not link.send(effect.data, received_at):
                    stuck.append(effect.conn)
                if effect.data[0] in _RESUME_FAILED and self._metrics is not None:
                    self._metrics.resume("failed")
            elif type(effect) is SendUpstream:
                self.upstream.send_audio(effect.req_id, effect.audio, effect.end)
            elif type(effect) is CloseClient:
                link = links.get(effect.conn)
                if link is not None:
                    link.close(effect.close_code, effect.reason)
            elif type(effect) is ConversationEnded:
                self.upstream.forget(effect.req_id)
                if self._metrics is not None:
                    self._metrics.conversation_ended(effect.outcome)
            elif type(effect) is InterruptUpstream:
                self.upstream.interrupt(effect.req_id)
            elif type(effect) is ReleaseUpstream:
                self._spawn(self.upstream.aclose())
            elif type(effect) is SessionEnded:
                self._finish(effect.code)
            elif type(effect) is Drained:
                self._drained.set()
            elif type(effect) is InputRefused:
                log.info(
                    "draining: a new conversation waits for the session's next instance",
                    extra={"error_code": effect.code.value, "client_seq": effect.seq},
                )
        for conn in stuck:
            self._on_client_stuck(conn)
        if reschedule:
            self._schedule()

    def _sender(self, link: ClientLink, data: bytes, received_at: float) -> Callable[[], None]:
        def send() -> None:
            if not link.send(data, received_at):
                self._on_client_stuck(link.conn)

        return send

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _finish(self, code: ErrorCode | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_code = code
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for link in self._links.values():
            link.close(1000, "")
        self._spawn(self.upstream.aclose())
        log.info(
            "relay session ended",
            extra={"session_id": self.session_id, "error_code": code.value if code else "none"},
        )
        if self._on_end is not None:
            self._on_end(self, code)
        self._drained.set()
        self._closed.set()

    # --- timers ---

    def _schedule(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        # A millisecond late, so the tick finds the deadline passed (the loop may fire early
        # by its clock resolution).
        deadline += 0.001
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # an earlier tick is already due; it reschedules after running
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        with bind(session_id=self.session_id):
            self._perform(self.core.on_tick(self._loop.time()))
        if self._timer is None and not self.ended:
            self._schedule()
