"""The emulator: console + ingress v2 on one loopback base URL, served by uvicorn in this loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import uvicorn

from app.emulator import wire
from app.emulator.asgi import (
    Receive,
    Scope,
    Send,
    deny_websocket,
    header,
    query,
    read_body,
    send_http,
)
from app.emulator.defaults import (
    DEFAULT_API_KEY,
    DEFAULT_APP_ID,
    DEFAULT_AVATAR_ID,
    DEFAULT_LIVEKIT_API_KEY,
    DEFAULT_LIVEKIT_API_SECRET,
)
from app.emulator.faults import Faults
from app.emulator.ingress import IngressSession
from app.emulator.livekit import TWIRP_PREFIX, LiveKitStandIn
from app.emulator.playback import PLAYBACK_CAPABILITIES
from app.emulator.state import MAX_TOKEN_LIFETIME_SECONDS, EmulatorStats, TokenStore
from app.emulator.upgrade import check_upgrade, session_token
from app.proto import message_pb2

CONSOLE_PATH = "/v1/console"
INGRESS_PATH = "/v2/driveningress"
SESSION_TOKENS_PATH = CONSOLE_PATH + "/session-tokens"
# The October 2026 route at the API root (`spatialreal` 0.2.2), answering {"session_token"}; the
# console route above is its older alias, answering {"sessionToken"}.
AUTH_SESSION_TOKEN_PATH = "/v1/auth/session-token"  # noqa: S105 (a route, not a secret)
# The JSON key each token route answers with.
_TOKEN_ANSWER_KEYS = {SESSION_TOKENS_PATH: "sessionToken", AUTH_SESSION_TOKEN_PATH: "session_token"}
WEBSOCKET_PATH = INGRESS_PATH + "/websocket"


class _RedactSessionKeys(logging.Filter):
    """uvicorn logs WebSocket paths with their query string; hide `sessionKey=` values in them."""

    _pattern = re.compile(r"(sessionKey=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "sessionKey=" in arg for arg in record.args
        ):
            record.args = tuple(
                self._pattern.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def _install_log_redaction() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _RedactSessionKeys) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_RedactSessionKeys())


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling: the process hosting the emulator owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _transport_abort(receive: Receive) -> Callable[[], None]:
    """A callable that aborts the TCP connection behind an ASGI WebSocket (no close frame).

    ASGI has no "drop the connection" message; uvicorn's websockets-sansio protocol hands the app
    its bound `receive`, whose owner holds the asyncio transport.
    """
    protocol = getattr(receive, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection transport; run under uvicorn websockets")

    def abort() -> None:
        transport.abort()

    return abort


class Emulator:
    """The SpatialReal cloud (console + ingress v2), faithful on the wire; see docs/emulator.md."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        app_id: str = DEFAULT_APP_ID,
        avatars: Iterable[str] = (DEFAULT_AVATAR_ID,),
        speed: float = 1.0,
        idle_timeout: float = 60.0,
        frame_bytes: int = 1024,
        record: bool = False,
        faults: Faults | None = None,
        apps: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        log_level: str | None = None,
        multi_use_tokens: bool = False,
        playback_control: bool = False,
        pause_timeout: float | None = None,
        capabilities: Iterable[str] = (),
        livekit_api_key: str = DEFAULT_LIVEKIT_API_KEY,
        livekit_api_secret: str = DEFAULT_LIVEKIT_API_SECRET,
        egress_end_repeats: int = 2,
        stamp_frames: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if frame_bytes < 0:
            raise ValueError("frame_bytes must not be negative")
        if pause_timeout is not None and pause_timeout <= 0:
            raise ValueError("pause_timeout must be positive")
        if egress_end_repeats < 1:
            raise ValueError("egress_end_repeats must be at least 1")
        self.host = host
        self.port = port
        self.api_keys: tuple[str, ...] = tuple(api_keys)
        self.app_id = app_id
        self.avatars: tuple[str, ...] = tuple(avatars)
        self.speed = speed
        self.idle_timeout = idle_timeout
        self.frame_bytes = frame_bytes
        self.record = record
        # Each animation message ends with its send time (wire.SEND_TIME_FIELD), for benchmarks.
        self.stamp_frames = stamp_frames
        # Playback control (pause / resume / playback states) is an October 2026 capability;
        # off, the emulator is a server without it and ignores pause and resume.
        self.playback_control = playback_control
        self.pause_timeout = pause_timeout
        self.capabilities: tuple[str, ...] = (
            PLAYBACK_CAPABILITIES if playback_control else ()
        ) + tuple(capabilities)
        self.faults = faults if faults is not None else Faults()
        self.clock = clock
        # API key -> app id. `apps` adds other apps (other keys), e.g. to provoke "app id mismatch".
        self._key_apps: dict[str, str] = dict.fromkeys(self.api_keys, app_id)
        self._key_apps.update(apps or {})
        self.known_app_ids: frozenset[str] = frozenset(self._key_apps.values()) | {app_id}
        # Single use as documented; multi-use is what `spatius` prewarm() assumes of the backend.
        self.tokens = TokenStore(clock, multi_use=multi_use_tokens)
        self.stats = EmulatorStats()
        self.stats.on_change(self.notify)
        # The LiveKit stand-in (RoomService + the rooms egress sessions join), and how often an
        # egress-mode `end` signal is sent (the real egress path may repeat it).
        self.livekit = LiveKitStandIn(livekit_api_key, livekit_api_secret, self.notify)
        self.egress_end_repeats = egress_end_repeats
        self.netlocs: frozenset[str] = frozenset()
        self.sent: dict[str, list[bytes]] = {}
        self.received_audio: dict[str, bytes] = {}
        self.extra_params: dict[str, dict[str, str]] = {}
        self.egress_configs: dict[str, message_pb2.LiveKitEgressConfig] = {}
        self.trace_contexts: dict[str, tuple[str, str]] = {}
        self._avatar_faults: dict[str, Faults] = {}
        self._sessions: set[IngressSession] = set()
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._base_url = ""

    # --- lifecycle ---

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        _install_log_redaction()
        config = uvicorn.Config(
            self._asgi,
            host=self.host,
            port=self.port,
            # Leave the host process's logging alone (uvicorn would reconfigure it); the
            # standalone command passes a level explicitly.
            log_config=None,
            log_level=self._log_level,
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            ws="websockets-sansio",
            timeout_graceful_shutdown=3,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("emulator server stopped before it started")
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{port}"
        # The addresses an egress configuration may name as its LiveKit server: this one.
        self.netlocs = frozenset({f"{host}:{port}", f"localhost:{port}"})

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=10)
        self._server = None
        self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- public helpers ---

    @property
    def base_url(self) -> str:
        if not self._base_url:
            raise RuntimeError("emulator not started")
        return self._base_url

    @property
    def api_url(self) -> str:
        """The API root (`spatialreal` 0.2.2 posts to `{api}/v1/auth/session-token`)."""
        return self.base_url

    @property
    def console_url(self) -> str:
        return self.base_url + CONSOLE_PATH

    @property
    def ingress_url(self) -> str:
        return self.base_url + INGRESS_PATH

    @property
    def livekit_url(self) -> str:
        """The LiveKit stand-in's URL as LiveKit clients take it (its RoomService is there)."""
        return "ws" + self.base_url.removeprefix("http")

    @property
    def websocket_url(self) -> str:
        """The ws:// URL of the ingress WebSocket endpoint (without query parameters)."""
        return "ws" + self.base_url.removeprefix("http") + WEBSOCKET_PATH

    def mint_token(self, expire_at: int | None = None, *, app_id: str | None = None) -> str:
        """Issue a session token without HTTP (tests); defaults: this app, valid for an hour."""
        expiry = expire_at if expire_at is not None else int(self.clock()) + 3600
        self.stats.tokens_minted += 1
        return self.tokens.mint(app_id or self.app_id, expiry)

    def set_avatar_faults(self, avatar_id: str, faults: Faults | None) -> None:
        """Faults for connections to this avatar only (None removes them)."""
        if faults is None:
            self._avatar_faults.pop(avatar_id, None)
        else:
            self._avatar_faults[avatar_id] = faults

    def faults_for(self, avatar_id: str) -> Faults:
        own = self._avatar_faults.get(avatar_id)
        return self.faults if own is None else own.merged_over(self.faults)

    def drop_connections(self) -> int:
        """Abort every open ingress connection (no close frame); the number dropped."""
        sessions = list(self._sessions)
        for session in sessions:
            session.drop()
        return len(sessions)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-checking it whenever the emulator's state changes.

        Raises TimeoutError after `within` seconds.
        """
        if self._changed is None:
            raise RuntimeError("emulator not started")
        changed = self._changed
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                if predicate():
                    return
                await changed.wait()

    # --- used by the ingress sessions ---

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def new_connection_id(self) -> str:
        return "conn_" + secrets.token_hex(12)

    def register_session(self, session: IngressSession) -> None:
        self._sessions.add(session)

    # --- ASGI ---

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"]).rstrip("/")
        answer_key = _TOKEN_ANSWER_KEYS.get(path)
        if answer_key is not None:
            if scope["method"] != "POST":
                await send_http(send, 405, wire.error_body(405, "METHOD_NOT_ALLOWED", "use POST"))
                return
            if path == AUTH_SESSION_TOKEN_PATH:
                self.stats.auth_route_requests += 1
            await self._console(scope, receive, send, answer_key)
        elif path.startswith(TWIRP_PREFIX):
            self.stats.livekit_requests += 1
            await self.livekit.serve(scope, receive, send, path.removeprefix(TWIRP_PREFIX))
        elif path == "/healthz":
            await send_http(send, 200, b'{"status":"ok","emulator":true}')
        elif path == WEBSOCKET_PATH:
            body = wire.error_body(426, "UPGRADE_REQUIRED", "websocket upgrade required")
            await send_http(send, 426, body)
        else:
            await send_http(send, 404, wire.error_body(404, "NOT_FOUND", "not found"))

    async def _console(self, scope: Scope, receive: Receive, send: Send, answer_key: str) -> None:
        """Mint a session token: the same rules and faults on both routes, only the key differs."""
        self.stats.console_requests += 1
        body = await read_body(receive)
        faults = self.faults
        if faults.console_latency > 0:
            await self._pause(faults.console_latency)
        if faults.console_hang:
            await self._pause(None)
        if self._stopping is not None and self._stopping.is_set():
            await self._console_error(send, 503, "shutting down")
            return
        if faults.console_fail_next > 0:
            faults.console_fail_next -= 1
            await self._console_error(send, faults.console_status or 503)
            return
        if faults.console_status is not None:
            await self._console_error(send, faults.console_status)
            return
        app_id = self._app_for_key(header(scope, "x-api-key"))
        if app_id is None:
            await self._console_error(send, 401, "invalid api key")
            return
        expire_at = self._expire_at(body)
        if isinstance(expire_at, str):
            await self._console_error(send, 400, expire_at)
            return
        token = self.tokens.mint(app_id, expire_at)
        if faults.console_token is not None:
            token = faults.console_token
        self.stats.tokens_minted += 1
        self.notify()
        await send_http(send, 200, json.dumps({answer_key: token}).encode())

    async def _pause(self, seconds: float | None) -> None:
        """Sleep (forever when None), but no longer than until the emulator stops."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _console_error(self, send: Send, status: int, detail: str | None = None) -> None:
        self.stats.console_failures += 1
        self.notify()
        await send_http(send, status, wire.console_error_body(status, detail))

    def _app_for_key(self, key: str) -> str | None:
        found = None
        for candidate, app_id in self._key_apps.items():
            # Compare every key in constant time; never short-circuit on a secret.
            if secrets.compare_digest(candidate.encode(), key.encode()):
                found = app_id
        return found if key else None

    def _expire_at(self, body: bytes | None) -> int | str:
        """The requested expiry, or the INVALID_ARGUMENT detail text."""
        try:
            payload: Any = json.loads(body or b"")
        except ValueError:
            return "invalid request body: expected JSON"
        value = payload.get("expireAt") if isinstance(payload, dict) else None
        if isinstance(value, bool) or not isinstance(value, int):
            return "invalid request body: expireAt must be an integer (unix seconds)"
        now = self.clock()
        if value <= now:
            return "expire_at must be in the future"
        if value >= now + MAX_TOKEN_LIFETIME_SECONDS:
            return "expire_at must be within 24 hours"
        return value

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if str(scope["path"]).rstrip("/") != WEBSOCKET_PATH:
            self.stats.upgrades_rejected += 1
            await deny_websocket(send, 404, wire.error_body(404, "NOT_FOUND", "not found"))
            return
        avatar_id = query(scope).get("id", "")
        faults = self.faults_for(avatar_id)
        rejection = check_upgrade(self, scope, faults)
        if rejection is not None:
            self.stats.upgrades_rejected += 1
            self.notify()
            body = wire.ingress_error_body(rejection.status, rejection.detail, rejection.code)
            await deny_websocket(send, rejection.status, body)
            return
        self.tokens.consume(session_token(scope))
        await send({"type": "websocket.accept"})
        session = IngressSession(self, receive, send, avatar_id, _transport_abort(receive))
        self.stats.connections_opened += 1
        self.stats.connections_active += 1
        self.notify()
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self.stats.connections_active -= 1
            self.notify()
