"""RTC mode routes (LiveKit): the avatar is published into a room the browser joins.

- `POST /v1/rtc/sessions`: a room (created through LiveKit's server API), the browser's access
  token for it, and the avatar's ingress session publishing into it (authenticated and rate
  limited like every `/v1` route). Answers what `AvatarPlayer.connect()` of the web SDK's RTC
  adapter takes (`url`, `token`, `roomName`), the avatar's participant identity, and with
  `withSessionToken` the web SDK's session token for loading the avatar.
- `POST /v1/rtc/sessions/{sessionId}/tokens`: a new browser token for the same room (a reloaded
  page, a second viewer).
- `POST /v1/rtc/sessions/{sessionId}/producer-tickets`: a new producer ticket (to reconnect).
- `DELETE /v1/rtc/sessions/{sessionId}`: end it; the avatar leaves and a room this server
  created is deleted.
- `GET /v1/rtc/producer?session=...&ticket=...` (WebSocket, subprotocol
  `avatar-relay.producer.v1`): the producer's socket, with an `rtc-producer` ticket. A route of
  its own rather than the relay's producer path dispatching on the ticket: the two sessions are
  different services with different lookups, and a ticket of one kind never opens the other.

Without LiveKit settings the REST routes answer 501 `rtcNotConfigured`. See docs/rtc.md.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

from fastapi import APIRouter, Body, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from app.api.deps import PrincipalDep, Services, ServicesDep, SessionIdPath, connection_ip
from app.api.errors import error_responses, request_id
from app.api.ops import add_drain_hook
from app.api.relay import (
    ProducerCredential,
    SampleRate,
    accept_and_close,
    credential_route,
    deny_upgrade,
    minted_ticket,
    refused_upgrade,
)
from app.api.security import SECURITY_REQUIREMENT, no_store
from app.errors import AppError, ErrorCode
from app.logs import bind
from app.rtc.service import NAME_PATTERN, RtcRequest
from avatar_relay_client import producer_protocol

log = logging.getLogger("avatar_relay.rtc")

router = APIRouter(prefix="/v1", tags=["rtc"])

DRAIN_SECONDS = 10.0
PRODUCER_SOCKET_PATH: Final = "/v1/rtc/producer"

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=128)]


class RtcSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    avatarId: str | None = Field(
        default=None,
        max_length=256,
        description="The avatar to publish; omitted: DEFAULT_AVATAR_ID. Must be on the allow-list.",
    )
    sampleRate: SampleRate | None = Field(
        default=None, description="PCM s16le rate of the audio fed to the avatar."
    )
    roomName: Name | None = Field(
        default=None,
        description="Publish into this existing (or new) room; it is never deleted by this"
        " server. Omitted: a new room of this server's, deleted when the session ends.",
    )
    identity: Name | None = Field(
        default=None, description="The browser participant's identity; omitted: a fresh one."
    )
    name: str | None = Field(
        default=None, max_length=128, description="The browser participant's display name."
    )
    agentIdentity: Name | None = Field(
        default=None,
        description="The agent the avatar publishes on behalf of (`lk.publish_on_behalf`);"
        " omitted: RTC_AGENT_IDENTITY.",
    )
    withSessionToken: bool = Field(
        default=False,
        description="Also mint a SpatialReal session token (as POST /v1/session-tokens does)"
        " for the web SDK to load the avatar with.",
    )


class RtcProducer(ProducerCredential):
    # The relay's credential, under its own name in the OpenAPI document.
    pass


class RtcProducerTicket(RtcProducer):
    sessionId: str


class RtcSession(BaseModel):
    sessionId: str
    url: str = Field(description="The LiveKit server to connect to (LIVEKIT_URL).")
    token: str = Field(description="The browser's LiveKit access token for the room.")
    tokenExpiresAt: int = Field(description="Unix seconds: the token must be used before this.")
    roomName: str
    identity: str = Field(description="The browser participant's identity.")
    avatarId: str
    avatarIdentity: str = Field(description="The avatar publisher's participant identity.")
    agentIdentity: str = Field(description="The agent the avatar publishes on behalf of.")
    sampleRate: int
    expiresAt: int = Field(description="Unix seconds: the session ends by then at the latest.")
    idleTimeoutSeconds: float = Field(description="The session ends after this long silent.")
    playbackControl: bool = Field(description="The avatar service offers pause and resume.")
    appId: str = Field(description="The SpatialReal app id, for the page's web SDK.")
    sessionToken: str | None = Field(
        default=None, description="With `withSessionToken`: the web SDK's session token."
    )
    sessionTokenExpireAt: int | None = Field(
        default=None, description="With `withSessionToken`: unix seconds it is valid until."
    )
    producer: RtcProducer = Field(
        description="The credential of the socket that feeds the avatar its audio (docs/rtc.md):"
        " keep it on your server; the browser needs none of it."
    )


class RtcTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: Name | None = Field(
        default=None, description="Omitted: the identity the session was created with."
    )
    name: str | None = Field(default=None, max_length=128, description="Display name.")


class RtcToken(BaseModel):
    sessionId: str
    url: str
    token: str
    tokenExpiresAt: int
    roomName: str
    identity: str


@router.post(
    "/rtc/sessions",
    status_code=201,
    summary="Create an RTC session: a LiveKit room with the avatar published into it",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    response_model_exclude_none=True,
    responses=error_responses(
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.AVATAR_NOT_ALLOWED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.SESSION_LIMIT,
        ErrorCode.RTC_NOT_CONFIGURED,
        ErrorCode.RTC_UNAVAILABLE,
        ErrorCode.RTC_CREDENTIALS_REJECTED,
        ErrorCode.GOING_AWAY,
        # The ingress session, as SpatialReal answers it.
        ErrorCode.INVALID_EGRESS_CONFIG,
        ErrorCode.EGRESS_UNAVAILABLE,
        ErrorCode.AVATAR_NOT_FOUND,
        ErrorCode.CREDITS_EXHAUSTED,
        ErrorCode.CONCURRENCY_LIMIT,
        ErrorCode.SERVER_ERROR,
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.CONNECTION_FAILED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
    ),
)
async def create_rtc_session(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[RtcSessionRequest | None, Body()] = None,
) -> RtcSession:
    body = body or RtcSessionRequest()
    rtc = services.rtc
    token = None
    if body.withSessionToken:
        rtc.configured()  # refuse before a token is spent
        issued = await services.tokens.issue(principal.id, request_id=request_id(request))
        token = issued.token
    created = await rtc.create(
        principal.id,
        RtcRequest(
            avatar_id=body.avatarId,
            sample_rate=body.sampleRate,
            room=body.roomName,
            identity=body.identity,
            name=body.name,
            agent_identity=body.agentIdentity,
        ),
    )
    no_store(response)
    return RtcSession(
        sessionId=created.session_id,
        url=created.livekit_url,
        token=created.token,
        tokenExpiresAt=created.token_expires_at,
        roomName=created.room,
        identity=created.identity,
        avatarId=created.avatar_id,
        avatarIdentity=created.avatar_identity,
        agentIdentity=created.agent_identity,
        sampleRate=created.sample_rate,
        expiresAt=created.expires_at,
        idleTimeoutSeconds=created.idle_timeout_seconds,
        playbackControl=created.playback_control,
        appId=services.settings.app_id,
        sessionToken=token.session_token if token is not None else None,
        sessionTokenExpireAt=token.expire_at if token is not None else None,
        producer=_producer(request, services, created.session_id, created.producer_ticket),
    )


def _producer(
    conn: HTTPConnection, services: Services, session_id: str, ticket: str
) -> RtcProducer:
    minted = minted_ticket(conn, services, PRODUCER_SOCKET_PATH, session_id, ticket)
    return RtcProducer(**minted.model_dump(exclude={"sessionId"}))


@credential_route(
    router,
    "/rtc/sessions/{session_id}/tokens",
    "A new browser access token for one of the caller's RTC sessions (page reload)",
    ErrorCode.INVALID_REQUEST,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.SESSION_NOT_FOUND,
    ErrorCode.RATE_LIMITED,
    ErrorCode.RTC_NOT_CONFIGURED,
)
async def create_rtc_token(
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
    body: Annotated[RtcTokenRequest | None, Body()] = None,
) -> RtcToken:
    body = body or RtcTokenRequest()
    rtc = services.rtc
    issued = rtc.token(session_id, principal.id, identity=body.identity, name=body.name)
    credentials, _ = rtc.configured()
    session = rtc.get(session_id, principal.id)
    no_store(response)
    return RtcToken(
        sessionId=session_id,
        url=credentials.url,
        token=issued.token,
        tokenExpiresAt=issued.expires_at,
        roomName=session.room,
        identity=issued.identity,
    )


@credential_route(
    router,
    "/rtc/sessions/{session_id}/producer-tickets",
    "A new producer ticket for one of the caller's RTC sessions (to reconnect)",
    ErrorCode.UNAUTHORIZED,
    ErrorCode.SESSION_NOT_FOUND,
    ErrorCode.RATE_LIMITED,
    ErrorCode.RTC_NOT_CONFIGURED,
    ErrorCode.STORE_UNAVAILABLE,
)
async def create_rtc_producer_ticket(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
) -> RtcProducerTicket:
    ticket = await services.rtc.producer_ticket(session_id, principal.id)
    no_store(response)
    credential = _producer(request, services, session_id, ticket)
    return RtcProducerTicket(sessionId=session_id, **credential.model_dump())


@router.websocket("/rtc/producer")
async def rtc_producer_socket(websocket: WebSocket) -> None:
    """The producer's socket: the relay's checks (subprotocol, origin, address limit), then
    an `rtc-producer` ticket for a live session of this instance."""
    services: Services = websocket.app.state.services
    subprotocol = producer_protocol.SUBPROTOCOL
    if await refused_upgrade(websocket, services, subprotocol):
        return
    session_id = websocket.query_params.get("session", "")
    ticket = websocket.query_params.get("ticket", "")
    with bind(session_id=session_id[:64] or None):
        try:
            await services.limiter.check_ip(connection_ip(websocket, services))
            session = await services.rtc.attach(session_id, ticket)
        except AppError as error:
            log.info("rtc producer socket refused", extra=error.log_fields())
            if error.code is ErrorCode.STORE_UNAVAILABLE:
                await deny_upgrade(websocket, error.code, error.message)
                return
            await accept_and_close(websocket, error, subprotocol)
            return
        await websocket.accept(subprotocol=subprotocol)
        await session.serve(websocket)


@router.delete(
    "/rtc/sessions/{session_id}",
    status_code=204,
    summary="End one of the caller's RTC sessions (the avatar leaves; a room of ours is deleted)",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    responses=error_responses(
        ErrorCode.UNAUTHORIZED,
        ErrorCode.SESSION_NOT_FOUND,
        ErrorCode.RATE_LIMITED,
        ErrorCode.RTC_NOT_CONFIGURED,
    ),
)
async def delete_rtc_session(
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
) -> Response:
    services.rtc.configured()
    await services.rtc.delete(session_id, principal.id)
    return Response(status_code=204)


def install_rtc(app: FastAPI) -> None:
    """Mount the routes; end every RTC session when shutdown begins (after `install_ops`)."""
    app.include_router(router)

    async def drain_sessions() -> None:
        services: Services | None = getattr(app.state, "services", None)
        if services is not None:
            await services.rtc.shutdown(DRAIN_SECONDS)

    add_drain_hook(app, drain_sessions)
