"""Opening an ingress session: the socket URL, the upgrade's refusal text, the configure/confirm
handshake that every new connection goes through before it carries audio.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.spatialreal.connection import closed_error
from app.spatialreal.messages import (
    MESSAGE_SERVER_CONFIRM_SESSION,
    MESSAGE_SERVER_ERROR,
    server_error,
)

WEBSOCKET_PATH = "/websocket"
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def ingress_websocket_url(
    ingress_url: str,
    avatar_id: str,
    *,
    app_id: str | None = None,
    session_token: str | None = None,
) -> str:
    """`{ingress}/websocket?id=<avatar>` with http(s) mapped to ws(s); query auth when given."""
    parts = urlsplit(ingress_url)
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"unsupported ingress URL scheme {parts.scheme!r}")
    path = parts.path.rstrip("/") + WEBSOCKET_PATH
    query = [*parse_qsl(parts.query), ("id", avatar_id)]
    if app_id is not None and session_token is not None:
        query += [("appId", app_id), ("sessionKey", session_token)]
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def configure_session(
    sample_rate: int, egress: message_pb2.LiveKitEgressConfig | None = None
) -> bytes:
    config = message_pb2.ClientConfigureSession(
        sample_rate=sample_rate,
        bitrate=0,
        audio_format=message_pb2.AUDIO_FORMAT_PCM_S16LE,
        transport_compression=message_pb2.TRANSPORT_COMPRESSION_NONE,
    )
    if egress is not None:
        # RTC mode: the avatar's output goes to this LiveKit room, not back over the socket.
        config.egress_type = message_pb2.EGRESS_TYPE_LIVEKIT
        config.livekit_egress.CopyFrom(egress)
    message = message_pb2.Message(
        type=message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION, client_configure_session=config
    )
    return message.SerializeToString()


def rejection_text(body: bytes, token: str) -> str:
    """The human part of a rejected upgrade's body (JSON:API errors or plain text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        first = parsed.get("errors", [parsed])
        entry = first[0] if isinstance(first, list) and first else parsed
        if isinstance(entry, dict):
            parts = [entry.get("title"), entry.get("detail") or entry.get("message")]
            text = " - ".join(str(part) for part in parts if part) or text
    return text[:300].replace(token, "***") if token else text[:300]


async def confirm_session(
    websocket: ClientConnection, configure: bytes, region: str, within: float
) -> tuple[str, tuple[str, ...]]:
    """Send CLIENT_CONFIGURE_SESSION and take the server's confirmation: the connection id and
    the capabilities it declares. Raises AppError (phase websocket_handshake) otherwise."""
    phase = Phase.WEBSOCKET_HANDSHAKE
    try:
        async with asyncio.timeout(within):
            await websocket.send(configure)
            raw = await websocket.recv()
    except TimeoutError:
        raise AppError(
            ErrorCode.CONNECTION_FAILED,
            f"ingress in {region} did not confirm the session within {within:g}s",
            phase=phase,
        ) from None
    except ConnectionClosed as exc:
        raise closed_error(exc, f"ingress in {region} during the handshake:", phase) from None
    if not isinstance(raw, bytes):
        raise AppError(ErrorCode.PROTOCOL_ERROR, "handshake answer is a text frame", phase=phase)
    message = message_pb2.Message()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        raise AppError(
            ErrorCode.PROTOCOL_ERROR, "handshake answer is not a protobuf Message", phase=phase
        ) from None
    if message.type == MESSAGE_SERVER_CONFIRM_SESSION:
        confirm = message.server_confirm_session
        if confirm.connection_id:
            return confirm.connection_id, tuple(confirm.capabilities)
        raise AppError(
            ErrorCode.PROTOCOL_ERROR, "session confirmed without a connection id", phase=phase
        )
    if message.type == MESSAGE_SERVER_ERROR:
        raise server_error(message.server_error, phase, "")
    raise AppError(
        ErrorCode.PROTOCOL_ERROR,
        f"unexpected message type {message.type} during the handshake",
        phase=phase,
    )
