"""Raw clients for emulator tests: httpx for the console, `websockets` + message_pb2 for ingress."""

from __future__ import annotations

import time
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from app.emulator import Emulator
from app.proto import message_pb2

SHORT_REQ = "20250101000000_abcdefghijkl"


# The two token routes: the October 2026 one at the API root and its older console alias, each
# with the key its answer uses.
TOKEN_ROUTES = {
    "auth": ("/v1/auth/session-token", "session_token"),
    "console": ("/v1/console/session-tokens", "sessionToken"),
}


def token_url(emu: Emulator, route: str = "console") -> str:
    return emu.api_url + TOKEN_ROUTES[route][0]


async def mint(
    emu: Emulator, *, key: str | None = None, ttl: int = 3600, route: str = "console"
) -> str:
    response = await post_mint(emu, {"expireAt": int(time.time()) + ttl}, key=key, route=route)
    response.raise_for_status()
    token = response.json()[TOKEN_ROUTES[route][1]]
    assert isinstance(token, str)
    return token


async def post_mint(
    emu: Emulator, body: Any, *, key: str | None = None, route: str = "console"
) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            token_url(emu, route),
            json=body,
            headers={"X-Api-Key": key if key is not None else emu.api_keys[0]},
        )


def ingress_url(
    emu: Emulator, avatar: str | None = None, *, query_auth: dict[str, str] | None = None
) -> str:
    params = {"id": avatar if avatar is not None else emu.avatars[0], **(query_auth or {})}
    return emu.websocket_url + "?" + httpx.QueryParams(params).__str__()


async def open_ws(
    emu: Emulator,
    token: str,
    *,
    avatar: str | None = None,
    app_id: str | None = None,
    query_auth: bool = False,
) -> ClientConnection:
    app = app_id if app_id is not None else emu.app_id
    if query_auth:
        url = ingress_url(emu, avatar, query_auth={"appId": app, "sessionKey": token})
        return await connect(url)
    headers = {"X-App-ID": app, "X-Session-Key": token}
    return await connect(ingress_url(emu, avatar), additional_headers=headers)


def configure(
    sample_rate: int = 16000,
    audio_format: int = message_pb2.AUDIO_FORMAT_PCM_S16LE,
    extra_params: dict[str, str] | None = None,
) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION)
    config = message.client_configure_session
    config.sample_rate = sample_rate
    config.audio_format = audio_format  # type: ignore[assignment]
    config.transport_compression = message_pb2.TRANSPORT_COMPRESSION_NONE
    config.extra_params.update(extra_params or {})
    return message.SerializeToString()


def audio(req_id: str, data: bytes, end: bool = False) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_AUDIO_INPUT)
    message.client_audio_input.req_id = req_id
    message.client_audio_input.audio = data
    message.client_audio_input.end = end
    return message.SerializeToString()


def _control(kind: message_pb2.MessageType.ValueType, field: str, req_id: str) -> bytes:
    """A client control message (interrupt, pause, resume): a type and a `{req_id}` body."""
    message = message_pb2.Message(type=kind)
    getattr(message, field).req_id = req_id
    return message.SerializeToString()


def interrupt(req_id: str) -> bytes:
    return _control(message_pb2.MESSAGE_CLIENT_INTERRUPT, "client_interrupt", req_id)


def pause(req_id: str) -> bytes:
    return _control(message_pb2.MESSAGE_CLIENT_PAUSE, "client_pause", req_id)


def resume(req_id: str) -> bytes:
    return _control(message_pb2.MESSAGE_CLIENT_RESUME, "client_resume", req_id)


def parse(data: bytes | str) -> message_pb2.Message:
    assert isinstance(data, bytes), "the emulator sends binary frames only"
    message = message_pb2.Message()
    message.ParseFromString(data)
    return message


async def handshake(ws: ClientConnection, sample_rate: int = 16000) -> str:
    await ws.send(configure(sample_rate))
    reply = parse(await ws.recv())
    assert reply.type == message_pb2.MESSAGE_SERVER_CONFIRM_SESSION
    assert reply.server_confirm_session.connection_id
    return reply.server_confirm_session.connection_id


async def session(
    emu: Emulator, *, avatar: str | None = None, sample_rate: int = 16000
) -> tuple[ClientConnection, str]:
    """A connected, configured ingress WebSocket and its connection id."""
    ws = await open_ws(emu, await mint(emu), avatar=avatar)
    return ws, await handshake(ws, sample_rate)


async def frames_until_end(ws: ClientConnection) -> list[bytes]:
    """Raw messages up to and including the request's end frame or a SERVER_ERROR."""
    out: list[bytes] = []
    while True:
        data = await ws.recv()
        assert isinstance(data, bytes)
        out.append(data)
        message = parse(data)
        if message.type == message_pb2.MESSAGE_SERVER_ERROR:
            return out
        assert message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
        if message.server_response_animation.end:
            return out
