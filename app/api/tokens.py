"""`POST /v1/session-tokens`: a fresh single-use SpatialReal session token for the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import PrincipalDep, Services
from app.api.errors import error_responses, request_id
from app.api.security import SECURITY_REQUIREMENT
from app.errors import ErrorCode
from app.settings import Settings

router = APIRouter(prefix="/v1", tags=["tokens"])

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Printable ASCII, no leading or trailing space (HTTP strips those, so they could never match).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"


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


def document_ttl_policy(settings: Settings) -> Callable[[dict[str, Any]], None]:
    """An OpenAPI refinement step: `ttlSeconds` carries this server's TOKEN_TTL_* bounds."""

    def step(schema: dict[str, Any]) -> None:
        field = schema["components"]["schemas"]["TokenRequest"]["properties"]["ttlSeconds"]
        for option in field.get("anyOf", [field]):
            if option.get("type") == "integer":
                option["minimum"] = settings.token_ttl_min_seconds
                option["maximum"] = settings.token_ttl_max_seconds

    return step


@router.post(
    "/session-tokens",
    status_code=201,
    response_model=SessionToken,
    summary="Mint a single-use session token",
    openapi_extra={"security": SECURITY_REQUIREMENT},
    responses=error_responses(
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.REQUEST_IN_PROGRESS,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ErrorCode.RATE_LIMITED,
        ErrorCode.INTERNAL_ERROR,
        ErrorCode.SERVER_ERROR,
        ErrorCode.UPSTREAM_CREDENTIALS_REJECTED,
        ErrorCode.BILLING_REQUIRED,
        ErrorCode.CONCURRENCY_LIMIT,
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
    body: Annotated[TokenRequest | None, Body()] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Retries with the same key (same caller, within IDEMPOTENCY_TTL_SECONDS)"
            " get the first answer instead of a second token. 1-255 printable ASCII characters,"
            " e.g. a UUID.",
        ),
    ] = None,
) -> JSONResponse:
    # Read directly rather than through `ServicesDep`: one dependency less to solve per request.
    services: Services = request.app.state.services
    ttl = body.ttlSeconds if body is not None else None
    rid = request_id(request)
    outcome = await services.tokens.issue(
        principal.id, ttl, idempotency_key=idempotency_key, request_id=rid
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
