"""Minimal raw-ASGI helpers: the emulator speaks ASGI directly so it controls every byte."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The console never needs more than a tiny JSON object; refuse anything bigger.
MAX_BODY_BYTES = 64 * 1024


def header(scope: Scope, name: str) -> str:
    """The first value of a request header (case-insensitive), or ""."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return ""


def query(scope: Scope) -> dict[str, str]:
    """The query string, first value per name."""
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    return {name: values[0] for name, values in parse_qs(raw, keep_blank_values=True).items()}


async def read_body(receive: Receive) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY_BYTES or the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def send_http(
    send: Send, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def deny_websocket(send: Send, status: int, body: bytes) -> None:
    """Reject a WebSocket upgrade with a real HTTP response (ASGI websocket denial response)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
