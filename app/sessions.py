"""Relay sessions: creation, tickets, limits, lookup and the shutdown drain.

A relay session has two halves:

- a **record** in the store (`app/session_records.py`: principal, avatar, sample rate, audio
  routing, state), so any instance sharing the store can issue tickets for it (the browser's, and
  a producer's when its routing accepts one) and knows whether it is new, live or closed;
- the **live** session (`RelayRunner`: core, upstream connection, buffers) in the one process that
  serves its sockets.

Where the live half is made depends on the store. With the in-process store there is one instance,
so `create` makes it at once and starts connecting upstream while the client is still opening its
socket (time to first frame). With Redis there may be several instances, and the load balancer
picks the one for the socket by hashing the session id (deploy/nginx.conf), so the live half is
made by the first socket connection, on that instance; the warm upstream pool keeps that fast.

Limits: `MAX_SESSIONS_PER_PRINCIPAL` live sessions per principal across the fleet (a counter in
the store, charged when a session goes live and released when it ends) and `MAX_SESSIONS_GLOBAL`
live sessions per instance (they are this process's memory and sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.relay.conversations import AudioRouting, AudioSource
from app.relay.pool import UpstreamPool
from app.relay.session import RelayLimits
from app.relay.shell import RelayRunner
from app.session_records import SessionRecord, SessionRecords
from app.settings import PCM_SAMPLE_RATES, Settings
from app.store import Store
from app.store.relay_state import RelayStateStore, SavedSession
from app.tickets import TicketKind, TicketService

log = logging.getLogger("avatar_relay.sessions")
audit = logging.getLogger("avatar_relay.audit")

PRINCIPAL_PREFIX: Final = "relay:principal:"
SESSION_ID_BYTES: Final = 18
# Ended sessions remembered in-process, so a late socket hears "closed" even before the store's
# tombstone is written.
RECENTLY_ENDED: Final = 4096
# Shutdown: after the drain, how long sessions get to be handed over (their clients told).
HANDOVER_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session_id: str
    ticket: str
    avatar_id: str
    sample_rate: int
    resume_window_seconds: int
    ticket_ttl_seconds: int
    routing: AudioRouting = field(default_factory=AudioRouting)
    producer_ticket: str | None = None  # when the routing accepts a producer


def audio_routing(
    source: AudioSource = "browser",
    *,
    forward_microphone: bool = False,
    allow_producer: bool = False,
    audio_echo: bool = True,
) -> AudioRouting:
    """The session's audio routing from the request's fields (docs/protocol.md sections 1.1
    and 10); invalidRequest for a combination that means nothing."""
    if forward_microphone and source != "producer":
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            'forwardMicrophone needs audioSource "producer": the browser\'s audio is otherwise'
            " the avatar's speech",
        )
    if not audio_echo and source != "browser":
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            'audioEcho false needs audioSource "browser": the producer\'s speech is the only copy'
            " the browser gets, so it is always sent",
        )
    if source == "producer":
        # A producer session always accepts its producer.
        return AudioRouting("producer", forward_microphone=forward_microphone)
    return AudioRouting("browser", allow_producer=allow_producer, echo=audio_echo)


def new_session_id() -> str:
    return "rs_" + secrets.token_urlsafe(SESSION_ID_BYTES)


def _principal_key(principal_id: str) -> str:
    # Principal ids come from callers' credentials (JWT `sub`): hash them into a safe key.
    digest = hashlib.sha256(principal_id.encode()).hexdigest()[:32]
    return f"{PRINCIPAL_PREFIX}{digest}:sessions"


def _not_found() -> AppError:
    return AppError(ErrorCode.SESSION_NOT_FOUND, "no such relay session")


def _busy() -> AppError:
    # Refused before the upgrade (HTTP 503): the proxy or the client tries again.
    return AppError(
        ErrorCode.SESSION_MOVED, "the session is running on another instance; try again"
    )


class SessionService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        tickets: TicketService,
        pool: UpstreamPool,
        *,
        metrics: Metrics | None = None,
        eager: bool | None = None,
        state_store: RelayStateStore | None = None,
    ) -> None:
        self.settings = settings
        # With Redis: sessions' durable state, so that they outlive this instance.
        self.state_store = state_store
        self.limits = RelayLimits.from_settings(settings)
        self._store = store
        self._records = SessionRecords(store)
        self.tickets = tickets
        self.pool = pool
        self._metrics = metrics
        self.eager = settings.redis_url is None if eager is None else eager
        self._live: dict[str, RelayRunner] = {}
        self._taking_over: dict[str, asyncio.Future[None]] = {}
        self._ended_ids: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        # Told the id of each session that ended here for good (not moved elsewhere).
        self._end_listeners: list[Callable[[str], None]] = []
        self.draining = False
        # A record outlives any session it describes; an ended one stays as a tombstone as
        # long as tickets for it may still be presented.
        self._record_ttl = (
            settings.max_session_seconds + settings.resume_window_seconds + tickets.ttl_seconds
        )
        self._counter_ttl = self._record_ttl + 60

    # --- lookup ---

    def get(self, session_id: str) -> RelayRunner | None:
        return self._live.get(session_id)

    @property
    def live_count(self) -> int:
        return len(self._live)

    def on_session_end(self, listener: Callable[[str], None]) -> None:
        """Call `listener(session_id)` whenever a session of this instance ends for good (a
        session handed over to another instance goes on there and is not reported)."""
        self._end_listeners.append(listener)

    # --- creation and tickets ---

    async def create(
        self,
        principal_id: str,
        avatar_id: str | None = None,
        sample_rate: int | None = None,
        routing: AudioRouting | None = None,
    ) -> CreatedSession:
        settings = self.settings
        if self.draining:
            raise AppError(ErrorCode.GOING_AWAY, "this instance is shutting down; retry")
        avatar = avatar_id if avatar_id is not None else settings.avatar_id
        if not settings.avatar_allowed(avatar):
            raise AppError(ErrorCode.AVATAR_NOT_ALLOWED, "avatarId is not on the allow-list")
        rate = sample_rate if sample_rate is not None else settings.default_sample_rate
        if rate not in PCM_SAMPLE_RATES:
            rates = ", ".join(map(str, PCM_SAMPLE_RATES))
            raise AppError(ErrorCode.INVALID_REQUEST, f"sampleRate must be one of {rates}")
        routing = routing if routing is not None else AudioRouting()
        session_id = new_session_id()
        record = SessionRecord(session_id, principal_id, avatar, rate, "new", routing)
        if self.eager:
            await self._check_global()
            await self._charge(principal_id)
            record = record.with_state("live")
            try:
                await self._records.put(record, self._record_ttl)
            except BaseException:
                await self._release(principal_id)
                raise
            self._go_live(record)
        else:
            # Refuse early when the principal is already at its limit; the charge itself
            # happens when (and where) the session goes live.
            current = int(await self._store.get(_principal_key(principal_id)) or b"0")
            if current >= settings.max_sessions_per_principal:
                raise self._limit_error("this principal")
            await self._records.put(record, self._record_ttl)
        ticket = await self.tickets.issue(session_id, principal_id)
        producer_ticket = None
        if routing.has_producer:
            producer_ticket = await self.tickets.issue(session_id, principal_id, "producer")
        audit.info(
            "relay session created",
            extra={
                "session_id": session_id,
                "principal": principal_id,
                "avatar_id": avatar,
                "sample_rate": rate,
                "audio_source": routing.source,
            },
        )
        return CreatedSession(
            session_id,
            ticket,
            avatar,
            rate,
            settings.resume_window_seconds,
            int(self.tickets.ttl_seconds),
            routing,
            producer_ticket,
        )

    async def issue_ticket(
        self, session_id: str, principal_id: str, kind: TicketKind = "browser"
    ) -> str:
        """A new ticket of `kind` for a session of `principal_id` (anyone else:
        sessionNotFound; a producer ticket for a session that accepts none:
        producerNotAllowed)."""
        record = await self._records.get(session_id)
        if record is None or not secrets.compare_digest(
            record.principal_id.encode(), principal_id.encode()
        ):
            raise _not_found()
        if record.state == "closed" or session_id in self._ended_ids:
            raise AppError(ErrorCode.SESSION_CLOSED, "the relay session has ended")
        if kind == "producer" and not record.routing.has_producer:
            raise AppError(
                ErrorCode.PRODUCER_NOT_ALLOWED,
                'the session was created without audioSource "producer" or allowProducer',
            )
        return await self.tickets.issue(session_id, principal_id, kind)

    async def attach(
        self, session_id: str, ticket: str, kind: TicketKind = "browser"
    ) -> RelayRunner:
        """Redeem a socket's ticket and return the live session it may serve; the session goes
        live here when it was created elsewhere or lazily. Raises AppError: ticketInvalid,
        sessionNotFound, sessionClosed, sessionLimit, goingAway."""
        grant = await self.tickets.redeem(session_id, ticket, kind)
        runner = self._live.get(session_id)
        if runner is not None:
            if runner.principal_id != grant.principal_id:
                raise _not_found()
            if runner.ended:
                raise AppError(ErrorCode.SESSION_CLOSED, "the relay session has ended")
            return runner
        record = await self._records.get(session_id)
        if record is None or record.principal_id != grant.principal_id:
            raise _not_found()
        if record.state == "closed" or session_id in self._ended_ids:
            raise AppError(ErrorCode.SESSION_CLOSED, "the relay session has ended")
        if self.draining:
            raise AppError(ErrorCode.GOING_AWAY, "this instance is shutting down; retry")
        if record.state == "live":
            # Live on another instance, or on one that died or is draining.
            return await self._take_over(record, kind)
        await self._check_global()
        await self._charge(record.principal_id)
        existing = self._live.get(session_id)
        if existing is not None:  # another socket made it live while we were charging
            await self._release(record.principal_id)
            return existing
        if self.state_store is not None:
            claim = await self.state_store.claim(session_id, record.routing_roles, asking=kind)
            if not claim.claimed:
                await self._release(record.principal_id)
                raise _busy()
        live = record.with_state("live")
        runner = self._go_live(live)
        self._spawn(self._records.put(live, self._record_ttl))
        return runner

    async def _take_over(self, record: SessionRecord, kind: TicketKind) -> RelayRunner:
        """Continue here a session another instance ran, from its saved state: once that
        instance is gone or draining (its lease, app/store/relay_state.py). Its principal's
        charge moves with it."""
        store = self.state_store
        if store is None:
            raise _not_found()  # its state lived in the other instance's memory
        pending = self._taking_over.get(record.session_id)
        if pending is not None:  # the session's other endpoint is taking it over right now
            await asyncio.wait([pending])
            existing = self._live.get(record.session_id)
            if existing is None:
                raise _busy()
            return existing
        done = asyncio.get_running_loop().create_future()
        self._taking_over[record.session_id] = done
        try:
            return await self._restore(record, kind, store)
        finally:
            del self._taking_over[record.session_id]
            done.set_result(None)

    async def _restore(
        self, record: SessionRecord, kind: TicketKind, store: RelayStateStore
    ) -> RelayRunner:
        await self._check_global()
        claim = await store.claim(record.session_id, record.routing_roles, asking=kind)
        if not claim.claimed:
            raise _busy()
        existing = self._live.get(record.session_id)
        if existing is not None:
            return existing
        saved = await store.load(record.session_id)
        if saved is None or saved.core is None:
            await store.forget(record.session_id, record.routing_roles)
            raise _not_found()  # never saved, or expired with its resume window
        log.info(
            "relay session taken over",
            extra={"session_id": record.session_id, "previous_owner": claim.previous or ""},
        )
        return self._go_live(record, saved)

    async def settled(self) -> None:
        """Until the store reflects every session that has ended so far (counters, records)."""
        while self._background:
            await asyncio.wait(list(self._background))

    # --- shutdown ---

    async def shutdown(
        self, within: float = 0.0, *, close_within: float = HANDOVER_SECONDS
    ) -> None:
        """Drain: no new sessions or conversations from now on; conversations in flight get up
        to `within` seconds to finish; then every live session is handed over (with Redis: its
        state saved, its endpoints told to reconnect and resume elsewhere, close 1012) or ended
        (without: ERROR{goingAway}, close 1001), with up to `close_within` seconds for it."""
        self.draining = True
        store = self.state_store
        if store is not None:
            # Others may take this instance's sessions over from now on.
            await store.set_draining()
        runners = list(self._live.values())
        for runner in runners:
            runner.drain()
        if runners and within > 0:
            await _wait_all([runner.wait_drained() for runner in runners], within)
        runners = list(self._live.values())  # and those a reconnect made live meanwhile
        if store is not None and runners:
            # Saved, then told to reconnect (1012): the next socket continues them elsewhere.
            await _wait_all([runner.handover() for runner in runners], close_within)
        for runner in runners:
            runner.shutdown()  # no-op for those handed over
        if runners:
            await _wait_all([runner.wait_closed() for runner in runners], close_within)
        if self._background:
            await asyncio.wait(list(self._background), timeout=close_within)

    def refuses(self, session_id: str) -> bool:
        """True while draining for a session this instance does not run: its socket should be
        turned away before its ticket is spent, so that it can be tried elsewhere."""
        return self.draining and session_id not in self._live

    async def aclose(self) -> None:
        await self.shutdown()
        await self.pool.aclose()

    # --- internals ---

    def _go_live(self, record: SessionRecord, saved: SavedSession | None = None) -> RelayRunner:
        runner = RelayRunner(
            record.session_id,
            principal_id=record.principal_id,
            avatar_id=record.avatar_id,
            sample_rate=record.sample_rate,
            limits=self.limits,
            pool=self.pool,
            metrics=self._metrics,
            on_end=self._ended,
            routing=record.routing,
            state_store=self.state_store,
            restored=saved,
        )
        self._live[record.session_id] = runner
        if self._metrics is not None:
            self._metrics.relay_sessions_active.inc()
        runner.start(connect_upstream=True)
        return runner

    def _ended(self, runner: RelayRunner, code: ErrorCode | None) -> None:
        if self._live.get(runner.session_id) is runner:
            del self._live[runner.session_id]
            if self._metrics is not None:
                self._metrics.relay_sessions_active.dec()
        if code is ErrorCode.SESSION_MOVED:
            return  # it goes on elsewhere: its record, charge and saved state stay
        self._ended_ids[runner.session_id] = None
        if len(self._ended_ids) > RECENTLY_ENDED:
            self._ended_ids.popitem(last=False)
        if self.state_store is not None:
            self._spawn(self._forget(runner))
        for listener in self._end_listeners:
            listener(runner.session_id)
        closed = SessionRecord(
            runner.session_id,
            runner.principal_id,
            runner.avatar_id,
            runner.sample_rate,
            "closed",
            runner.routing,
        )
        self._spawn(self._settle(closed))

    async def _forget(self, runner: RelayRunner) -> None:
        assert self.state_store is not None
        try:
            await self.state_store.forget(runner.session_id, runner.core.roles)
        except AppError as error:
            log.warning("could not forget the session's state", extra=error.log_fields())

    async def _settle(self, closed: SessionRecord) -> None:
        try:
            await self._release(closed.principal_id)
            await self._records.put(closed, self.tickets.ttl_seconds)
        except AppError as error:
            log.warning("could not record the session's end", extra=error.log_fields())

    async def _check_global(self) -> None:
        if len(self._live) >= self.settings.max_sessions_global:
            raise self._limit_error("this instance")

    async def _charge(self, principal_id: str) -> None:
        key = _principal_key(principal_id)
        count = await self._store.add(key, 1, self._counter_ttl)
        if count > self.settings.max_sessions_per_principal:
            await self._store.add(key, -1, self._counter_ttl)
            raise self._limit_error("this principal")

    async def _release(self, principal_id: str) -> None:
        await self._store.add(_principal_key(principal_id), -1, self._counter_ttl)

    def _limit_error(self, scope: str) -> AppError:
        return AppError(ErrorCode.SESSION_LIMIT, f"too many concurrent relay sessions for {scope}")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


async def _wait_all(waits: list[Coroutine[Any, Any, None]], within: float) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        with contextlib.suppress(Exception):
            log.error("relay background task failed", exc_info=task.exception())
