"""The SpatialReal ingress v2 client: one WebSocket per avatar session.

    ingress = IngressClient(console, app_id)
    async with await ingress.connect("my-avatar", 16000) as conn:
        await conn.send_audio(req_id, pcm, end=True)
        async for message in conn:
            forward(message.raw)               # the server's bytes, untouched
            if message.error or message.end:
                break

Every connection gets a freshly minted token (tokens are single-use), minted in the region it
then connects to when that console can (tokens are valid in every region, so another region's
console stands in when it cannot); if the upgrade or the handshake fails with a transport
failure, a timeout, a 5xx or a retryable close code, the next region is tried with a new token.
Messages come back as `UpstreamMessage` values holding the original frame bytes, so animation
data the published schema does not declare survives the trip. Every failure is an `AppError`
with a stable code and the phase it happened in; an upstream close code (or a SERVER_ERROR code
in 4000-4999) is kept as `AppError.close_code`, which decides `retryable` (the close-code
contract, see app/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    WebSocketException,
)

from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.settings import Endpoint, Settings
from app.spatialreal.classify import classify, close_code_error, contract_code
from app.spatialreal.console import ConsoleClient, MintedToken
from app.spatialreal.fallback import ABSTAIN, ANSWERED, Gate, try_regions, worth_another_region
from app.spatialreal.messages import (
    MESSAGE_SERVER_CONFIRM_SESSION,
    MESSAGE_SERVER_ERROR,
    PLAYBACK_CONTROL,
    PlaybackState,
    UpstreamMessage,
    parse_upstream,
    server_error,
)
from app.spatialreal.regions import IngressBreakers

__all__ = [
    "IngressClient",
    "IngressConnection",
    "PlaybackState",
    "UpstreamMessage",
    "ingress_websocket_url",
    "parse_upstream",
]

log = logging.getLogger("avatar_relay.spatialreal")


class _NoDebugLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs the handshake (path and headers, so the session token) and every frame at
    DEBUG. Refusing DEBUG keeps the token out of logs and the hot path free of log formatting."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WEBSOCKETS_LOG = _NoDebugLog(logging.getLogger("websockets.client"), {})

WEBSOCKET_PATH = "/websocket"
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
# The size of a real animation frame is not published; stay far above anything plausible while
# still bounding memory per connection.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


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


def _configure_session(
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


def _rejection_text(body: bytes, token: str) -> str:
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


def _close_description(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return "connection lost without a close frame"
    return f"closed with code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


def _received_close_code(exc: ConnectionClosed) -> int | None:
    """The close code the server sent, when it is one of the contract's (4000-4999)."""
    frame = exc.rcvd
    return contract_code(frame.code) if frame is not None else None


def _closed_error(
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
            raise _closed_error(
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
                raise _closed_error(
                    exc,
                    "ingress connection",
                    Phase.WEBSOCKET_RUNTIME,
                    connection_id=self.connection_id,
                ) from None
            if isinstance(raw, bytes):
                return parse_upstream(raw, self.connection_id)
            # Text frames are not part of the protocol; skip rather than kill the session.
            log.warning("ingress sent a text frame; ignored", extra={"region": self.region})

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


def judge_ingress(error: AppError) -> int:
    """Which ingress breaker a failed connect blames (`IngressBreakers`: hosts 0, avatars 1).

    A failed mint says nothing about the ingress (the console's own breakers judged it); a
    failure with no HTTP answer is the region's host; anything the ingress answered (a 5xx, a
    failed handshake, a retryable close code) is this avatar's in this region.
    """
    if error.phase is Phase.SESSION_TOKEN:
        return ABSTAIN
    if not worth_another_region(error):
        return ANSWERED
    if error.phase is Phase.WEBSOCKET_CONNECT and error.upstream_http_status is None:
        return 0
    return 1


class IngressClient:
    """Opens ingress sessions, each with its own freshly minted token, with regional fallback.

    The ingress has its own breakers (`IngressBreakers`, see app/spatialreal/regions.py): one
    avatar's failures skip that avatar's region only, and none of them stops token minting.
    `connect_timeout` bounds the upgrade and, separately, the configure/confirm handshake.
    """

    def __init__(
        self,
        console: ConsoleClient,
        app_id: str,
        *,
        connect_timeout: float = 5.0,
        token_ttl: int = 600,
        wall_clock: Callable[[], float] = time.time,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_queue: int = 64,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 5.0,
        breakers: IngressBreakers | None = None,
        probe_wait: float | None = None,
    ) -> None:
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if not 0 < token_ttl < 86_400:
            raise ValueError("token_ttl must lie between 1 second and 24 hours")
        self._console = console
        self.app_id = app_id
        self._connect_timeout = connect_timeout
        self._token_ttl = token_ttl
        self._wall_clock = wall_clock
        self._max_frame_bytes = max_frame_bytes
        self._max_queue = max_queue
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        console_breakers = console.breakers
        self.breakers = breakers or IngressBreakers(
            console_breakers.failure_threshold, console_breakers.cooldown
        )
        self.probe_wait = console.probe_wait if probe_wait is None else probe_wait

    @classmethod
    def from_settings(cls, settings: Settings, console: ConsoleClient) -> Self:
        return cls(
            console,
            settings.app_id,
            connect_timeout=settings.upstream_connect_timeout,
            breakers=IngressBreakers(
                settings.breaker_failure_threshold, settings.breaker_cooldown_seconds
            ),
            probe_wait=settings.breaker_probe_wait_seconds,
        )

    def __repr__(self) -> str:
        return f"IngressClient(app_id={self.app_id!r}, console={self._console!r})"

    async def connect(
        self,
        avatar_id: str,
        sample_rate: int,
        *,
        query_auth: bool = False,
        egress: message_pb2.LiveKitEgressConfig | None = None,
    ) -> IngressConnection:
        """Mint a token, connect to that region's ingress and complete the session handshake.

        `query_auth` sends the credentials as query parameters (web style) instead of headers.
        `egress` configures LiveKit egress (RTC mode): the avatar publishes into that room and
        the socket carries playback signals only.
        Raises AppError with phase session_token, websocket_connect or websocket_handshake.
        """

        async def attempt(endpoint: Endpoint) -> IngressConnection:
            expire_at = int(self._wall_clock()) + self._token_ttl
            minted = await self._console.mint(expire_at, prefer=endpoint.region)
            return await self._open(endpoint, minted, avatar_id, sample_rate, query_auth, egress)

        breakers = self.breakers

        def gate(endpoint: Endpoint) -> Gate:
            region = endpoint.region
            return Gate(
                (
                    (breakers.hosts, region),
                    (breakers.avatars, breakers.avatar_key(region, avatar_id)),
                )
            )

        console = self._console
        return await try_regions(
            console.endpoints,
            gate,
            console.clock,
            attempt,
            judge=judge_ingress,
            probe_wait=self.probe_wait,
        )

    async def _open(
        self,
        endpoint: Endpoint,
        minted: MintedToken,
        avatar_id: str,
        sample_rate: int,
        query_auth: bool,
        egress: message_pb2.LiveKitEgressConfig | None = None,
    ) -> IngressConnection:
        token, region = minted.session_token, endpoint.region
        try:
            url = ingress_websocket_url(
                endpoint.ingress_url,
                avatar_id,
                app_id=self.app_id if query_auth else None,
                session_token=token if query_auth else None,
            )
        except ValueError as exc:
            raise AppError(
                ErrorCode.CONNECTION_FAILED,
                f"ingress URL for {region} is unusable: {exc}",
                phase=Phase.WEBSOCKET_CONNECT,
            ) from None
        headers = None if query_auth else {"X-App-ID": self.app_id, "X-Session-Key": token}
        try:
            websocket = await ws_connect(
                url,
                additional_headers=headers,
                open_timeout=self._connect_timeout,
                compression=None,  # the protocol negotiates none; frames are mostly opaque bytes
                user_agent_header="avatar-relay",
                max_size=self._max_frame_bytes,
                max_queue=self._max_queue,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=self._close_timeout,
                logger=_WEBSOCKETS_LOG,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            text = _rejection_text(bytes(exc.response.body or b""), token)
            raise AppError(
                classify(Phase.WEBSOCKET_CONNECT, http_status=status, text=text),
                f"ingress in {region} rejected the connection (HTTP {status}): {text}",
                phase=Phase.WEBSOCKET_CONNECT,
                http_status=status,
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            # `from None` and scrubbing: with query auth the URL (and so the error) holds the token.
            reason = str(exc).replace(token, "***") or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {self._connect_timeout:g}s"
            raise AppError(
                ErrorCode.CONNECTION_FAILED,
                f"ingress in {region} unreachable: {reason}",
                phase=Phase.WEBSOCKET_CONNECT,
            ) from None
        try:
            connection_id, capabilities = await self._handshake(
                websocket, _configure_session(sample_rate, egress), region
            )
        except BaseException:
            await _abandon(websocket)
            raise
        log.debug("ingress session confirmed", extra={"connection_id": connection_id})
        return IngressConnection(
            websocket,
            connection_id=connection_id,
            region=region,
            avatar_id=avatar_id,
            sample_rate=sample_rate,
            capabilities=capabilities,
        )

    async def _handshake(
        self, websocket: ClientConnection, configure: bytes, region: str
    ) -> tuple[str, tuple[str, ...]]:
        phase = Phase.WEBSOCKET_HANDSHAKE
        try:
            async with asyncio.timeout(self._connect_timeout):
                await websocket.send(configure)
                raw = await websocket.recv()
        except TimeoutError:
            raise AppError(
                ErrorCode.CONNECTION_FAILED,
                f"ingress in {region} did not confirm the session within"
                f" {self._connect_timeout:g}s",
                phase=phase,
            ) from None
        except ConnectionClosed as exc:
            raise _closed_error(exc, f"ingress in {region} during the handshake:", phase) from None
        if not isinstance(raw, bytes):
            raise AppError(
                ErrorCode.PROTOCOL_ERROR, "handshake answer is a text frame", phase=phase
            )
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


async def _abandon(websocket: ClientConnection) -> None:
    """Close a connection that failed its handshake, without letting the close fail louder."""
    with contextlib.suppress(Exception):
        await websocket.close()
