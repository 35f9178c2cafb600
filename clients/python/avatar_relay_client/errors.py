"""The relay's stable error codes and the error every client call raises.

A code is a public contract: clients branch on it, dashboards count it, so codes are only ever
added, never renamed. They are defined here, once, because client code needs them without the
server; the server (`app/errors.py`) imports them and adds what only it needs (the HTTP status and
close code each one is reported with).

Upstream codes are the ones the official SpatialReal SDKs use, so an integrator who knows the SDK
recognises them.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # --- upstream (SpatialReal) codes, as the official SDKs name them ---
    SESSION_TOKEN_EXPIRED = "sessionTokenExpired"
    SESSION_TOKEN_INVALID = "sessionTokenInvalid"
    APP_ID_UNRECOGNIZED = "appIDUnrecognized"
    APP_ID_MISMATCH = "appIDMismatch"
    AVATAR_NOT_FOUND = "avatarNotFound"
    BILLING_REQUIRED = "billingRequired"
    CREDITS_EXHAUSTED = "creditsExhausted"
    SESSION_DURATION_EXCEEDED = "sessionDurationExceeded"
    CONCURRENCY_LIMIT = "concurrencyLimit"
    UNSUPPORTED_SAMPLE_RATE = "unsupportedSampleRate"
    INVALID_EGRESS_CONFIG = "invalidEgressConfig"
    EGRESS_UNAVAILABLE = "egressUnavailable"
    IDLE_TIMEOUT = "idleTimeout"
    UPSTREAM_ERROR = "upstreamError"
    INVALID_REQUEST = "invalidRequest"
    CONNECTION_FAILED = "connectionFailed"
    CONNECTION_CLOSED = "connectionClosed"
    PROTOCOL_ERROR = "protocolError"
    SERVER_ERROR = "serverError"
    UNKNOWN = "unknown"

    # --- our own codes ---
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "notFound"
    RATE_LIMITED = "rateLimited"
    AVATAR_NOT_ALLOWED = "avatarNotAllowed"
    UPSTREAM_UNAVAILABLE = "upstreamUnavailable"
    INTERNAL_ERROR = "internalError"
    TICKET_INVALID = "ticketInvalid"
    ORIGIN_NOT_ALLOWED = "originNotAllowed"
    SESSION_NOT_FOUND = "sessionNotFound"
    SESSION_LIMIT = "sessionLimit"
    RESUME_FAILED = "resumeFailed"
    CONVERSATION_ABORTED = "conversationAborted"
    MESSAGE_TOO_LARGE = "messageTooLarge"
    BAD_AUDIO = "badAudio"
    UNKNOWN_MESSAGE_TYPE = "unknownMessageType"
    BAD_ACK = "badAck"
    BAD_SEQUENCE = "badSequence"
    SESSION_CLOSED = "sessionClosed"
    SLOW_CONSUMER = "slowConsumer"
    GOING_AWAY = "goingAway"
    CONNECTION_REPLACED = "connectionReplaced"
    STORE_UNAVAILABLE = "storeUnavailable"
    REQUEST_IN_PROGRESS = "requestInProgress"
    IDEMPOTENCY_KEY_REUSED = "idempotencyKeyReused"
    UPSTREAM_CREDENTIALS_REJECTED = "upstreamCredentialsRejected"
    METHOD_NOT_ALLOWED = "methodNotAllowed"
    MESSAGE_INCOMPLETE = "messageIncomplete"
    SPEECH_UNAVAILABLE = "speechUnavailable"
    AGENT_BUSY = "agentBusy"
    # RTC mode (LiveKit)
    RTC_NOT_CONFIGURED = "rtcNotConfigured"
    RTC_UNAVAILABLE = "rtcUnavailable"
    RTC_CREDENTIALS_REJECTED = "rtcCredentialsRejected"
    PLAYBACK_CONTROL_UNAVAILABLE = "playbackControlUnavailable"
    MICROPHONE_DISABLED = "microphoneDisabled"
    PRODUCER_NOT_ALLOWED = "producerNotAllowed"
    SESSION_MOVED = "sessionMoved"


class RelayError(Exception):
    """An error as a value: a stable `code` plus a human `message`.

    `http_status` is the HTTP status the relay server answered with, when a REST call or the
    socket upgrade was refused.
    """

    def __init__(
        self, code: ErrorCode, message: str | None = None, *, http_status: int | None = None
    ) -> None:
        self.code = code
        self.message = message or code.value
        self.http_status = http_status
        super().__init__(f"{code}: {self.message}")


def error_code(text: str, fallback: ErrorCode) -> ErrorCode:
    """The stable code a server sent as text; `fallback` for one this client does not know."""
    try:
        return ErrorCode(text)
    except ValueError:
        return fallback
