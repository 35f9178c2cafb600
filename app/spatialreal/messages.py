"""Messages from the ingress, parsed once: `UpstreamMessage` keeps the original bytes.

`parse_upstream` never raises: a frame that does not decode, and every SERVER_ERROR, comes back
with a classified `AppError` in `error`; the connection stays usable after either.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.spatialreal.classify import classify, contract_code

MESSAGE_SERVER_CONFIRM_SESSION = message_pb2.MESSAGE_SERVER_CONFIRM_SESSION
MESSAGE_SERVER_ERROR = message_pb2.MESSAGE_SERVER_ERROR
MESSAGE_SERVER_RESPONSE_ANIMATION = message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
MESSAGE_SERVER_PLAYBACK_STATE = message_pb2.MESSAGE_SERVER_PLAYBACK_STATE
# The capability a server declares when it honours CLIENT_PAUSE / CLIENT_RESUME.
PLAYBACK_CONTROL = "playback_control"
_STATE_NAMES = {
    message_pb2.ServerPlaybackState.PLAYING: "playing",
    message_pb2.ServerPlaybackState.PAUSED: "paused",
    message_pb2.ServerPlaybackState.ENDED: "ended",
    message_pb2.ServerPlaybackState.INTERRUPTED: "interrupted",
}


@dataclass(frozen=True, slots=True)
class PlaybackState:
    """A SERVER_PLAYBACK_STATE: `state` is playing, paused, ended, interrupted (or unspecified);
    `played_ms` the content played so far; `reason` says why, for interrupted."""

    state: str
    played_ms: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamMessage:
    """One message from the ingress.

    `raw` is the frame exactly as received: forward it, never re-serialize a parsed copy.
    `type` is the `message.MessageType` value; `req_id` and `end` come from animation messages
    (and `req_id` from errors). `error` is set, classified, for SERVER_ERROR messages and for
    frames that do not decode; the connection stays usable after either. `has_animation` tells
    an animation message with data from an egress-mode playback signal (none); `playback` is set
    for SERVER_PLAYBACK_STATE messages.
    """

    raw: bytes
    type: int
    req_id: str = ""
    end: bool = False
    error: AppError | None = None
    has_animation: bool = True
    playback: PlaybackState | None = None

    @property
    def is_animation(self) -> bool:
        return self.type == MESSAGE_SERVER_RESPONSE_ANIMATION


def server_error(error: message_pb2.ServerError, phase: Phase, fallback_id: str) -> AppError:
    detail = error.message
    code = classify(phase, server_code=error.code, text=detail)
    where = "handshake rejected" if phase is Phase.WEBSOCKET_HANDSHAKE else "session error"
    text = f"ingress {where}: {detail or 'no detail'}"
    if error.code:
        text += f" (server code {error.code})"
    return AppError(
        code,
        text,
        phase=phase,
        server_code=str(error.code) if error.code else None,
        connection_id=error.connection_id or fallback_id or None,
        req_id=error.req_id or None,
        close_code=contract_code(error.code),
    )


def parse_upstream(raw: bytes, connection_id: str = "") -> UpstreamMessage:
    """Parse one frame once, keeping its bytes. Never raises: bad frames carry an error."""
    message = message_pb2.Message()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        return UpstreamMessage(
            raw,
            message_pb2.MESSAGE_UNSPECIFIED,
            error=AppError(
                ErrorCode.PROTOCOL_ERROR,
                "ingress sent a frame that is not a protobuf Message",
                phase=Phase.WEBSOCKET_RUNTIME,
                connection_id=connection_id or None,
            ),
        )
    kind = message.type
    if kind == MESSAGE_SERVER_RESPONSE_ANIMATION:
        animation = message.server_response_animation
        return UpstreamMessage(
            raw, kind, animation.req_id, animation.end, has_animation=bool(animation.animation)
        )
    if kind == MESSAGE_SERVER_PLAYBACK_STATE:
        state = message.server_playback_state
        playback = PlaybackState(
            _STATE_NAMES.get(state.state, "unspecified"), state.played_ms, state.reason
        )
        return UpstreamMessage(raw, kind, state.req_id, playback=playback)
    if kind == MESSAGE_SERVER_ERROR:
        failure = message.server_error
        error = server_error(failure, Phase.WEBSOCKET_RUNTIME, connection_id)
        return UpstreamMessage(raw, kind, failure.req_id, False, error)
    return UpstreamMessage(raw, kind)
