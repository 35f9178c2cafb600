"""The OpenAPI document says what the server enforces, and `/docs` works without the internet.

FastAPI's generated schema is refined once per app:

- every operation's tag is described (`tags`);
- request-validation failures are answered `400 invalidRequest` in the one error shape
  (`app.api.errors`), so FastAPI's default `422 HTTPValidationError` entries are replaced by that
  `400` (a route's own `422`, such as `idempotencyKeyReused`, stays);
- the credentials `/v1` routes accept are declared (`securitySchemes`, see `app.api.security`).

Swagger UI and ReDoc are served with the assets of `fastapi-offline` (a maintained package that
ships them) instead of a CDN, so the docs render on an air-gapped host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.api.errors import ErrorResponse

# Where the Swagger UI / ReDoc assets are served (the server's own copies, no CDN).
DOCS_ASSETS_URL: Final = "/docs/assets"

TAGS: Final[list[dict[str, str]]] = [
    {
        "name": "tokens",
        "description": "Single-use SpatialReal session tokens for SDK (direct) mode (docs/api.md).",
    },
    {
        "name": "relay",
        "description": "Host Mode relay sessions and their WebSocket tickets. The sockets"
        " themselves (the browser's `GET /v1/relay`, subprotocol `avatar-relay.v1`; a server-side"
        " producer's `GET /v1/relay/producer`, subprotocol `avatar-relay.producer.v1`) are"
        " described in docs/protocol.md.",
    },
    {
        "name": "rtc",
        "description": "RTC mode: LiveKit rooms with the avatar published into them, and the"
        " browser's access token (docs/rtc.md). 501 rtcNotConfigured without LiveKit settings.",
    },
    {"name": "health", "description": "Liveness: the process runs; which upstream it uses."},
    {"name": "operations", "description": "Readiness for load balancers and orchestrators."},
]

_VALIDATION_REF: Final = "#/components/schemas/HTTPValidationError"
_FASTAPI_VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")


def new_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose `/docs` and `/redoc` load their assets from this server."""
    return FastAPIOffline(openapi_tags=TAGS, static_url=DOCS_ASSETS_URL, **kwargs)


def _error_ref(app_schema: dict[str, Any]) -> str:
    name = ErrorResponse.__name__
    app_schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        name, ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    return f"#/components/schemas/{name}"


def _validation_as_400(schema: dict[str, Any]) -> None:
    error_ref = _error_ref(schema)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.get("responses", {})
            default = responses.get("422")
            content = (default or {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") != _VALIDATION_REF:
                continue
            del responses["422"]
            entry = responses.setdefault(
                "400",
                {
                    "description": "",
                    "content": {"application/json": {"schema": {"$ref": error_ref}}},
                },
            )
            codes = [part for part in entry["description"].split(", ") if part]
            if "invalidRequest" not in codes:
                entry["description"] = ", ".join(["invalidRequest", *codes])
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)


def refine_openapi(app: FastAPI, *steps: Callable[[dict[str, Any]], None]) -> None:
    """Apply `steps` (and the validation-answer fix) to the app's schema, once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for step in (*steps, _validation_as_400):
            step(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
