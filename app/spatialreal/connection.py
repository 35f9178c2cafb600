"""An open, confirmed ingress session: send audio and playback signals, receive upstream messages.

Messages come back as `UpstreamMessage` values holding the original frame bytes, so animation
data the published schema does not declare survives the trip. A lost connection is an `AppError`
classified by the close-code contract: an upstream close code (4000-4999) is kept as
`AppError.close_code`, which decides `retryable` (see app/errors.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.spatialreal.classify import close_code_error, contract_code
from app.spatialreal.ingress_socket import IngressWebSocket
from app.spatialreal.messages import PLAYBACK_CONTROL, UpstreamMessage, parse_upstream

log = logging.getLogger("avatar_relay.spatialreal")


def _close_description(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection lost without a close frame"
    return f"closed with code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


def _received_close_code(exc: ConnectionClosed) -> int | None:
    """The close code the server sent, when it is one of the contract's (4000-4999)."""
    frame = exc.rcvd
    return contract_code(frame.code) if frame is not None else None


def closed_error(
    exc: ConnectionClosed,
    where: str,
    phase: Phase,
    *,
    connection_id: str | None = None,
    req_id: str | None = None,
) -> AppError:
    """An upstream close, classified by the close-code contract."""
    close_code = _received_close_code(exc)
    return AppError(
        close_code_error(close_code),
        f"{where} {_close_description(exc)}",
        phase=phase,
        connection_id=connection_id,
        req_id=req_id,
        close_code=close_code,
    )


class IngressConnection:
    """An open, confirmed ingress session. Send audio; iterate for upstream messages.

    Sending and receiving may run in different tasks; one task at a time may receive. Iteration
    ends when the connection closes normally (or was closed by us) and raises
    AppError(connectionClosed, phase websocket_runtime) when it is lost.
    """

    def __init__(
        self,
        websocket: ClientConnection,
        *,
        connection_id: str,
        region: str,
        avatar_id: str,
        sample_rate: int,
        capabilities: tuple[str, ...] = (),
    ) -> None:
        self._ws = websocket
        self.connection_id = connection_id
        self.region = region
        self.avatar_id = avatar_id
        self.sample_rate = sample_rate
        # What the server declared in SERVER_CONFIRM_SESSION (e.g. "playback_control").
        self.capabilities = capabilities
        self._closing = False

    def __repr__(self) -> str:
        return (
            f"IngressConnection(connection_id={self.connection_id!r}, region={self.region!r},"
            f" avatar_id={self.avatar_id!r}, closed={self.closed})"
        )

    @property
    def closed(self) -> bool:
        """True once we closed it or it was lost (any further send raises)."""
        return self._closing or self._ws.close_code is not None

    async def send_audio(self, req_id: str, audio: bytes, end: bool = False) -> None:
        """Send a chunk of PCM for request `req_id`; the request's last chunk has `end=True`."""
        message = message_pb2.Message(
            type=message_pb2.MESSAGE_CLIENT_AUDIO_INPUT,
            client_audio_input=message_pb2.ClientAudioInput(req_id=req_id, end=end, audio=audio),
        )
        await self._send(message.SerializeToString(), req_id)

    async def interrupt(self, req_id: str) -> None:
        """Ask the server to stop `req_id` (per the docs it only acts in LiveKit egress mode)."""
        message = message_pb2.Message(
            type=message_pb2.MESSAGE_CLIENT_INTERRUPT,
            client_interrupt=message_pb2.ClientInterrupt(req_id=req_id),
        )
        await self._send(message.SerializeToString(), req_id)

    @property
    def playback_control(self) -> bool:
        """The server honours pause and resume (older servers ignore them)."""
        return PLAYBACK_CONTROL in self.capabilities

    async def pause(self, req_id: str) -> None:
        """Hold the playout of `req_id` (egress mode, with `playback_control`); audio for it
        must keep coming."""
        message = message_pb2.Message(
            type=message_pb2.MESSAGE_CLIENT_PAUSE,
            client_pause=message_pb2.ClientPause(req_id=req_id),
        )
        await self._send(message.SerializeToString(), req_id)

    async def resume(self, req_id: str) -> None:
        """Continue the playout of `req_id` where it was paused."""
        message = message_pb2.Message(
            type=message_pb2.MESSAGE_CLIENT_RESUME,
            client_resume=message_pb2.ClientResume(req_id=req_id),
        )
        await self._send(message.SerializeToString(), req_id)

    async def _send(self, data: bytes, req_id: str) -> None:
        if self._closing:
            raise AppError(
                ErrorCode.CONNECTION_CLOSED,
                "ingress connection is already closed",
                phase=Phase.WEBSOCKET_SEND,
                connection_id=self.connection_id,
                req_id=req_id,
            )
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise closed_error(
                exc,
                "ingress connection",
                Phase.WEBSOCKET_SEND,
                connection_id=self.connection_id,
                req_id=req_id,
            ) from None
        except OSError as exc:
            raise AppError(
                ErrorCode.CONNECTION_FAILED,
                f"ingress send failed: {exc}",
                phase=Phase.WEBSOCKET_SEND,
                connection_id=self.connection_id,
                req_id=req_id,
            ) from None

    async def receive(self) -> UpstreamMessage | None:
        """The next upstream message, or None once the connection closed normally."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosedOK:
                return None
            except ConnectionClosed as exc:
                if self._closing:
                    return None
                raise closed_error(
                    exc,
                    "ingress connection",
                    Phase.WEBSOCKET_RUNTIME,
                    connection_id=self.connection_id,
                ) from None
            if isinstance(raw, bytes):
                return parse_upstream(raw, self.connection_id)
            # Text frames are not part of the protocol; skip rather than kill the session.
            log.warning("ingress sent a text frame; ignored", extra={"region": self.region})

    def deliver(self, on_message: Callable[[UpstreamMessage], object] | None) -> bool:
        """Hand each upstream message to `on_message` as soon as it is parsed, instead of through
        `receive()`, which still returns what could not be handed over (app/spatialreal/
        ingress_socket.py), and then the end of the connection: keep one task receiving. None
        stops it. False when this connection's socket has no such way in."""
        ws = self._ws
        if not isinstance(ws, IngressWebSocket):
            return False
        if on_message is None:
            ws.on_binary = None
            return True
        connection_id = self.connection_id

        def handle(raw: bytes) -> None:
            on_message(parse_upstream(raw, connection_id))

        ws.on_binary = handle
        return True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> UpstreamMessage:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def close(self) -> None:
        """Close normally (code 1000). Idempotent; a receiver in another task then stops."""
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
