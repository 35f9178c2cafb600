"""Browser-facing hardening: a CORS allow-list and security headers on every answer.

CORS is only installed when origins are configured (an empty list means same-origin only), and
never with `*`: callers send credentials, so each origin must be named. The headers middleware is
plain ASGI (no per-request objects) because it sits in front of every request, including the
token endpoint's hot path.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-API-Key", "Idempotency-Key", "X-Request-ID"]
EXPOSED_HEADERS = [
    "Retry-After",
    "X-Request-ID",
    "Idempotent-Replayed",
    "RateLimit",
    "RateLimit-Policy",
]

_BASE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# API answers are data, never documents: forbid everything a browser could do with them.
_API_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]
_PAGE_CSP = (b"content-security-policy", b"frame-ancestors 'none'")


def no_store(response: Response) -> None:
    """The answer holds a credential: no cache may keep it (HTTP/1.0 caches included)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="avatar-relay"')


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts
        # The four possible header sets (API or page, 401 or not), built once.
        self._extra: dict[tuple[bool, bool], list[tuple[bytes, bytes]]] = {}
        for api in (False, True):
            for unauthorized in (False, True):
                extra = list(_BASE_HEADERS)
                extra.extend(_API_HEADERS if api else [_PAGE_CSP])
                if hsts:
                    extra.append(_HSTS)
                if unauthorized:
                    extra.append(_WWW_AUTHENTICATE)
                self._extra[(api, unauthorized)] = extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/v1/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = self._extra[(api, message["status"] == 401)]
                headers.extend(item for item in extra if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# OpenAPI names of the credentials `require_principal` accepts; routes list them in `security`.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "AUTH_MODE=api-key: one of AUTH_API_KEYS; AUTH_MODE=jwt: a signed JWT.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "AUTH_MODE=api-key only: one of AUTH_API_KEYS.",
    },
}
SECURITY_REQUIREMENT: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def add_security_schemes(schema: dict[str, Any]) -> None:
    """An OpenAPI refinement step (app.api.openapi): declare the schemes routes refer to."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the headers middleware, then CORS outside it (so preflights are answered first)."""
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.app_env == "production")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
