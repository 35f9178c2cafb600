"""What each official SDK reports for each scenario: (error code, phase), or None for success.

Written from each SDK's own code (module and function named per block), not from what the
emulator happens to do: the same server behaviour is classified differently by each SDK.
"""

from __future__ import annotations

from tests.sdk.stage import CONTRACT_CODES

Outcome = tuple[str, str | None] | None

TOKEN, CONNECT, HANDSHAKE, RUNTIME = (
    "session_token",
    "websocket_connect",
    "websocket_handshake",
    "websocket_runtime",
)
SUCCESS = ("header", "query", "chunked", "second avatar")

# avatarkit 0.1.7 and spatius 1.1.1 share one classifier (avatar_session.py
# `_classify_error_code` / `_map_http_status_to_error_code`, identical in both): the server's
# `code` first (3, 14, 16, 4001, 4002 by value), then words in the body or SERVER_ERROR text,
# then the HTTP status. Every abnormal WebSocket close is `connectionClosed`
# (`_build_connection_closed_error`), whatever its code.
_LEGACY_WORDS = {
    # SERVER_ERROR 4003 and 4503: no code or words they know -> no status -> serverError.
    4001: "creditsExhausted",
    4002: "sessionDurationExceeded",
    4003: "serverError",
    4010: "sessionTokenInvalid",  # the text "invalid session token"
    4503: "serverError",
}
_LEGACY: dict[str, Outcome] = {
    **dict.fromkeys(SUCCESS),
    "console 500": ("serverError", TOKEN),
    "console 503": ("serverError", TOKEN),
    "console 402": ("billingRequired", TOKEN),
    "console 404": ("appIDUnrecognized", TOKEN),
    "console 429": ("invalidRequest", TOKEN),  # any other 4xx
    "bad api key": ("sessionTokenExpired", TOKEN),  # 401
    "expireAt in the past": ("invalidRequest", TOKEN),  # INVALID_ARGUMENT
    "expireAt beyond 24h": ("invalidRequest", TOKEN),
    "upgrade 400": ("sessionTokenInvalid", CONNECT),  # "invalid session token"
    "upgrade 401": ("sessionTokenExpired", CONNECT),  # "token is expired"
    "upgrade 402": ("billingRequired", CONNECT),
    "upgrade 403": ("invalidRequest", CONNECT),
    "upgrade 404": ("avatarNotFound", CONNECT),  # "avatar not found"
    "upgrade 500": ("serverError", CONNECT),
    "upgrade 503": ("serverError", CONNECT),
    "unknown avatar": ("avatarNotFound", CONNECT),
    "unknown app": ("appIDUnrecognized", CONNECT),
    "app id mismatch": ("appIDMismatch", CONNECT),
    "expired token": ("sessionTokenExpired", CONNECT),
    "reused token": ("sessionTokenInvalid", CONNECT),
    "bad token": ("sessionTokenInvalid", CONNECT),
    "unsupported rate": ("unsupportedSampleRate", HANDSHAKE),  # "unsupported sample rate"
    "egress": ("egressUnavailable", HANDSHAKE),  # code 14
    "mid-request error": ("upstreamError", RUNTIME),  # "driven server request failed"
    "upstream status": ("upstreamError", RUNTIME),
    "drop": ("connectionClosed", RUNTIME),
    "idle": ("idleTimeout", RUNTIME),  # "no audio input for"
    **{f"handshake error {code}": (_LEGACY_WORDS[code], HANDSHAKE) for code in CONTRACT_CODES},
    **{f"runtime error {code}": (_LEGACY_WORDS[code], RUNTIME) for code in CONTRACT_CODES},
    **{f"handshake close {code}": ("connectionClosed", HANDSHAKE) for code in CONTRACT_CODES},
    **{f"runtime close {code}": ("connectionClosed", RUNTIME) for code in CONTRACT_CODES},
}

# avatarkit 0.1.7 has no handshake timeout of its own: it waits for the confirm forever (the
# probe stops waiting).
AVATARKIT: dict[str, Outcome] = _LEGACY | {"handshake timeout": ("probe:timeout", None)}

# spatius 1.1.1: HANDSHAKE_TIMEOUT_S = 10 -> connectionFailed in the handshake phase.
SPATIUS: dict[str, Outcome] = _LEGACY | {
    "handshake timeout": ("connectionFailed", HANDSHAKE),
    "extra params": None,
}

# spatialreal 0.2.2 (session.py, errors.py): the token call by HTTP status only
# (`_session_token_error`); a refused upgrade by status only, 401/403 -> sessionTokenInvalid,
# anything else connectionFailed (`_ws_connect_error`); a SERVER_ERROR by its code, 4000-4999
# through the close-code contract, anything else serverError (`_server_error`); a close through
# the contract (`error_code_for_close_code`); no handshake timeout.
_CONTRACT = {
    4001: "creditsExhausted",
    4002: "sessionDurationExceeded",
    4003: "concurrencyLimit",
    4010: "sessionTokenInvalid",
    4503: "upstreamError",
}
SPATIALREAL: dict[str, Outcome] = {
    **dict.fromkeys(SUCCESS),
    "console url with /v1/console": None,
    "pause ignored": None,
    "pause and resume": None,
    "console 500": ("serverError", TOKEN),
    "console 503": ("serverError", TOKEN),
    "console 402": ("billingRequired", TOKEN),
    "console 404": ("avatarNotFound", TOKEN),
    "console 429": ("concurrencyLimit", TOKEN),
    "bad api key": ("sessionTokenInvalid", TOKEN),
    "expireAt in the past": ("invalidRequest", TOKEN),
    "expireAt beyond 24h": ("invalidRequest", TOKEN),
    "upgrade 400": ("connectionFailed", CONNECT),
    "upgrade 401": ("sessionTokenInvalid", CONNECT),
    "upgrade 402": ("connectionFailed", CONNECT),
    "upgrade 403": ("sessionTokenInvalid", CONNECT),
    "upgrade 404": ("connectionFailed", CONNECT),
    "upgrade 500": ("connectionFailed", CONNECT),
    "upgrade 503": ("connectionFailed", CONNECT),
    "unknown avatar": ("connectionFailed", CONNECT),
    "unknown app": ("connectionFailed", CONNECT),
    "app id mismatch": ("connectionFailed", CONNECT),
    "expired token": ("sessionTokenInvalid", CONNECT),
    "reused token": ("connectionFailed", CONNECT),
    "bad token": ("connectionFailed", CONNECT),
    "unsupported rate": ("serverError", HANDSHAKE),
    "egress": ("serverError", HANDSHAKE),
    "handshake timeout": ("probe:timeout", None),
    "mid-request error": ("serverError", RUNTIME),
    "upstream status": ("serverError", RUNTIME),
    "drop": ("connectionClosed", RUNTIME),  # no close frame: no code
    "idle": ("serverError", RUNTIME),
    **{f"handshake error {code}": (_CONTRACT[code], HANDSHAKE) for code in CONTRACT_CODES},
    **{f"runtime error {code}": (_CONTRACT[code], RUNTIME) for code in CONTRACT_CODES},
    **{f"handshake close {code}": (_CONTRACT[code], HANDSHAKE) for code in CONTRACT_CODES},
    **{f"runtime close {code}": (_CONTRACT[code], RUNTIME) for code in CONTRACT_CODES},
}
# `AvatarSDKError.retryable` (errors.py): by close code when there is one (4002 and 4503 yes,
# other 40xx no), else only connectionFailed / connectionClosed / upstreamError.
SPATIALREAL_RETRYABLE = {4001: False, 4002: True, 4003: False, 4010: False, 4503: True}

EXPECTED: dict[str, dict[str, Outcome]] = {
    "avatarkit": AVATARKIT,
    "spatius": SPATIUS,
    "spatialreal": SPATIALREAL,
}
