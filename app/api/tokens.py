"""`POST /v1/session-tokens`: a fresh single-use SpatialReal session token for the caller.

The FastAPI route below defines and documents the endpoint; `FastMint`, mounted in front of it,
serves the well-formed requests that make up nearly all traffic without FastAPI's per-request
machinery and hands everything else to the route.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app.api.deps import PrincipalDep, Services, ServicesDep, require_principal
from app.api.errors import ErrorResponse, request_id
from app.api.security import SECURITY_REQUIREMENT
from app.auth import Principal
from app.errors import AppError, ErrorCode

router = APIRouter(prefix="/v1", tags=["tokens"])

MAX_IDEMPOTENCY_KEY_LENGTH = 255


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttlSeconds: int | None = Field(
        default=None,
        description=(
            "Lifetime wanted, in seconds, within the server's policy (TOKEN_TTL_MIN_SECONDS .."
            " TOKEN_TTL_MAX_SECONDS). Omitted: TOKEN_TTL_DEFAULT_SECONDS, and with a token pool"
            " configured the token comes from the pool (its expiry may be sooner than a full"
            " TTL, but never within TOKEN_POOL_MIN_REMAINING_SECONDS)."
        ),
    )


class SessionToken(BaseModel):
    sessionToken: str = Field(description="Single-use token: opens one avatar session.")
    expireAt: int = Field(description="Unix seconds after which the token opens no session.")
    appId: str
    region: str = Field(description="The SpatialReal region that minted the token.")


def _errors(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = out.setdefault(
            AppError(code).spec.http_status, {"model": ErrorResponse, "description": ""}
        )
        entry["description"] = ", ".join(filter(None, [entry["description"], code.value]))
    return out


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not value.isascii():
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} ASCII characters",
        )
    return value


@router.post(
    "/session-tokens",
    status_code=201,
    response_model=SessionToken,
    summary="Mint a single-use session token",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    responses=_errors(
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.REQUEST_IN_PROGRESS,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.INTERNAL_ERROR,
        ErrorCode.SERVER_ERROR,
        ErrorCode.SESSION_TOKEN_EXPIRED,
        ErrorCode.BILLING_REQUIRED,
        ErrorCode.APP_ID_UNRECOGNIZED,
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.CONNECTION_FAILED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.STORE_UNAVAILABLE,
    ),
)
async def create_session_token(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[TokenRequest | None, Body()] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retries with the same key (same caller, within IDEMPOTENCY_TTL_SECONDS)"
            " get the first answer instead of a second token.",
        ),
    ] = None,
) -> JSONResponse:
    ttl = body.ttlSeconds if body is not None else None
    return await _issue(request, services, principal, ttl, idempotency_key)


async def _issue(
    request: Request,
    services: Services,
    principal: Principal,
    ttl: int | None,
    idempotency_key: str | None,
) -> JSONResponse:
    rid = request_id(request)
    outcome = await services.tokens.issue(
        principal.id, ttl, idempotency_key=_idempotency_key(idempotency_key), request_id=rid
    )
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-ID": rid}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    token = outcome.token
    # A response built here, not a model for FastAPI to validate and serialise again: the body
    # is four fields this module just wrote (`response_model` still documents the shape).
    content = {
        "sessionToken": token.session_token,
        "expireAt": token.expire_at,
        "appId": token.app_id,
        "region": token.region,
    }
    return JSONResponse(content, status_code=201, headers=headers)


# --- the fast path ---

# Larger integers go to FastAPI, so that whatever pydantic says about them stays the answer.
_FAST_TTL_LIMIT = 2**31


def _simple_ttl(content_type: str | None, body: bytes) -> tuple[bool, int | None]:
    """(True, ttlSeconds) when FastAPI would read `body` as exactly this, without coercion:
    empty, or `application/json` holding an object with at most an integer or null
    `ttlSeconds`. (False, None) for everything else, errors included."""
    if not body:
        return True, None
    if content_type is None or content_type.strip().lower() != "application/json":
        return False, None
    try:
        data = json.loads(body)
    except ValueError:
        return False, None
    if not isinstance(data, dict) or any(key != "ttlSeconds" for key in data):
        return False, None
    ttl = data.get("ttlSeconds")
    if ttl is None or (type(ttl) is int and -_FAST_TTL_LIMIT < ttl < _FAST_TTL_LIMIT):
        return True, ttl
    return False, None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` as if `body` had not been read yet."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class FastMint:
    """Serves `POST /v1/session-tokens` ahead of the FastAPI route for the same path.

    Well-formed requests (see `_simple_ttl`: nearly all of them) get the same guard
    (`require_principal`), the same service call and the same answer as through the FastAPI
    route, minus FastAPI's per-request machinery (dependency solving, body validation): ~100 µs
    of CPU per request, a fifth of a no-pool mint (bench/tokens.py). Every other request is
    replayed, body included, to the FastAPI route, so errors and their precedence stay exactly
    FastAPI's. The FastAPI route also remains what OpenAPI documents.
    """

    def __init__(self, route: APIRoute) -> None:
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What the router would have recorded for the FastAPI route (the HTTP metrics label).
        scope["route"] = self.route
        request = Request(scope, receive)
        body = await request.body()
        simple, ttl = _simple_ttl(request.headers.get("content-type"), body)
        if not simple:
            await self.route.handle(scope, _replay(body, receive), send)
            return
        principal = await require_principal(request)
        services: Services = request.app.state.services
        idempotency_key = request.headers.get("idempotency-key")
        response = await _issue(request, services, principal, ttl, idempotency_key)
        await response(scope, receive, send)


def _install_fast_path() -> None:
    route = next(
        r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is create_session_token
    )
    fast = Route(route.path, FastMint(route), methods=["POST"], include_in_schema=False)
    router.routes.insert(0, fast)


_install_fast_path()
