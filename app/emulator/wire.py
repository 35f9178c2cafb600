"""Bytes on the emulator's wire: hand-encoded animation messages and the JSON error bodies.

Animation messages are written by hand (not with message_pb2) on purpose: they carry a field no
schema declares and put every field out of canonical order, so a relay that parses and
re-serializes them instead of forwarding them verbatim produces different bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

from app.emulator.defaults import DEFAULT_AVATAR_ID
from app.proto import message_pb2

# Field numbers of the schema (October 2026: `animation` and `avatar_id` are declared).
_MESSAGE_TYPE = 1
_MESSAGE_ANIMATION = 6
_ANIMATION_CONNECTION_ID = 1
_ANIMATION_REQ_ID = 2
_ANIMATION_END = 3
ANIMATION_PAYLOAD_FIELD = 4
ANIMATION_AVATAR_FIELD = 5
# A field no schema declares (not ours, not any SDK's): the frame index as 4 big-endian bytes.
# It exists so that forwarding the bytes verbatim stays testable: a parse-and-reserialize relay
# keeps it only as an unknown field, and moves it.
ANIMATION_UNDECLARED_FIELD = 15
# Opt-in (`Emulator(stamp_frames=True)`): a field of the outer Message no schema declares, fixed64
# little-endian, the send time in nanoseconds since the Unix epoch. It is the message's last 9
# bytes, so a benchmark client finds it without parsing: transit = receive time - this.
SEND_TIME_FIELD = 15

_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2

# One animation frame per 40 ms of audio: the client SDK animates at 25 frames per second.
FRAME_SECONDS = 0.040
FRAME_MS = 40


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints here are never negative")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(value)


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, _LENGTH_DELIMITED) + _varint(len(value)) + value


SEND_TIME_KEY: Final = _key(SEND_TIME_FIELD, _FIXED64)


def send_time_field(sent_at_ns: int) -> bytes:
    """The bytes appended to a stamped frame: SEND_TIME_FIELD, fixed64 little-endian."""
    return SEND_TIME_KEY + sent_at_ns.to_bytes(8, "little")


def send_time_ns(message: bytes) -> int | None:
    """The send time a stamped frame ends with, or None when it carries none."""
    if len(message) < 9 or message[-9:-8] != SEND_TIME_KEY:
        return None
    return int.from_bytes(message[-8:], "little")


_BLOCK = 64  # blake2b's largest digest: one hash per 64 payload bytes


@functools.cache
def _counters(blocks: int) -> tuple[bytes, ...]:
    return tuple(counter.to_bytes(4, "big") for counter in range(blocks))


def frame_payload(req_id: str, index: int, frame_bytes: int) -> bytes:
    """The opaque animation bytes of frame `index` of request `req_id` (deterministic): the
    blake2b digests of seed + 0, seed + 1, ... (4-byte big-endian counters), cut to size."""
    seed = req_id.encode() + b"\x00" + index.to_bytes(8, "big")
    blake2b = hashlib.blake2b
    blocks = _counters(-(-frame_bytes // _BLOCK))
    out = b"".join([blake2b(seed + counter, digest_size=_BLOCK).digest() for counter in blocks])
    return out[:frame_bytes]


def frame_marker(index: int) -> bytes:
    """The content of the undeclared field in frame `index`."""
    return index.to_bytes(4, "big")


def animation_message(
    connection_id: str,
    req_id: str,
    index: int,
    end: bool,
    frame_bytes: int,
    *,
    avatar_id: str = DEFAULT_AVATAR_ID,
) -> bytes:
    """The exact bytes of one SERVER_RESPONSE_ANIMATION message as the emulator sends it.

    The one place frames are built. Layout (all deliberately non-canonical): outer
    `server_response_animation` (6) before `type` (1); inside it `animation` (4), the undeclared
    field (15), `avatar_id` (5), `end` (3, only when true), `req_id` (2), `connection_id` (1).
    """
    inner = b"".join(
        (
            _payload_key(frame_bytes),
            frame_payload(req_id, index, frame_bytes),
            _MARKER_KEY,
            frame_marker(index),
            _animation_tail(avatar_id, end, req_id, connection_id),
        )
    )
    return b"".join((_ANIMATION_KEY, _varint(len(inner)), inner, _ANIMATION_TYPE_FIELD))


# What every frame of a request shares is built once per request, not once per frame (the frame
# builder is the emulator's largest cost per session); the bytes are the same.
_ANIMATION_KEY: Final = _key(_MESSAGE_ANIMATION, _LENGTH_DELIMITED)
_ANIMATION_TYPE_FIELD: Final = _varint_field(
    _MESSAGE_TYPE, message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
)
_MARKER_KEY: Final = _key(ANIMATION_UNDECLARED_FIELD, _LENGTH_DELIMITED) + _varint(4)


@functools.lru_cache(maxsize=64)
def _payload_key(frame_bytes: int) -> bytes:
    return _key(ANIMATION_PAYLOAD_FIELD, _LENGTH_DELIMITED) + _varint(frame_bytes)


@functools.lru_cache(maxsize=4096)
def _animation_tail(avatar_id: str, end: bool, req_id: str, connection_id: str) -> bytes:
    """The fields after the undeclared one: `avatar_id`, `end` (only when true), `req_id`,
    `connection_id`."""
    tail = _bytes_field(ANIMATION_AVATAR_FIELD, avatar_id.encode())
    if end:
        tail += _varint_field(_ANIMATION_END, 1)
    tail += _bytes_field(_ANIMATION_REQ_ID, req_id.encode())
    return tail + _bytes_field(_ANIMATION_CONNECTION_ID, connection_id.encode())


def egress_signal_message(connection_id: str, req_id: str, end: bool, avatar_id: str) -> bytes:
    """An egress-mode playback signal: an animation message without animation data."""
    message = message_pb2.Message(type=message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION)
    animation = message.server_response_animation
    animation.connection_id = connection_id
    animation.req_id = req_id
    animation.end = end
    animation.avatar_id = avatar_id
    return message.SerializeToString()


def confirm_message(connection_id: str, capabilities: Iterable[str] = ()) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_SERVER_CONFIRM_SESSION)
    message.server_confirm_session.connection_id = connection_id
    message.server_confirm_session.capabilities.extend(capabilities)
    return message.SerializeToString()


def error_message(connection_id: str, req_id: str, code: int, text: str) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_SERVER_ERROR)
    message.server_error.connection_id = connection_id
    message.server_error.req_id = req_id
    message.server_error.code = code
    message.server_error.message = text
    return message.SerializeToString()


def playback_state_message(
    connection_id: str,
    req_id: str,
    state: message_pb2.ServerPlaybackState.State.ValueType,
    played_ms: int,
    reason: str = "",
) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_SERVER_PLAYBACK_STATE)
    playback = message.server_playback_state
    playback.connection_id = connection_id
    playback.req_id = req_id
    playback.state = state
    playback.played_ms = played_ms
    playback.reason = reason
    return message.SerializeToString()


# --- WebSocket close codes (the close-code contract of the October 2026 service) ---

CLOSE_CREDITS_EXHAUSTED = 4001
CLOSE_SESSION_DURATION_EXCEEDED = 4002
CLOSE_CONCURRENCY_LIMIT = 4003
CLOSE_SESSION_TOKEN_INVALID = 4010
CLOSE_UPSTREAM_UNAVAILABLE = 4503

# The reason text sent with each code, and the text of a SERVER_ERROR carrying it. Worded so the
# older SDKs' text matching agrees with the code where it can (4001, 4002, 4010); they have no
# words for 4003 and 4503.
CLOSE_REASONS: dict[int, str] = {
    CLOSE_CREDITS_EXHAUSTED: "credits exhausted",
    CLOSE_SESSION_DURATION_EXCEEDED: "maximum session duration reached",
    CLOSE_CONCURRENCY_LIMIT: "concurrency limit reached",
    CLOSE_SESSION_TOKEN_INVALID: "invalid session token",
    CLOSE_UPSTREAM_UNAVAILABLE: "upstream unavailable",
}


def close_reason(code: int) -> str:
    """The reason text the emulator sends with close code `code`."""
    return CLOSE_REASONS.get(code, "session closed by server")


# --- JSON:API-style error bodies (spec: "Console API") ---

# (code, detail) per HTTP status. The codes deliberately avoid the gRPC names the official SDK
# maps by value (INVALID_ARGUMENT is fine at the console, but UNAUTHENTICATED / UNAVAILABLE would
# make the SDK report invalidEgressConfig / egressUnavailable for a bad key or a 503).
_CONSOLE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "invalid request"),
    401: ("INVALID_API_KEY", "invalid api key"),
    402: ("BILLING_REQUIRED", "session denied"),
    403: ("PERMISSION_DENIED", "permission denied"),
    404: ("APP_ID_UNRECOGNIZED", "app id unrecognized"),
    429: ("RESOURCE_EXHAUSTED", "too many requests"),
    500: ("INTERNAL", "internal error"),
    502: ("BAD_GATEWAY", "bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "service temporarily unavailable"),
    504: ("GATEWAY_TIMEOUT", "gateway timeout"),
}

# Default detail texts for rejected ingress upgrades, worded as the SDK classifies them.
INGRESS_REJECTIONS: dict[int, tuple[str, str]] = {
    400: ("SESSION_TOKEN_INVALID", "invalid session token"),
    401: ("SESSION_TOKEN_EXPIRED", "token is expired"),
    402: ("BILLING_REQUIRED", "session denied"),
    403: ("PERMISSION_DENIED", "permission denied"),
    404: ("AVATAR_NOT_FOUND", "avatar not found"),
    429: ("RESOURCE_EXHAUSTED", "too many connections"),
    500: ("INTERNAL", "internal error"),
    502: ("BAD_GATEWAY", "bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "service temporarily unavailable"),
    504: ("GATEWAY_TIMEOUT", "gateway timeout"),
}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, code: str, detail: str, *, title: str | None = None) -> bytes:
    """`{"errors":[{id, status, code, title, detail}]}` as bytes."""
    error = {
        "id": code,
        "status": status,
        "code": code,
        "title": title or _title(status),
        "detail": detail,
    }
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode()


def console_error_body(status: int, detail: str | None = None) -> bytes:
    code, default_detail = _CONSOLE_ERRORS.get(
        status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", _title(status).lower())
    )
    title = "Unauthenticated" if status == 401 else None
    return error_body(status, code, detail or default_detail, title=title)


def ingress_error_body(status: int, detail: str | None = None, code: str | None = None) -> bytes:
    default_code, default_detail = INGRESS_REJECTIONS.get(
        status, ("INTERNAL" if status >= 500 else "INVALID_REQUEST", _title(status).lower())
    )
    return error_body(status, code or default_code, detail or default_detail)
