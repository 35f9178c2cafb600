"""Stable error codes as the server reports them: REST API, WebSocket protocols, logs, metrics.

A code is a public contract. Clients branch on it, dashboards count it, so codes are only ever
added, never renamed. The codes themselves are defined once, in the client distribution
(`avatar_relay_client.errors`), because client code needs them without the server; here each code
gets everything a transport needs to report it: the HTTP status for REST answers, the close code
for WebSocket closes, and whether it came from upstream.

Upstream codes are the ones the official SpatialReal SDKs use (see the spec's error table), so an
integrator who knows the SDK recognises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from avatar_relay_client.errors import ErrorCode as ErrorCode
from avatar_relay_client.errors import RelayError as RelayError


class Phase(StrEnum):
    """Where an upstream failure happened; the same phase names as the official SDK."""

    SESSION_TOKEN = "session_token"
    WEBSOCKET_CONNECT = "websocket_connect"
    WEBSOCKET_HANDSHAKE = "websocket_handshake"
    WEBSOCKET_RUNTIME = "websocket_runtime"
    WEBSOCKET_SEND = "websocket_send"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    http_status: int
    close_code: int
    upstream: bool
    summary: str


# WebSocket close codes: 1008 (policy) and 1011 (internal) are standard; the 4xxx range is ours and
# is listed in docs/protocol.md. One table keeps REST and WebSocket answers consistent.
_SPECS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.SESSION_TOKEN_EXPIRED: ErrorSpec(
        502, 4502, True, "session token expired or unauthorized"
    ),
    ErrorCode.SESSION_TOKEN_INVALID: ErrorSpec(502, 4502, True, "invalid or empty session token"),
    ErrorCode.APP_ID_UNRECOGNIZED: ErrorSpec(502, 4502, True, "app id not recognised upstream"),
    ErrorCode.APP_ID_MISMATCH: ErrorSpec(502, 4502, True, "session token belongs to another app"),
    ErrorCode.AVATAR_NOT_FOUND: ErrorSpec(502, 4502, True, "avatar does not exist upstream"),
    ErrorCode.BILLING_REQUIRED: ErrorSpec(502, 4502, True, "session denied by billing"),
    ErrorCode.CREDITS_EXHAUSTED: ErrorSpec(502, 4502, True, "credits exhausted"),
    ErrorCode.SESSION_DURATION_EXCEEDED: ErrorSpec(
        502, 4408, True, "maximum session duration reached"
    ),
    ErrorCode.CONCURRENCY_LIMIT: ErrorSpec(
        503, 4503, True, "the SpatialReal account's concurrent session limit is reached"
    ),
    ErrorCode.UNSUPPORTED_SAMPLE_RATE: ErrorSpec(502, 4502, True, "sample rate rejected upstream"),
    ErrorCode.INVALID_EGRESS_CONFIG: ErrorSpec(502, 4502, True, "egress configuration rejected"),
    ErrorCode.EGRESS_UNAVAILABLE: ErrorSpec(502, 4502, True, "egress unavailable upstream"),
    ErrorCode.IDLE_TIMEOUT: ErrorSpec(408, 4408, True, "closed after input inactivity"),
    ErrorCode.UPSTREAM_ERROR: ErrorSpec(502, 4502, True, "upstream internal failure"),
    ErrorCode.INVALID_REQUEST: ErrorSpec(400, 4400, False, "the request is not valid"),
    ErrorCode.CONNECTION_FAILED: ErrorSpec(503, 4503, True, "could not reach upstream"),
    ErrorCode.CONNECTION_CLOSED: ErrorSpec(502, 4502, True, "upstream closed the connection"),
    ErrorCode.PROTOCOL_ERROR: ErrorSpec(502, 4502, True, "upstream protocol violation"),
    ErrorCode.SERVER_ERROR: ErrorSpec(502, 4502, True, "upstream server failure"),
    ErrorCode.UNKNOWN: ErrorSpec(502, 4502, True, "unclassified upstream failure"),
    ErrorCode.UNAUTHORIZED: ErrorSpec(401, 4401, False, "missing or invalid credentials"),
    ErrorCode.FORBIDDEN: ErrorSpec(403, 4403, False, "not allowed for this principal"),
    ErrorCode.NOT_FOUND: ErrorSpec(404, 4404, False, "no such resource"),
    ErrorCode.RATE_LIMITED: ErrorSpec(429, 4429, False, "too many requests"),
    ErrorCode.AVATAR_NOT_ALLOWED: ErrorSpec(403, 4403, False, "avatar is not on the allow-list"),
    ErrorCode.UPSTREAM_UNAVAILABLE: ErrorSpec(503, 4503, True, "every upstream region failed"),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(500, 1011, False, "internal error"),
    ErrorCode.TICKET_INVALID: ErrorSpec(401, 4401, False, "ticket unknown, used or expired"),
    ErrorCode.ORIGIN_NOT_ALLOWED: ErrorSpec(403, 4403, False, "origin is not on the allow-list"),
    ErrorCode.SESSION_NOT_FOUND: ErrorSpec(404, 4404, False, "relay session unknown or ended"),
    ErrorCode.SESSION_LIMIT: ErrorSpec(429, 4429, False, "too many concurrent sessions"),
    ErrorCode.RESUME_FAILED: ErrorSpec(409, 4409, False, "the gap can no longer be replayed"),
    ErrorCode.CONVERSATION_ABORTED: ErrorSpec(502, 4502, True, "conversation ended by a failure"),
    ErrorCode.MESSAGE_TOO_LARGE: ErrorSpec(413, 1009, False, "message exceeds the size limit"),
    ErrorCode.BAD_AUDIO: ErrorSpec(400, 4400, False, "audio is not valid PCM s16le"),
    ErrorCode.UNKNOWN_MESSAGE_TYPE: ErrorSpec(400, 4400, False, "unknown message type"),
    ErrorCode.BAD_ACK: ErrorSpec(400, 4400, False, "acknowledgement out of range"),
    ErrorCode.BAD_SEQUENCE: ErrorSpec(400, 4400, False, "sequence number out of order"),
    ErrorCode.SESSION_CLOSED: ErrorSpec(409, 4410, False, "the session is closed"),
    ErrorCode.SLOW_CONSUMER: ErrorSpec(503, 4008, False, "client is not reading fast enough"),
    ErrorCode.GOING_AWAY: ErrorSpec(503, 1001, False, "server is shutting down; reconnect"),
    ErrorCode.CONNECTION_REPLACED: ErrorSpec(
        409, 4001, False, "a newer connection took over the session"
    ),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(503, 1011, False, "shared state store unreachable"),
    ErrorCode.REQUEST_IN_PROGRESS: ErrorSpec(
        409, 4409, False, "a request with this Idempotency-Key is still in progress"
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: ErrorSpec(
        422, 4400, False, "Idempotency-Key was used with a different request"
    ),
    # The operator's problem, not the caller's: SpatialReal refused this server's API key.
    ErrorCode.UPSTREAM_CREDENTIALS_REJECTED: ErrorSpec(
        502, 4502, True, "the service's SpatialReal API key was rejected"
    ),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(
        405, 4400, False, "this route does not answer that HTTP method"
    ),
    ErrorCode.MESSAGE_INCOMPLETE: ErrorSpec(
        408, 1008, False, "a WebSocket message did not arrive in full in time"
    ),
    # The demo agent's text-to-speech engine (espeak-ng) is not installed or failed.
    ErrorCode.SPEECH_UNAVAILABLE: ErrorSpec(
        503, 1011, False, "the demo agent's text-to-speech engine is unavailable"
    ),
    # One utterance at a time per session: the caller says the next once this one has ended.
    ErrorCode.AGENT_BUSY: ErrorSpec(
        409, 4409, False, "the demo agent is still speaking in this session"
    ),
    # The operator's to fix: LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are not set.
    ErrorCode.RTC_NOT_CONFIGURED: ErrorSpec(
        501, 4501, False, "RTC mode is not configured on this server (no LiveKit settings)"
    ),
    ErrorCode.RTC_UNAVAILABLE: ErrorSpec(
        503, 4503, True, "the LiveKit server could not be reached or failed"
    ),
    ErrorCode.RTC_CREDENTIALS_REJECTED: ErrorSpec(
        502, 4502, True, "the LiveKit server rejected this server's API key or secret"
    ),
    ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE: ErrorSpec(
        409, 4409, False, "the avatar service does not offer pause and resume"
    ),
    # A producer feeds this session's speech and the browser's audio is not forwarded to it.
    ErrorCode.MICROPHONE_DISABLED: ErrorSpec(
        403,
        4403,
        False,
        "browser audio is not accepted: the session's speech comes from a producer",
    ),
    ErrorCode.PRODUCER_NOT_ALLOWED: ErrorSpec(
        409, 4403, False, "the session was not created to accept a producer"
    ),
    # A draining instance hands its sessions over (1012 "service restart"): clients reconnect with
    # a fresh ticket and resume wherever the session continues.
    ErrorCode.SESSION_MOVED: ErrorSpec(
        503, 1012, False, "the session moves to another instance; reconnect and resume"
    ),
}


# The upstream close-code contract (`spatialreal` 0.2.2, errors.py): a WebSocket close code, or a
# SERVER_ERROR code in the same range, says whether reconnecting can help. 40xx: the request is at
# fault, never retry, except 4002 (the session reached its maximum duration: open a new one).
# 45xx and every other code: transient, retry with backoff.
CONTRACT_CODES = range(4000, 5000)
SESSION_ROLLOVER_CLOSE = 4002


def contract_retryable(close_code: int) -> bool:
    """Whether reconnecting after this upstream close (or SERVER_ERROR) code can succeed."""
    if close_code == SESSION_ROLLOVER_CLOSE:
        return True
    return not 4000 <= close_code < 4500


def spec(code: ErrorCode) -> ErrorSpec:
    return _SPECS[code]


def all_specs() -> dict[ErrorCode, ErrorSpec]:
    return dict(_SPECS)


class AppError(RelayError):
    """An error as a value: a stable code plus a human message, raised anywhere, reported once.

    The server's kind of `RelayError` (what the codec and the clients raise), so one `except
    RelayError` at a codec boundary also catches the server's own failures.

    `phase` is set for upstream failures (where in the SpatialReal exchange it happened). The
    optional fields carry upstream correlation data for logs; none of them may hold a secret.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        phase: Phase | None = None,
        http_status: int | None = None,
        server_code: str | None = None,
        connection_id: str | None = None,
        req_id: str | None = None,
        retry_after: float | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(code, message or spec(code).summary, http_status=http_status)
        self.phase = phase
        self.upstream_http_status = http_status
        self.server_code = server_code
        self.connection_id = connection_id
        self.req_id = req_id
        self.retry_after = retry_after
        # The upstream WebSocket close code, or a SERVER_ERROR code in the contract's range.
        self.close_code = close_code

    @property
    def spec(self) -> ErrorSpec:
        return spec(self.code)

    @property
    def retryable(self) -> bool:
        """Upstream failures worth retrying: the close-code contract when upstream gave a code,
        else transport trouble and 5xx, never a 4xx."""
        if self.close_code is not None:
            return contract_retryable(self.close_code)
        if self.code in (
            ErrorCode.CONNECTION_FAILED,
            ErrorCode.CONNECTION_CLOSED,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            ErrorCode.UPSTREAM_ERROR,
        ):
            return True
        if self.code is ErrorCode.SERVER_ERROR:
            status = self.upstream_http_status
            return status is None or status >= 500
        return False

    def log_fields(self) -> dict[str, str | int]:
        fields: dict[str, str | int] = {"error_code": self.code.value}
        if self.phase is not None:
            fields["phase"] = self.phase.value
        if self.upstream_http_status is not None:
            fields["upstream_status"] = self.upstream_http_status
        if self.server_code is not None:
            fields["server_code"] = self.server_code
        if self.connection_id is not None:
            fields["connection_id"] = self.connection_id
        if self.req_id is not None:
            fields["req_id"] = self.req_id
        if self.close_code is not None:
            fields["close_code"] = self.close_code
        return fields
