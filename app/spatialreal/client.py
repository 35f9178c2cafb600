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
Every failure is an `AppError` with a stable code and the phase it happened in; an upstream close
code (or a SERVER_ERROR code in 4000-4999) is kept as `AppError.close_code`, which decides
`retryable` (the close-code contract, see app/errors.py).

This module picks the region and opens the socket; `handshake` configures and confirms the
session, and `connection` is the open session (`IngressConnection`) it hands back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Self

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus, WebSocketException

from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.settings import Endpoint, Settings
from app.spatialreal.classify import classify
from app.spatialreal.connection import IngressConnection
from app.spatialreal.console import ConsoleClient, MintedToken
from app.spatialreal.fallback import ABSTAIN, ANSWERED, Gate, try_regions, worth_another_region
from app.spatialreal.handshake import (
    configure_session,
    confirm_session,
    ingress_websocket_url,
    rejection_text,
)
from app.spatialreal.ingress_socket import IngressWebSocket
from app.spatialreal.regions import IngressBreakers

log = logging.getLogger("avatar_relay.spatialreal")


class _NoDebugLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs the handshake (path and headers, so the session token) and every frame at
    DEBUG. Refusing DEBUG keeps the token out of logs and the hot path free of log formatting."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WEBSOCKETS_LOG = _NoDebugLog(logging.getLogger("websockets.client"), {})

# The size of a real animation frame is not published; stay far above anything plausible while
# still bounding memory per connection.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


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
                create_connection=IngressWebSocket,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            text = rejection_text(bytes(exc.response.body or b""), token)
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
            connection_id, capabilities = await confirm_session(
                websocket, configure_session(sample_rate, egress), region, self._connect_timeout
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


async def _abandon(websocket: ClientConnection) -> None:
    """Close a connection that failed its handshake, without letting the close fail louder."""
    with contextlib.suppress(Exception):
        await websocket.close()
