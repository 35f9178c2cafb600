"""RTC sessions: create (room, tokens, the ingress session with LiveKit egress), find, end.

`create` does, in order: check the request and the limits; create the room through LiveKit's
RoomService (a room named by the caller is used as it is and never deleted by us; one we name is
ours and deleted when the session ends); mint the browser's token and the avatar publisher's
(app/livekit/tokens.py); open the first ingress session with that egress configuration, so a
refusal (a bad egress configuration, an unknown avatar, credits) is the creator's answer and
leaves no room behind; then start the session and mint the first producer ticket. Sessions
live in this process (the producer that feeds one must reach this instance).

The producer's socket (`GET /v1/rtc/producer`) is authenticated by a single-use ticket of the
kind `rtc-producer` (app/tickets.py): one comes with the session, and its owner asks for more to
reconnect (`producer_ticket`); `attach` redeems one for the live session it names.

Limits: `MAX_SESSIONS_PER_PRINCIPAL` and `MAX_SESSIONS_GLOBAL` apply to RTC sessions as to relay
sessions, counted separately and per instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final

from app.errors import AppError, ErrorCode
from app.livekit import LiveKitCredentials, RoomClient, browser_token, publisher_token
from app.livekit.tokens import publisher_attributes
from app.metrics import Metrics
from app.proto import message_pb2
from app.relay.limits import RelayLimits
from app.relay.reconnect import ReconnectPolicy
from app.rtc.core import Limits
from app.rtc.session import EgressConnector, RtcSession
from app.settings import PCM_SAMPLE_RATES, Settings
from app.spatialreal.client import IngressClient
from app.tickets import TicketService

log = logging.getLogger("avatar_relay.rtc")
audit = logging.getLogger("avatar_relay.audit")

SESSION_ID_BYTES: Final = 18
# Room names and participant identities callers may choose (LiveKit allows more; these are safe
# in URLs, logs and every LiveKit SDK).
NAME_PATTERN: Final = r"^[A-Za-z0-9_.:@-]{1,128}$"
_NAME = re.compile(NAME_PATTERN)
ROOM_PREFIX: Final = "avatar-"


@dataclass(frozen=True, slots=True)
class RtcRequest:
    avatar_id: str | None = None
    sample_rate: int | None = None
    room: str | None = None
    identity: str | None = None
    name: str | None = None
    agent_identity: str | None = None


@dataclass(frozen=True, slots=True)
class BrowserToken:
    identity: str
    token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class CreatedRtcSession:
    session_id: str
    livekit_url: str
    room: str
    room_owned: bool
    identity: str
    token: str
    token_expires_at: int
    avatar_id: str
    avatar_identity: str
    agent_identity: str
    sample_rate: int
    expires_at: int
    idle_timeout_seconds: float
    playback_control: bool
    producer_ticket: str


def new_session_id() -> str:
    return "rtc_" + secrets.token_urlsafe(SESSION_ID_BYTES)


def _not_found() -> AppError:
    return AppError(ErrorCode.SESSION_NOT_FOUND, "no such RTC session")


def _checked_name(value: str | None, what: str) -> str | None:
    if value is not None and not _NAME.match(value):
        raise AppError(ErrorCode.INVALID_REQUEST, f"{what}: 1-128 of A-Z a-z 0-9 and _ . : @ -")
    return value


class RtcService:
    def __init__(
        self,
        settings: Settings,
        ingress: IngressClient,
        *,
        policy: ReconnectPolicy | None = None,
        metrics: Metrics | None = None,
        tickets: TicketService | None = None,
    ) -> None:
        self.settings = settings
        self.tickets = tickets
        self.ingress = ingress
        self.policy = policy or ReconnectPolicy.from_settings(settings)
        self._metrics = metrics
        self.credentials = LiveKitCredentials.from_settings(settings)
        self.rooms = (
            RoomClient(self.credentials, timeout=settings.upstream_request_timeout)
            if self.credentials is not None
            else None
        )
        self.limits = Limits(settings.rtc_idle_timeout_seconds, settings.rtc_max_session_seconds)
        self.wire = RelayLimits.from_settings(settings)
        self._live: dict[str, RtcSession] = {}
        self._owned_rooms: dict[str, str] = {}  # session id -> room we created
        self._per_principal: Counter[str] = Counter()
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self.draining = False

    # --- lookup ---

    @property
    def live_count(self) -> int:
        return len(self._live)

    def get(self, session_id: str, principal_id: str) -> RtcSession:
        """A live session of `principal_id` (anyone else's, or an ended one: sessionNotFound)."""
        session = self._live.get(session_id)
        if session is None or not secrets.compare_digest(
            session.principal_id.encode(), principal_id.encode()
        ):
            raise _not_found()
        return session

    # --- creation ---

    def configured(self) -> tuple[LiveKitCredentials, RoomClient]:
        if self.credentials is None or self.rooms is None:
            raise AppError(
                ErrorCode.RTC_NOT_CONFIGURED,
                "RTC mode needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET (docs/rtc.md)",
            )
        return self.credentials, self.rooms

    def _check(self, principal_id: str, request: RtcRequest) -> tuple[str, int]:
        settings = self.settings
        if self.draining:
            raise AppError(ErrorCode.GOING_AWAY, "this instance is shutting down; retry")
        avatar = request.avatar_id if request.avatar_id is not None else settings.avatar_id
        if not settings.avatar_allowed(avatar):
            raise AppError(ErrorCode.AVATAR_NOT_ALLOWED, "avatarId is not on the allow-list")
        rate = (
            request.sample_rate
            if request.sample_rate is not None
            else (settings.default_sample_rate)
        )
        if rate not in PCM_SAMPLE_RATES:
            rates = ", ".join(map(str, PCM_SAMPLE_RATES))
            raise AppError(ErrorCode.INVALID_REQUEST, f"sampleRate must be one of {rates}")
        _checked_name(request.room, "roomName")
        _checked_name(request.identity, "identity")
        _checked_name(request.agent_identity, "agentIdentity")
        # The avatar's identity is taken: LiveKit would replace one participant by the other.
        if request.identity == settings.rtc_avatar_identity:
            raise AppError(ErrorCode.INVALID_REQUEST, "identity is the avatar's identity")
        if request.agent_identity == settings.rtc_avatar_identity:
            raise AppError(ErrorCode.INVALID_REQUEST, "agentIdentity is the avatar's identity")
        if len(self._live) >= settings.max_sessions_global:
            raise AppError(ErrorCode.SESSION_LIMIT, "too many RTC sessions on this instance")
        if self._per_principal[principal_id] >= settings.max_sessions_per_principal:
            raise AppError(ErrorCode.SESSION_LIMIT, "too many RTC sessions for this principal")
        return avatar, rate

    async def create(self, principal_id: str, request: RtcRequest) -> CreatedRtcSession:
        credentials, rooms = self.configured()
        avatar, rate = self._check(principal_id, request)
        settings = self.settings
        session_id = new_session_id()
        room = request.room or ROOM_PREFIX + secrets.token_urlsafe(12)
        owned = request.room is None
        identity = request.identity or "user-" + secrets.token_hex(6)
        agent = request.agent_identity or settings.rtc_agent_identity
        publisher = settings.rtc_avatar_identity
        # First, so a store that cannot keep it refuses the session before a room exists.
        producer_ticket = await self._ticket_service().issue(
            session_id, principal_id, "rtc-producer"
        )
        # Held while the room and the first ingress session are made: the limits count it.
        self._per_principal[principal_id] += 1
        try:
            await rooms.create(
                room, empty_timeout=settings.rtc_room_empty_timeout_seconds if owned else 0
            )
            try:
                session = await self._open(
                    session_id, principal_id, credentials, room, avatar, rate, publisher, agent
                )
            except BaseException:
                if owned:
                    await self._delete_room(room)
                raise
        except BaseException:
            self._release(principal_id)
            raise
        if owned:
            self._owned_rooms[session_id] = room
        session.browser_identity = identity
        self._live[session_id] = session
        if self._metrics is not None:
            self._metrics.rtc_sessions_active.inc()
        session.start()
        browser = self._browser_token(credentials, room, identity, request.name or "")
        audit.info(
            "rtc session created",
            extra={
                "session_id": session_id,
                "principal": principal_id,
                "avatar_id": avatar,
                "room": room,
                "identity": identity,
            },
        )
        return CreatedRtcSession(
            session_id=session_id,
            livekit_url=credentials.url,
            room=room,
            room_owned=owned,
            identity=identity,
            token=browser.token,
            token_expires_at=browser.expires_at,
            avatar_id=avatar,
            avatar_identity=publisher,
            agent_identity=agent,
            sample_rate=rate,
            expires_at=int(time.time() + settings.rtc_max_session_seconds),
            idle_timeout_seconds=settings.rtc_idle_timeout_seconds,
            playback_control=session.core.playback_control,
            producer_ticket=producer_ticket,
        )

    # --- the producer's tickets and socket ---

    def _ticket_service(self) -> TicketService:
        if self.tickets is None:
            raise AppError(ErrorCode.INTERNAL_ERROR, "RTC producer tickets need a ticket service")
        return self.tickets

    async def _issue(self, session: RtcSession) -> str:
        tickets = self._ticket_service()
        return await tickets.issue(session.session_id, session.principal_id, "rtc-producer")

    async def producer_ticket(self, session_id: str, principal_id: str) -> str:
        """A new producer ticket for one of the caller's live sessions (to reconnect)."""
        self.configured()
        return await self._issue(self.get(session_id, principal_id))

    async def attach(self, session_id: str, ticket: str) -> RtcSession:
        """The live session a producer ticket opens (spent either way)."""
        grant = await self._ticket_service().redeem(session_id, ticket, "rtc-producer")
        session = self._live.get(session_id)
        if session is None or session.principal_id != grant.principal_id:
            raise AppError(ErrorCode.SESSION_CLOSED, "the RTC session has ended")
        return session

    def token(
        self,
        session_id: str,
        principal_id: str,
        *,
        identity: str | None = None,
        name: str | None = None,
    ) -> BrowserToken:
        """A new browser token for one of the caller's sessions (a reloaded page, a second
        viewer); by default for the identity the session was created with."""
        credentials, _ = self.configured()
        session = self.get(session_id, principal_id)
        _checked_name(identity, "identity")
        if identity == self.settings.rtc_avatar_identity:
            raise AppError(ErrorCode.INVALID_REQUEST, "identity is the avatar's identity")
        return self._browser_token(
            credentials, session.room, identity or session.browser_identity, name or ""
        )

    def _browser_token(
        self, credentials: LiveKitCredentials, room: str, identity: str, name: str
    ) -> BrowserToken:
        ttl = self.settings.rtc_token_ttl_seconds
        expires_at = int(time.time()) + ttl
        token = browser_token(credentials, room=room, identity=identity, ttl_seconds=ttl, name=name)
        return BrowserToken(identity, token, expires_at)

    async def _open(
        self,
        session_id: str,
        principal_id: str,
        credentials: LiveKitCredentials,
        room: str,
        avatar: str,
        rate: int,
        publisher: str,
        agent: str,
    ) -> RtcSession:
        settings = self.settings
        attributes = publisher_attributes(agent)
        egress = message_pb2.LiveKitEgressConfig(
            url=credentials.url,
            api_token=publisher_token(
                credentials,
                room=room,
                publisher_id=publisher,
                on_behalf_of=agent,
                ttl_seconds=settings.rtc_publisher_token_ttl_seconds,
            ),
            room_name=room,
            publisher_id=publisher,
            extra_attributes=attributes,
            # The avatar leaves the room after the same silence as ends the session.
            idle_timeout=math.ceil(settings.rtc_idle_timeout_seconds),
        )
        connector = EgressConnector(self.ingress, egress, self.policy, metrics=self._metrics)
        session = RtcSession(
            session_id,
            principal_id=principal_id,
            avatar_id=avatar,
            sample_rate=rate,
            room=room,
            limits=self.limits,
            connector=connector,
            metrics=self._metrics,
            on_end=self._ended,
            wire=self.wire,
        )
        conn = await connector.connect_first(avatar, rate)
        session.core.connected(conn.playback_control)
        return session

    # --- ending ---

    async def delete(self, session_id: str, principal_id: str, within: float = 10.0) -> None:
        """End one of the caller's sessions and wait until its room is gone."""
        session = self.get(session_id, principal_id)
        session.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await session.wait_closed()
                retiring = self._retiring.get(session_id)
                if retiring is not None:
                    await asyncio.shield(retiring)

    def _ended(self, session: RtcSession) -> None:
        if self._live.get(session.session_id) is session:
            del self._live[session.session_id]
            self._release(session.principal_id)
            if self._metrics is not None:
                self._metrics.rtc_sessions_active.dec()
        code = session.close_code
        audit.info(
            "rtc session ended",
            extra={
                "session_id": session.session_id,
                "principal": session.principal_id,
                "error_code": code.value if code is not None else None,
                "upstream_connections": session.connector.connections,
            },
        )
        room = self._owned_rooms.pop(session.session_id, None)
        if room is not None:
            task = asyncio.get_running_loop().create_task(self._delete_room(room))
            self._retiring[session.session_id] = task
            task.add_done_callback(lambda _: self._retiring.pop(session.session_id, None))

    async def _delete_room(self, room: str) -> None:
        if self.rooms is None:
            return
        try:
            await self.rooms.delete(room)
        except AppError as error:
            log.warning("could not delete the LiveKit room", extra=error.log_fields())

    def _release(self, principal_id: str) -> None:
        self._per_principal[principal_id] -= 1
        if self._per_principal[principal_id] <= 0:
            del self._per_principal[principal_id]

    # --- shutdown ---

    async def shutdown(self, within: float = 10.0) -> None:
        """Drain: every session ends with goingAway and its room is deleted."""
        self.draining = True
        sessions = list(self._live.values())
        for session in sessions:
            session.close(ErrorCode.GOING_AWAY)
        waits = [asyncio.ensure_future(s.wait_closed()) for s in sessions]
        waits += list(self._retiring.values())
        if waits:
            _, pending = await asyncio.wait(waits, timeout=within)
            for task in pending:
                task.cancel()
        retiring = list(self._retiring.values())
        if retiring:
            await asyncio.wait(retiring, timeout=within)

    async def aclose(self) -> None:
        await self.shutdown()
        if self.rooms is not None:
            await self.rooms.aclose()
