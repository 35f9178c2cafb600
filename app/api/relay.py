"""Host Mode relay routes: create sessions, issue tickets, and the relay's two WebSockets.

- `POST /v1/relay/sessions`: a relay session and its first ticket, plus a producer ticket when
  its audio comes from (or may come from) a server-side producer (authenticated and rate limited
  like every `/v1` route).
- `POST /v1/relay/sessions/{sessionId}/tickets`: a new browser ticket to reconnect (same
  principal only); `.../producer-tickets`: a new producer ticket.
- `GET /v1/relay?session=...&ticket=...` (WebSocket, subprotocol `avatar-relay.v1`): the
  browser's socket; the ticket is the credential (browsers cannot set headers on a WebSocket).
- `GET /v1/relay/producer?session=...&ticket=...` (subprotocol `avatar-relay.producer.v1`): a
  producer's socket (docs/protocol.md part II), with a producer ticket.

Upgrade checks (docs/protocol.md section 6): a missing subprotocol or a foreign `Origin` is refused
with an HTTP error response instead of the upgrade (nothing of the protocol may run for them);
ticket, session and limit failures complete the upgrade and close at once with the code's close
code and the code as the reason, so a browser client can tell "get a new ticket" from "give up".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from app.api.deps import PrincipalDep, Services, ServicesDep, SessionIdPath, connection_ip
from app.api.errors import error_response, error_responses, request_id
from app.api.ops import add_drain_hook
from app.api.security import SECURITY_REQUIREMENT, no_store
from app.errors import AppError, ErrorCode, spec
from app.logs import bind
from app.relay.conversations import Role
from app.sessions import HANDOVER_SECONDS, audio_routing
from app.settings import PCM_SAMPLE_RATES
from avatar_relay_client import browser_protocol, producer_protocol

SUBPROTOCOL: Final = browser_protocol.SUBPROTOCOL
SUBPROTOCOLS: Final[dict[Role, str]] = {
    "browser": browser_protocol.SUBPROTOCOL,
    "producer": producer_protocol.SUBPROTOCOL,
}

log = logging.getLogger("avatar_relay.relay")

router = APIRouter(prefix="/v1", tags=["relay"])

SOCKET_PATH: Final = "/v1/relay"
PRODUCER_SOCKET_PATH: Final = "/v1/relay/producer"
_SOCKET_PATHS: Final[dict[Role, str]] = {"browser": SOCKET_PATH, "producer": PRODUCER_SOCKET_PATH}
_WS_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


# Checked by the session service (with a message listing the rates); the schema says the same.
SampleRate = Annotated[int, WithJsonSchema({"type": "integer", "enum": list(PCM_SAMPLE_RATES)})]


class SessionRequest(BaseModel):
    # forwardMicrophone only with a producer, audioEcho false only without one as the source
    # (the service checks both: invalidRequest).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"forwardMicrophone": {"const": True}},
                        "required": ["forwardMicrophone"],
                    },
                    "then": {
                        "properties": {"audioSource": {"const": "producer"}},
                        "required": ["audioSource"],
                    },
                },
                {
                    "if": {
                        "properties": {"audioEcho": {"const": False}},
                        "required": ["audioEcho"],
                    },
                    "then": {"properties": {"audioSource": {"const": "browser"}}},
                },
            ]
        },
    )

    avatarId: str | None = Field(
        default=None,
        max_length=256,
        description="The avatar to drive; omitted: DEFAULT_AVATAR_ID. Must be on the allow-list.",
    )
    sampleRate: SampleRate | None = Field(
        default=None,
        description="PCM s16le sample rate of the session's audio; omitted: DEFAULT_SAMPLE_RATE.",
    )
    withSessionToken: bool = Field(
        default=False,
        description="Also mint a single-use SpatialReal session token (as POST"
        " /v1/session-tokens does, same policy and limits) for the page's web SDK to download the"
        " avatar with: one call instead of two.",
    )
    audioSource: Literal["browser", "producer"] = Field(
        default="browser",
        description="Whose audio is the avatar's speech: the browser's (`avatar-relay.v1`), or a"
        " server-side producer's (`avatar-relay.producer.v1`, docs/protocol.md part II); the"
        " answer then carries a `producer` credential.",
    )
    forwardMicrophone: bool = Field(
        default=False,
        description="With audioSource \"producer\": the browser's AUDIO is the user's microphone,"
        " forwarded to the producer. Without it, browser AUDIO ends the session with"
        " microphoneDisabled.",
    )
    allowProducer: bool = Field(
        default=False,
        description='With audioSource "browser": a producer may attach too (both then speak);'
        " the answer carries a `producer` credential.",
    )
    audioEcho: bool = Field(
        default=True,
        description="false: the browser's own audio is not sent back; each of its conversations"
        " starts with CONVERSATION_STARTED and the client yields the audio it sent (half the"
        ' messages down). Only with audioSource "browser" (else invalidRequest); a producer\'s'
        " speech is always sent.",
    )


class ProducerCredential(BaseModel):
    ticket: str = Field(description="Single-use credential for one producer socket connection.")
    url: str = Field(description="The producer's WebSocket URL (carries session and ticket).")
    ticketTtlSeconds: int = Field(description="The ticket is valid this long.")


class RelaySession(BaseModel):
    sessionId: str
    ticket: str = Field(description="Single-use credential for one socket connection.")
    url: str = Field(description="The WebSocket URL to open (carries session and ticket).")
    sampleRate: int
    avatarId: str
    resumeWindowSeconds: int = Field(
        description="How long the session waits for a dropped client to reconnect."
    )
    ticketTtlSeconds: int = Field(description="The ticket is valid this long.")
    appId: str = Field(description="The SpatialReal app id, for the page's web SDK.")
    sessionToken: str | None = Field(
        default=None,
        description="With `withSessionToken`: the web SDK's `credential` (downloads the avatar).",
    )
    sessionTokenExpireAt: int | None = Field(
        default=None, description="With `withSessionToken`: unix seconds the token is valid until."
    )
    audioSource: Literal["browser", "producer"] = Field(
        description="Whose audio is the avatar's speech."
    )
    forwardMicrophone: bool = Field(description="Browser audio is forwarded to the producer.")
    allowProducer: bool = Field(description="A producer may attach (always with a producer).")
    audioEcho: bool = Field(
        description="The browser's own audio comes back as AUDIO (false: the client yields it)."
    )
    producer: ProducerCredential | None = Field(
        default=None,
        description="When the session accepts a producer: its credential. Keep it on your"
        " server; hand the browser only `ticket`/`url`.",
    )


class RelayTicket(BaseModel):
    sessionId: str
    ticket: str
    url: str
    ticketTtlSeconds: int


def socket_url(
    conn: HTTPConnection,
    services: Services,
    session_id: str,
    ticket: str,
    role: Role = "browser",
) -> str:
    """ws(s)://<public host>/v1/relay[/producer]?session=<id>&ticket=<ticket>. The load balancer
    routes the socket by the `session` argument (deploy/nginx.conf): keep that name."""
    return socket_url_at(public_base(conn, services), session_id, ticket, role)


def public_base(conn: HTTPConnection, services: Services) -> str:
    """The base URL clients reach this server at: PUBLIC_URL, else the one the request used."""
    return services.settings.public_url or str(conn.base_url)


def socket_url_at(base: str, session_id: str, ticket: str, role: Role = "browser") -> str:
    """The relay socket URL of `role` under `base`."""
    return ws_url_at(base, _SOCKET_PATHS[role], session_id, ticket)


def ws_url(
    conn: HTTPConnection, services: Services, socket_path: str, session_id: str, ticket: str
) -> str:
    """ws(s)://<public host><socket_path>?session=<id>&ticket=<ticket>."""
    return ws_url_at(public_base(conn, services), socket_path, session_id, ticket)


def ws_url_at(base: str, socket_path: str, session_id: str, ticket: str) -> str:
    """ws(s)://<base's host and path><socket_path>?session=<id>&ticket=<ticket>."""
    parts = urlsplit(base)
    scheme = _WS_SCHEMES.get(parts.scheme.lower(), "ws")
    path = parts.path.rstrip("/") + socket_path
    query = urlencode({"session": session_id, "ticket": ticket})
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def credential_route(
    router: APIRouter, path: str, summary: str, *errors: ErrorCode
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """How a route minting a new credential for one of the caller's sessions (a ticket, an access
    token) is declared: POST answered 201, authenticated, with its error answers."""
    return router.post(
        path,
        status_code=201,
        summary=summary,
        openapi_extra={"security": SECURITY_REQUIREMENT},
        responses=error_responses(*errors),
    )


def minted_ticket(
    conn: HTTPConnection, services: Services, socket_path: str, session_id: str, ticket: str
) -> RelayTicket:
    """A fresh ticket as every ticket route answers it (relay and RTC, browser and producer):
    the ticket, the URL of the socket it opens, how long it is valid."""
    return RelayTicket(
        sessionId=session_id,
        ticket=ticket,
        url=ws_url(conn, services, socket_path, session_id, ticket),
        ticketTtlSeconds=int(services.tickets.ttl_seconds),
    )


@router.post(
    "/relay/sessions",
    status_code=201,
    summary="Create a relay session (Host Mode) and its first WebSocket ticket",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    response_model_exclude_none=True,
    responses=error_responses(
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.AVATAR_NOT_ALLOWED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.SESSION_LIMIT,
        ErrorCode.GOING_AWAY,
        ErrorCode.STORE_UNAVAILABLE,
        # Minting the session token (`withSessionToken`), as POST /v1/session-tokens answers.
        ErrorCode.SERVER_ERROR,
        ErrorCode.SESSION_TOKEN_EXPIRED,
        ErrorCode.BILLING_REQUIRED,
        ErrorCode.APP_ID_UNRECOGNIZED,
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.CONNECTION_FAILED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
    ),
)
async def create_relay_session(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[SessionRequest | None, Body()] = None,
) -> RelaySession:
    token = None
    if body is not None and body.withSessionToken:
        # First: a token that cannot be had must not leave a session behind.
        issued = await services.tokens.issue(principal.id, request_id=request_id(request))
        token = issued.token
    request_body = body if body is not None else SessionRequest()
    routing = audio_routing(
        request_body.audioSource,
        forward_microphone=request_body.forwardMicrophone,
        allow_producer=request_body.allowProducer,
        audio_echo=request_body.audioEcho,
    )
    created = await services.sessions.create(
        principal.id, request_body.avatarId, request_body.sampleRate, routing
    )
    no_store(response)
    producer = None
    if created.producer_ticket is not None:
        producer = ProducerCredential(
            ticket=created.producer_ticket,
            url=socket_url(
                request, services, created.session_id, created.producer_ticket, "producer"
            ),
            ticketTtlSeconds=created.ticket_ttl_seconds,
        )
    return RelaySession(
        sessionId=created.session_id,
        ticket=created.ticket,
        url=socket_url(request, services, created.session_id, created.ticket),
        sampleRate=created.sample_rate,
        avatarId=created.avatar_id,
        resumeWindowSeconds=created.resume_window_seconds,
        ticketTtlSeconds=created.ticket_ttl_seconds,
        appId=services.settings.app_id,
        sessionToken=token.session_token if token is not None else None,
        sessionTokenExpireAt=token.expire_at if token is not None else None,
        audioSource=routing.source,
        forwardMicrophone=routing.forward_microphone,
        allowProducer=routing.has_producer,
        audioEcho=routing.echo,
        producer=producer,
    )


@credential_route(
    router,
    "/relay/sessions/{session_id}/tickets",
    "A new WebSocket ticket for one of the caller's relay sessions (to reconnect)",
    ErrorCode.UNAUTHORIZED,
    ErrorCode.SESSION_NOT_FOUND,
    ErrorCode.SESSION_CLOSED,
    ErrorCode.RATE_LIMITED,
    ErrorCode.STORE_UNAVAILABLE,
)
async def create_relay_ticket(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
) -> RelayTicket:
    ticket = await services.sessions.issue_ticket(session_id, principal.id)
    no_store(response)
    return minted_ticket(request, services, _SOCKET_PATHS["browser"], session_id, ticket)


@credential_route(
    router,
    "/relay/sessions/{session_id}/producer-tickets",
    "A new producer ticket for one of the caller's relay sessions (docs/protocol.md §10)",
    ErrorCode.UNAUTHORIZED,
    ErrorCode.SESSION_NOT_FOUND,
    ErrorCode.SESSION_CLOSED,
    ErrorCode.PRODUCER_NOT_ALLOWED,
    ErrorCode.RATE_LIMITED,
    ErrorCode.STORE_UNAVAILABLE,
)
async def create_producer_ticket(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
) -> RelayTicket:
    ticket = await services.sessions.issue_ticket(session_id, principal.id, "producer")
    no_store(response)
    return minted_ticket(request, services, _SOCKET_PATHS["producer"], session_id, ticket)


# --- the WebSockets ---


def origin_allowed(websocket: WebSocket, services: Services) -> bool:
    """No Origin: not a browser (the ticket is still required). Otherwise the origin must be on
    CORS_ORIGINS, or be this server itself (its Host, or PUBLIC_URL's host): the demo page."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    settings = services.settings
    if origin in settings.cors_origins:
        return True
    netloc = urlsplit(origin).netloc.lower()
    if not netloc:
        return False
    own = {websocket.headers.get("host", "").lower()}
    if settings.public_url:
        own.add(urlsplit(settings.public_url).netloc.lower())
    return netloc in own


async def deny_upgrade(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    """Refuse the upgrade with the usual JSON error body (HTTP status of the code)."""
    try:
        await websocket.send_denial_response(error_response(websocket, code, message))
    except RuntimeError:
        await websocket.close(spec(code).close_code, code.value)


async def refused_upgrade(websocket: WebSocket, services: Services, subprotocol: str) -> bool:
    """The checks every socket of ours makes before its ticket: its subprotocol and origin.
    True when the upgrade was refused (with the JSON error body)."""
    if subprotocol not in websocket.scope.get("subprotocols", []):
        await deny_upgrade(
            websocket, ErrorCode.INVALID_REQUEST, f"subprotocol {subprotocol} required"
        )
        return True
    if not origin_allowed(websocket, services):
        await deny_upgrade(
            websocket, ErrorCode.ORIGIN_NOT_ALLOWED, "origin is not on the allow-list"
        )
        return True
    return False


async def accept_and_close(websocket: WebSocket, error: AppError, subprotocol: str) -> None:
    await websocket.accept(subprotocol=subprotocol)
    await websocket.close(error.spec.close_code, error.code.value)


@router.websocket("/relay")
async def relay_socket(websocket: WebSocket) -> None:
    await _serve_socket(websocket, "browser")


@router.websocket("/relay/producer")
async def producer_socket(websocket: WebSocket) -> None:
    await _serve_socket(websocket, "producer")


async def _serve_socket(websocket: WebSocket, role: Role) -> None:
    """One socket of a session's endpoint: the same checks for both, each its own protocol and
    its own kind of ticket."""
    services: Services = websocket.app.state.services
    subprotocol = SUBPROTOCOLS[role]
    if await refused_upgrade(websocket, services, subprotocol):
        return
    session_id = websocket.query_params.get("session", "")
    ticket = websocket.query_params.get("ticket", "")
    with bind(session_id=session_id[:64] or None):
        if services.sessions.refuses(session_id):
            # Draining, and the session is not here: HTTP 503 before the ticket is spent, so the
            # client tries again (once this instance is gone, nginx sends it to the next one).
            await deny_upgrade(websocket, ErrorCode.GOING_AWAY, "this instance is shutting down")
            return
        try:
            await services.limiter.check_ip(connection_ip(websocket, services))
            runner = await services.sessions.attach(session_id, ticket, role)
        except AppError as error:
            log.info("relay socket refused", extra={**error.log_fields(), "endpoint": role})
            if error.code in (ErrorCode.SESSION_MOVED, ErrorCode.STORE_UNAVAILABLE):
                # Running elsewhere right now: HTTP 503, so that it is tried again (by the
                # proxy on another instance, or by the client).
                await deny_upgrade(websocket, error.code, error.message)
                return
            await accept_and_close(websocket, error, subprotocol)
            return
        except Exception:
            log.exception("relay socket setup failed")
            await accept_and_close(websocket, AppError(ErrorCode.INTERNAL_ERROR), subprotocol)
            return
        await websocket.accept(subprotocol=subprotocol)
        await runner.serve(websocket, role)


def install_relay(app: FastAPI) -> None:
    """Mount the routes and drain live sessions when shutdown begins (after `install_ops`)."""
    app.include_router(router)

    async def drain_sessions() -> None:
        services: Services | None = getattr(app.state, "services", None)
        if services is not None:
            await services.sessions.shutdown(
                services.settings.drain_timeout_seconds, close_within=HANDOVER_SECONDS
            )

    add_drain_hook(app, drain_sessions)
