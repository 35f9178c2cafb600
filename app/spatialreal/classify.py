"""Upstream failures → stable error codes, as tables (the spec's "Server error codes and texts").

Pure functions, no I/O. The order of the rules matters and follows the official SDK, so a failure
gets the same code here as an integrator would see from `avatarkit`:

1. the console (phase `session_token`) is classified by HTTP status alone (spec's console table),
   except that 401/403 mean *our* API key is wrong (`upstreamCredentialsRejected`, an operator
   problem) and 429 is `concurrencyLimit`, as `spatialreal` 0.2.2 reads it;
2. otherwise a server code wins: gRPC-style (`3`/`INVALID_ARGUMENT`, `16`, `14`) or one of the
   close-code contract's (`4001`, `4002`, `4003`, `4010`, `4503`; see `close_code_error`);
3. then known phrases in the server's text (first match wins);
4. then the HTTP status of a rejected WebSocket upgrade;
5. then a phase default: `serverError` for errors the ingress sent us, `unknown` elsewhere.

One deliberate difference from avatarkit: it also maps a bare "unauthorized" in any text to
`invalidEgressConfig`, which turns every plain HTTP 401 body into an egress error. The spec's table
has no such rule, so neither do we: an upgrade refused with 401 stays `sessionTokenExpired`.
"""

from __future__ import annotations

from app.errors import CONTRACT_CODES, ErrorCode, Phase

# Rule 2: server codes. INVALID_ARGUMENT is split by the words in its text (see _EGRESS_WORDS).
_SERVER_CODES: dict[str, ErrorCode] = {
    "3": ErrorCode.INVALID_REQUEST,
    "INVALID_ARGUMENT": ErrorCode.INVALID_REQUEST,
    "16": ErrorCode.INVALID_EGRESS_CONFIG,
    "UNAUTHENTICATED": ErrorCode.INVALID_EGRESS_CONFIG,
    "14": ErrorCode.EGRESS_UNAVAILABLE,
    "UNAVAILABLE": ErrorCode.EGRESS_UNAVAILABLE,
}

# The close-code contract (spatialreal 0.2.2): a WebSocket close code, or a SERVER_ERROR code in
# 4000-4999, each with its own stable code. Retryability is `app.errors.contract_retryable`.
_CLOSE_CODES: dict[int, ErrorCode] = {
    4001: ErrorCode.CREDITS_EXHAUSTED,
    4002: ErrorCode.SESSION_DURATION_EXCEEDED,
    4003: ErrorCode.CONCURRENCY_LIMIT,
    4010: ErrorCode.SESSION_TOKEN_INVALID,
    4503: ErrorCode.UPSTREAM_ERROR,
}
_SERVER_CODES.update({str(close): code for close, code in _CLOSE_CODES.items()})
_EGRESS_WORDS: tuple[str, ...] = ("livekit", "agora", "egress")

# Rule 3: phrases, lower case, checked in this order (earlier rules are more specific).
_TEXT_RULES: tuple[tuple[tuple[str, ...], ErrorCode], ...] = (
    (("credits exhausted",), ErrorCode.CREDITS_EXHAUSTED),
    (
        ("session time limit reached", "maximum session duration"),
        ErrorCode.SESSION_DURATION_EXCEEDED,
    ),
    (("session denied",), ErrorCode.BILLING_REQUIRED),
    (("invalid session token", "empty token"), ErrorCode.SESSION_TOKEN_INVALID),
    (("token is expired", "session token expired"), ErrorCode.SESSION_TOKEN_EXPIRED),
    (("app id mismatch",), ErrorCode.APP_ID_MISMATCH),
    (("appidunrecognized", "app id unrecognized"), ErrorCode.APP_ID_UNRECOGNIZED),
    (("avatar not found",), ErrorCode.AVATAR_NOT_FOUND),
    (("unsupported sample rate",), ErrorCode.UNSUPPORTED_SAMPLE_RATE),
    (("no audio input for", "livekit silence timeout"), ErrorCode.IDLE_TIMEOUT),
    (
        (
            "livekit_egress",
            "agora_egress",
            "missing livekit credentials",
            "provide api_token or both api_key and api_secret",
        ),
        ErrorCode.INVALID_EGRESS_CONFIG,
    ),
    (
        ("egress client is not configured on server", "failed to create egress connection"),
        ErrorCode.EGRESS_UNAVAILABLE,
    ),
    (
        ("driven server returned non-200 status code", "driven server request failed"),
        ErrorCode.UPSTREAM_ERROR,
    ),
    (
        (
            "expected clientconfiguresession message",
            "clientconfiguresession message is nil",
            "unexpected message type",
            "failed to unmarshal initial message",
        ),
        ErrorCode.PROTOCOL_ERROR,
    ),
)

# Rule 1: the console's statuses (spec, "how the SDK classifies a failed mint").
_CONSOLE_STATUSES: dict[int, ErrorCode] = {
    401: ErrorCode.UPSTREAM_CREDENTIALS_REJECTED,
    402: ErrorCode.BILLING_REQUIRED,
    403: ErrorCode.UPSTREAM_CREDENTIALS_REJECTED,
    404: ErrorCode.APP_ID_UNRECOGNIZED,
    429: ErrorCode.CONCURRENCY_LIMIT,
}

# Rule 4: statuses of a rejected ingress upgrade. 404 "avatar not found" and 400 "app id mismatch"
# are caught by the text rules first.
_UPGRADE_STATUSES: dict[int, ErrorCode] = {
    400: ErrorCode.SESSION_TOKEN_INVALID,
    401: ErrorCode.SESSION_TOKEN_EXPIRED,
    402: ErrorCode.BILLING_REQUIRED,
    404: ErrorCode.APP_ID_UNRECOGNIZED,
}


def _status_class(status: int) -> ErrorCode | None:
    if 400 <= status < 500:
        return ErrorCode.INVALID_REQUEST
    if status >= 500:
        return ErrorCode.SERVER_ERROR
    return None


def console_status_code(status: int) -> ErrorCode:
    """The code for a console answer with this (non-success) HTTP status."""
    return _CONSOLE_STATUSES.get(status) or _status_class(status) or ErrorCode.UNKNOWN


def close_code_error(close_code: int | None) -> ErrorCode:
    """The stable code for an upstream WebSocket close: the contract's, else connectionClosed."""
    if close_code is None:
        return ErrorCode.CONNECTION_CLOSED
    return _CLOSE_CODES.get(close_code, ErrorCode.CONNECTION_CLOSED)


def contract_code(server_code: int | str | None) -> int | None:
    """`server_code` when it is one of the close-code contract's (4000-4999), else None."""
    try:
        value = int(str(server_code).strip())
    except ValueError:
        return None
    return value if value in CONTRACT_CODES else None


def code_from_server_code(server_code: str | None, text: str) -> ErrorCode | None:
    """Rule 2. `text` must already be lower case."""
    if not server_code:
        return None
    code = _SERVER_CODES.get(server_code.strip().upper())
    if code is ErrorCode.INVALID_REQUEST and any(word in text for word in _EGRESS_WORDS):
        return ErrorCode.INVALID_EGRESS_CONFIG
    return code


def code_from_text(text: str) -> ErrorCode | None:
    """Rule 3. `text` must already be lower case."""
    for phrases, code in _TEXT_RULES:
        if any(phrase in text for phrase in phrases):
            return code
    return None


def upgrade_status_code(status: int) -> ErrorCode | None:
    """Rule 4: the code for a rejected WebSocket upgrade with this HTTP status."""
    return _UPGRADE_STATUSES.get(status) or _status_class(status)


def classify(
    phase: Phase,
    *,
    http_status: int | None = None,
    server_code: str | int | None = None,
    text: str | None = None,
) -> ErrorCode:
    """The stable code for one upstream failure.

    `server_code` is the ingress SERVER_ERROR code (an int, `0` meaning none) or the console's
    JSON `code`; `text` is everything human the server said (title, detail, message), joined.
    """
    if phase is Phase.SESSION_TOKEN:
        return console_status_code(http_status) if http_status is not None else ErrorCode.UNKNOWN
    lowered = (text or "").lower()
    code_text = None if server_code in (None, 0, "0") else str(server_code)
    found = code_from_server_code(code_text, lowered) or code_from_text(lowered)
    if found is None and http_status is not None:
        found = upgrade_status_code(http_status)
    if found is not None:
        return found
    if phase in (Phase.WEBSOCKET_HANDSHAKE, Phase.WEBSOCKET_RUNTIME):
        return ErrorCode.SERVER_ERROR
    return ErrorCode.UNKNOWN
