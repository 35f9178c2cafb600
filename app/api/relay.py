"""Host Mode relay routes: create sessions, issue tickets, and the `avatar-relay.v1` WebSocket.

- `POST /v1/relay/sessions`: a relay session and its first ticket (authenticated and rate limited
  like every `/v1` route).
- `POST /v1/relay/sessions/{sessionId}/tickets`: a new ticket to reconnect (same principal only).
- `GET /v1/relay?session=...&ticket=...` (WebSocket, subprotocol `avatar-relay.v1`): the ticket is
  the credential (browsers cannot set headers on a WebSocket).

Upgrade checks (docs/protocol.md section 6): a missing subprotocol or a foreign `Origin` is refused
with an HTTP error response instead of the upgrade (nothing of the protocol may run for them);
ticket, session and limit failures complete the upgrade and close at once with the code's close
code and the code as the reason, so a browser client can tell "get a new ticket" from "give up".
"""

from __future__ import annotations

import logging
from typing import Annotated, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Body, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from app.api.deps import PrincipalDep, Services, ServicesDep, connection_ip
from app.api.errors import error_response, error_responses, request_id
from app.api.ops import add_drain_hook
from app.api.security import SECURITY_REQUIREMENT, no_store
from app.errors import AppError, ErrorCode, spec
from app.logs import bind
from app.settings import PCM_SAMPLE_RATES
from avatar_relay_client.browser_protocol import SUBPROTOCOL

log = logging.getLogger("avatar_relay.relay")

router = APIRouter(prefix="/v1", tags=["relay"])

SOCKET_PATH: Final = "/v1/relay"
_WS_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
# Shutdown: how long sessions get to send their "going away" closes.
DRAIN_SECONDS: Final = 10.0


# Checked by the session service (with a message listing the rates); the schema says the same.
SampleRate = Annotated[int, WithJsonSchema({"type": "integer", "enum": list(PCM_SAMPLE_RATES)})]


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


class RelayTicket(BaseModel):
    sessionId: str
    ticket: str
    url: str
    ticketTtlSeconds: int


def socket_url(conn: HTTPConnection, services: Services, session_id: str, ticket: str) -> str:
    """ws(s)://<public host>/v1/relay?session=<id>&ticket=<ticket>. The load balancer routes the
    socket by the `session` argument (deploy/nginx.conf): keep that name."""
    base = services.settings.public_url or str(conn.base_url)
    parts = urlsplit(base)
    scheme = _WS_SCHEMES.get(parts.scheme.lower(), "ws")
    path = parts.path.rstrip("/") + SOCKET_PATH
    query = urlencode({"session": session_id, "ticket": ticket})
    return urlunsplit((scheme, parts.netloc, path, query, ""))


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
    created = await services.sessions.create(
        principal.id,
        body.avatarId if body is not None else None,
        body.sampleRate if body is not None else None,
    )
    no_store(response)
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
    )


@router.post(
    "/relay/sessions/{session_id}/tickets",
    status_code=201,
    summary="A new WebSocket ticket for one of the caller's relay sessions (to reconnect)",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    responses=error_responses(
        ErrorCode.UNAUTHORIZED,
        ErrorCode.SESSION_NOT_FOUND,
        ErrorCode.SESSION_CLOSED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.STORE_UNAVAILABLE,
    ),
)
async def create_relay_ticket(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: Annotated[str, Path(max_length=64)],
) -> RelayTicket:
    ticket = await services.sessions.issue_ticket(session_id, principal.id)
    no_store(response)
    return RelayTicket(
        sessionId=session_id,
        ticket=ticket,
        url=socket_url(request, services, session_id, ticket),
        ticketTtlSeconds=int(services.tickets.ttl_seconds),
    )


# --- the WebSocket ---


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


async def _deny(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    """Refuse the upgrade with the usual JSON error body (HTTP status of the code)."""
    try:
        await websocket.send_denial_response(error_response(websocket, code, message))
    except RuntimeError:
        await websocket.close(spec(code).close_code, code.value)


async def _accept_and_close(websocket: WebSocket, error: AppError) -> None:
    await websocket.accept(subprotocol=SUBPROTOCOL)
    await websocket.close(error.spec.close_code, error.code.value)


@router.websocket("/relay")
async def relay_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
        await _deny(websocket, ErrorCode.INVALID_REQUEST, f"subprotocol {SUBPROTOCOL} required")
        return
    if not origin_allowed(websocket, services):
        await _deny(websocket, ErrorCode.ORIGIN_NOT_ALLOWED, "origin is not on the allow-list")
        return
    session_id = websocket.query_params.get("session", "")
    ticket = websocket.query_params.get("ticket", "")
    with bind(session_id=session_id[:64] or None):
        try:
            await services.limiter.check_ip(connection_ip(websocket, services))
            runner = await services.sessions.attach(session_id, ticket)
        except AppError as error:
            log.info("relay socket refused", extra=error.log_fields())
            await _accept_and_close(websocket, error)
            return
        except Exception:
            log.exception("relay socket setup failed")
            await _accept_and_close(websocket, AppError(ErrorCode.INTERNAL_ERROR))
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        await runner.serve(websocket)


def install_relay(app: FastAPI) -> None:
    """Mount the routes and drain live sessions when shutdown begins (after `install_ops`)."""
    app.include_router(router)

    async def drain_sessions() -> None:
        services: Services | None = getattr(app.state, "services", None)
        if services is not None:
            await services.sessions.shutdown(DRAIN_SECONDS)

    add_drain_hook(app, drain_sessions)
