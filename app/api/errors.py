"""One JSON shape for every error answer: {"error": {"code", "message", "requestId"}}."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from app.errors import AppError, ErrorCode, spec

log = logging.getLogger("avatar_relay.api")


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    requestId: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def request_id(request: HTTPConnection) -> str:
    """The id of this request (or socket upgrade): the caller's X-Request-ID when sane, else a
    fresh one."""
    existing = getattr(request.state, "request_id", None)
    if isinstance(existing, str):
        return existing
    supplied = request.headers.get("x-request-id", "")
    rid = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else uuid.uuid4().hex
    request.state.request_id = rid
    return rid


def error_response(
    request: HTTPConnection, code: ErrorCode, message: str | None = None
) -> JSONResponse:
    rid = request_id(request)
    body = ErrorResponse(
        error=ErrorBody(code=code, message=message or spec(code).summary, requestId=rid)
    )
    return JSONResponse(
        body.model_dump(), status_code=spec(code).http_status, headers={"X-Request-ID": rid}
    )


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for OpenAPI: the error shape under each status these codes use."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = out.setdefault(spec(code).http_status, {"model": ErrorResponse, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], code.value]))
    return out


_STATUS_CODES: dict[int, ErrorCode] = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    429: ErrorCode.RATE_LIMITED,
}


_LOCATIONS: Final = frozenset({"body", "header", "query", "path", "cookie"})
_NOT_AN_OBJECT: Final = frozenset({"model_attributes_type", "model_type", "dict_type"})


def _describe_invalid(error: dict[str, Any], content_type: str) -> str:
    """One validation problem in words a person reads: where, then what."""
    if error.get("type") == "json_invalid":
        # pydantic's own text is "JSON decode error" at location `body.0` (a byte offset).
        reason = str(error.get("ctx", {}).get("error", "")).strip()
        return "the request body is not valid JSON" + (f" ({reason})" if reason else "")
    if tuple(error.get("loc", ())) == ("body",) and error.get("type") in _NOT_AN_OBJECT:
        hint = "" if "json" in content_type else " with Content-Type: application/json"
        return f"the request body must be a JSON object{hint}"
    loc = list(error.get("loc", ()))
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]  # the field's name says enough
    where = ".".join(str(part) for part in loc)
    what = str(error.get("msg", "invalid"))
    if error.get("type") == "string_pattern_mismatch":
        what = f"not in the accepted form (pattern {error.get('ctx', {}).get('pattern')})"
    return f"{where}: {what}" if where else (what if error else "invalid request")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        log.info("request failed", extra={"request_id": request_id(request), **exc.log_fields()})
        response = error_response(request, exc.code, exc.message)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        text = _describe_invalid(first, request.headers.get("content-type", "").lower())
        return error_response(request, ErrorCode.INVALID_REQUEST, text)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        response = error_response(request, code, str(exc.detail))
        response.status_code = exc.status_code
        # The raiser's headers belong to the answer: `Allow` on a 405, `WWW-Authenticate` on a 401.
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": request_id(request)})
        return error_response(request, ErrorCode.INTERNAL_ERROR)
