"""The relay's REST API as the link uses it: JSON POSTs, refusals as RelayErrors, socket URLs.

Creating a session and minting each reconnect's ticket are REST calls; their answers name the
socket to open (absolute, or a path on the same server), which carries the ticket.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from avatar_relay_client.errors import ErrorCode, RelayError, error_code
from avatar_relay_client.reconnect import STATUS_CODES


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: building it costs ~20 ms per client."""
    return httpx.create_ssl_context()


def ws_url(base_url: str, url: str, ticket: str) -> str:
    """The socket URL from the server's answer (absolute or a path), carrying `ticket`."""
    parts = urlsplit(url)
    if not parts.scheme:
        base = urlsplit(base_url)
        parts = parts._replace(scheme=base.scheme, netloc=base.netloc)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ticket"]
    query.append(("ticket", ticket))
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))


async def post_json(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """POST JSON; a refusal raises RelayError with its code, no answer CONNECTION_FAILED."""
    try:
        response = await http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise RelayError(ErrorCode.CONNECTION_FAILED, f"relay server unreachable: {exc}") from None
    if response.status_code >= 400:
        raise http_error(response)
    answer: dict[str, Any] = response.json()
    return answer


def session_request(
    body: dict[str, Any],
    *,
    avatar_id: str | None,
    sample_rate: int | None,
    with_session_token: bool,
) -> dict[str, Any]:
    """A create-session body: `body` plus the options every kind of session takes."""
    if avatar_id is not None:
        body["avatarId"] = avatar_id
    if sample_rate is not None:
        body["sampleRate"] = sample_rate
    if with_session_token:
        body["withSessionToken"] = True
    return body


async def create(
    path: str,
    base_url: str,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str] | None,
    http: httpx.AsyncClient | None,
) -> dict[str, Any]:
    """POST a create-session request to `path` (with `http`, or a client of its own)."""
    url = base_url.rstrip("/") + path
    if http is not None:
        return await post_json(http, url, body, headers or {})
    async with httpx.AsyncClient(verify=tls_context(), timeout=10.0) as own:
        return await post_json(own, url, body, headers or {})


def http_error(response: httpx.Response) -> RelayError:
    """The RelayError a refusal carries (`{"error": {"code", "message"}}`), or one by status."""
    status = response.status_code
    fallback = STATUS_CODES.get(status, ErrorCode.UNKNOWN)
    try:
        error = response.json()["error"]
        code = error_code(str(error["code"]), fallback)
        message = str(error.get("message") or "")
    except (ValueError, KeyError, TypeError):
        code, message = fallback, ""
    return RelayError(code, message or f"relay server answered HTTP {status}", http_status=status)
