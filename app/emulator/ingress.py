"""Ingress v2: upgrade checks and one WebSocket session (handshake, requests, animation frames)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from app.emulator import wire
from app.emulator.asgi import Receive, Scope, Send, header, query
from app.emulator.faults import Faults
from app.emulator.state import TokenCheck
from app.proto import message_pb2

if TYPE_CHECKING:
    from app.emulator.emulator import Emulator

logger = logging.getLogger(__name__)

PCM_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)

# SERVER_ERROR codes. The real service does not publish its numbers; these avoid 3, 14, 16, 4001
# and 4002, which the official SDK maps by value, so its text classification applies.
CODE_PROTOCOL = 9
CODE_INVALID_ARGUMENT = 3
CODE_UNAVAILABLE = 14
CODE_IDLE = 4

CLOSE_NORMAL = 1000

# Opus granule positions count 48 kHz samples whatever the input rate; 40 ms is 1920 of them.
_OPUS_GRANULES_PER_FRAME = 1920


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    detail: str
    code: str | None = None


def check_upgrade(emu: Emulator, scope: Scope, faults: Faults) -> Rejection | None:
    """Why this upgrade must be refused, or None to accept it (the token is not consumed here)."""
    if faults.upgrade_status is not None:
        return Rejection(
            faults.upgrade_status,
            wire.INGRESS_REJECTIONS.get(faults.upgrade_status, ("", "upgrade rejected"))[1],
        )
    params = query(scope)
    # Headers (server and mobile style) win over query parameters (web style).
    app_id = header(scope, "x-app-id") or params.get("appId", "")
    token = header(scope, "x-session-key") or params.get("sessionKey", "")
    if not token:
        return Rejection(400, "empty token", "SESSION_TOKEN_INVALID")
    if app_id not in emu.known_app_ids:
        return Rejection(404, "app id unrecognized", "APP_ID_UNRECOGNIZED")
    verdict = emu.tokens.check(token, app_id)
    if verdict is TokenCheck.UNKNOWN:
        return Rejection(400, "invalid session token", "SESSION_TOKEN_INVALID")
    if verdict is TokenCheck.EXPIRED:
        return Rejection(401, "token is expired", "SESSION_TOKEN_EXPIRED")
    if verdict is TokenCheck.APP_MISMATCH:
        return Rejection(400, "app id mismatch", "APP_ID_MISMATCH")
    if params.get("id", "") not in emu.avatars:
        return Rejection(404, "avatar not found", "AVATAR_NOT_FOUND")
    return None


def session_token(scope: Scope) -> str:
    return header(scope, "x-session-key") or query(scope).get("sessionKey", "")


class _OggGranules:
    """Follows an Ogg Opus stream's pages to know how much audio (in 48 kHz samples) it holds."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pre_skip = 0
        self._seen_head = False
        self.samples = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            start = self._buffer.find(b"OggS")
            if start < 0:
                del self._buffer[: max(0, len(self._buffer) - 3)]
                return
            del self._buffer[:start]
            if len(self._buffer) < 27:
                return
            segments = self._buffer[26]
            header_len = 27 + segments
            if len(self._buffer) < header_len:
                return
            body_len = sum(self._buffer[27:header_len])
            if len(self._buffer) < header_len + body_len:
                return
            granule = int.from_bytes(self._buffer[6:14], "little", signed=True)
            body = bytes(self._buffer[header_len : header_len + body_len])
            del self._buffer[: header_len + body_len]
            if not self._seen_head and body.startswith(b"OpusHead") and len(body) >= 12:
                self._seen_head = True
                self._pre_skip = int.from_bytes(body[10:12], "little")
            elif granule >= 0:
                self.samples = max(self.samples, granule - self._pre_skip)


@dataclass(eq=False)
class _Request:
    req_id: str
    t0: float
    units: int = 0  # PCM bytes, or Opus samples at 48 kHz
    ended: bool = False
    failed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ogg: _OggGranules | None = None

    def update(self) -> None:
        self.changed.set()


def _configure_message(
    event: dict[str, Any],
) -> message_pb2.ClientConfigureSession | tuple[int, str]:
    """The first message's CLIENT_CONFIGURE_SESSION, or the SERVER_ERROR (code, text) for it."""
    data = event.get("bytes")
    if data is None:
        return CODE_PROTOCOL, "unexpected message type: text frames are not supported"
    message = message_pb2.Message()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return CODE_PROTOCOL, "failed to unmarshal initial message"
    if message.type != message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION:
        return CODE_PROTOCOL, "expected clientconfiguresession message"
    return message.client_configure_session


class IngressSession:
    """One accepted ingress WebSocket, from the configure message to the close."""

    def __init__(
        self, emu: Emulator, receive: Receive, send: Send, avatar_id: str, abort: Callable[[], None]
    ) -> None:
        self._emu = emu
        self._receive = receive
        self._send = send
        self._avatar_id = avatar_id
        self._abort = abort
        self._send_lock = asyncio.Lock()
        self._closed = False
        self.connection_id = ""
        self._units_per_frame = 0
        self._opus = False
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._open: _Request | None = None
        # True while the sender has frames it can send; the idle timeout only runs while it waits
        # for audio (so a long answer never times out, but a stalled request does).
        self._producing = False
        self._frames_on_connection = 0
        self._error_fired = False
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._last_activity = loop.time()

    @property
    def faults(self) -> Faults:
        return self._emu.faults_for(self._avatar_id)

    # --- lifecycle ---

    async def run(self) -> None:
        if not await self._handshake():
            return
        sender = asyncio.create_task(self._sender())
        sender.add_done_callback(self._sender_done)
        try:
            await self._receiver()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug in the emulator must be loud, and the client must not wait forever for frames.
        logger.error("emulator frame sender failed", exc_info=task.exception())
        self.drop()

    def drop(self) -> None:
        """Abort the TCP connection without a close frame."""
        if not self._closed:
            self._closed = True
            self._emu.stats.connections_dropped += 1
            self._abort()

    async def _send_binary(self, data: bytes) -> bool:
        async with self._send_lock:
            if self._closed:
                return False
            try:
                await self._send({"type": "websocket.send", "bytes": data})
            except OSError:
                self._closed = True
                return False
        if self._emu.record:
            self._emu.sent.setdefault(self.connection_id or "", []).append(data)
        return True

    async def _fail(self, code: int, text: str, req_id: str = "") -> None:
        """Send SERVER_ERROR, then close the WebSocket normally."""
        self._emu.stats.errors_sent += 1
        await self._send_binary(wire.error_message(self.connection_id, req_id, code, text))
        await self._close(CLOSE_NORMAL, "")

    async def close_with_code(self, code: int) -> None:
        """Close the WebSocket with a contract close code (4001, 4503, ...) and its reason."""
        self._emu.stats.closes_sent += 1
        await self._close(code, wire.close_reason(code))

    async def _close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        self._emu.notify()

    # --- handshake ---

    async def _next_event(self, wait: float | None) -> dict[str, Any] | None:
        """The next ASGI event, or None when none came within `wait` seconds."""
        try:
            return dict(await asyncio.wait_for(self._receive(), wait))
        except TimeoutError:
            return None

    async def _handshake(self) -> bool:
        event = await self._next_event(self._emu.idle_timeout)
        if event is None:
            self._emu.stats.idle_timeouts += 1
            await self._fail(CODE_IDLE, f"no audio input for {self._emu.idle_timeout:g}s")
            return False
        if event["type"] == "websocket.disconnect":
            return False
        self.connection_id = self._emu.new_connection_id()
        if self._emu.record:
            self._emu.sent.setdefault(self.connection_id, [])
        config = _configure_message(event)
        if isinstance(config, tuple):
            self._emu.stats.handshakes_failed += 1
            await self._fail(*config)
            return False
        faults = self.faults
        if faults.close_at_handshake is not None:
            self._emu.stats.handshakes_failed += 1
            await self.close_with_code(faults.close_at_handshake)
            return False
        if faults.handshake_hang:
            await self._hang()
            return False
        problem = faults.handshake_error or self._configure(config)
        if problem is not None:
            self._emu.stats.handshakes_failed += 1
            await self._fail(*problem)
            return False
        self._emu.stats.handshakes_completed += 1
        self._emu.register_session(self)
        await self._send_binary(wire.confirm_message(self.connection_id))
        self._emu.notify()
        return True

    async def _hang(self) -> None:
        """The handshake-timeout fault: read and ignore everything until the client leaves."""
        self._emu.stats.handshakes_unanswered += 1
        self._emu.register_session(self)
        self._emu.notify()
        while not self._closed:
            event = await self._receive()
            if event["type"] == "websocket.disconnect":
                self._closed = True

    def _configure(self, config: message_pb2.ClientConfigureSession) -> tuple[int, str] | None:
        """Apply the configure message; the SERVER_ERROR (code, text) if it must be refused."""
        if config.egress_type != message_pb2.EGRESS_TYPE_UNSPECIFIED or (
            config.HasField("livekit_egress") or config.HasField("agora_egress")
        ):
            return CODE_UNAVAILABLE, "egress client is not configured on server"
        if config.audio_format == message_pb2.AUDIO_FORMAT_OGG_OPUS:
            rates: tuple[int, ...] = OPUS_SAMPLE_RATES
            self._opus = True
            self._units_per_frame = _OPUS_GRANULES_PER_FRAME
        elif config.audio_format == message_pb2.AUDIO_FORMAT_PCM_S16LE:
            rates = PCM_SAMPLE_RATES
            # s16le mono: two bytes per sample.
            self._units_per_frame = round(config.sample_rate * 2 * wire.FRAME_SECONDS)
        else:
            return CODE_PROTOCOL, f"unsupported audio format: {config.audio_format}"
        if config.sample_rate not in rates:
            return CODE_PROTOCOL, f"unsupported sample rate: {config.sample_rate}"
        if config.transport_compression != message_pb2.TRANSPORT_COMPRESSION_NONE:
            return CODE_PROTOCOL, "unsupported transport compression"
        return None

    # --- receiving ---

    def _idle_wait(self) -> float:
        """Seconds the receiver may wait before re-checking the idle timeout."""
        if self._producing:
            return self._emu.idle_timeout
        return max(0.0, self._last_activity + self._emu.idle_timeout - self._loop.time())

    async def _receiver(self) -> None:
        while not self._closed:
            event = await self._next_event(self._idle_wait())
            if event is None:
                idle_at = self._last_activity + self._emu.idle_timeout
                if self._producing or self._loop.time() < idle_at:
                    continue
                self._emu.stats.idle_timeouts += 1
                await self._fail(CODE_IDLE, f"no audio input for {self._emu.idle_timeout:g}s")
                return
            if event["type"] == "websocket.disconnect":
                self._closed = True
                return
            data = event.get("bytes")
            if data is None:
                await self._fail(CODE_PROTOCOL, "unexpected message type: text frame")
                return
            message = message_pb2.Message()
            try:
                message.ParseFromString(data)
            except DecodeError:
                await self._fail(CODE_PROTOCOL, "unexpected message type: undecodable message")
                return
            if message.type == message_pb2.MESSAGE_CLIENT_AUDIO_INPUT:
                await self._on_audio(message.client_audio_input)
            elif message.type == message_pb2.MESSAGE_CLIENT_INTERRUPT:
                # Host Mode: the docs say interrupt only has effect with LiveKit egress.
                self._emu.stats.interrupts_received += 1
                self._emu.notify()
            else:
                await self._fail(CODE_PROTOCOL, f"unexpected message type: {message.type}")
                return

    async def _on_audio(self, audio: message_pb2.ClientAudioInput) -> None:
        if not audio.req_id:
            self._emu.stats.errors_sent += 1
            await self._send_binary(
                wire.error_message(
                    self.connection_id, "", CODE_INVALID_ARGUMENT, "req_id is required"
                )
            )
            return
        now = self._loop.time()
        self._last_activity = now
        request = self._open
        if request is None or request.req_id != audio.req_id:
            if request is not None:
                # A new request while the previous one is still open ends the previous one.
                request.ended = True
                request.update()
            request = _Request(
                req_id=audio.req_id, t0=now, ogg=_OggGranules() if self._opus else None
            )
            self._open = request
            self._emu.stats.requests_started += 1
            self._queue.put_nowait(request)
        self._emu.stats.audio_bytes_received += len(audio.audio)
        if self._emu.record:
            previous = self._emu.received_audio.get(audio.req_id, b"")
            self._emu.received_audio[audio.req_id] = previous + audio.audio
        if request.ogg is not None:
            request.ogg.feed(audio.audio)
            request.units = request.ogg.samples
        else:
            request.units += len(audio.audio)
        if audio.end:
            request.ended = True
            self._open = None
        request.update()
        self._emu.notify()

    # --- sending ---

    def _total_frames(self, request: _Request) -> int:
        """Frames of an ended request: one per 40 ms, a remainder counts, never fewer than one."""
        return max(1, math.ceil(request.units / self._units_per_frame))

    def _set_producing(self, producing: bool) -> None:
        if self._producing and not producing:
            # The end of output counts as activity: the idle clock starts now at the earliest.
            self._last_activity = max(self._last_activity, self._loop.time())
        self._producing = producing

    async def _wait_sendable(self, request: _Request, index: int) -> None:
        # Frame `index` goes out once audio beyond it exists (so it is surely not the last) or the
        # request has ended (so whether it is the last is known).
        while not (request.ended or (index + 1) * self._units_per_frame < request.units):
            self._set_producing(False)
            request.changed.clear()
            await request.changed.wait()
        self._set_producing(True)

    async def _sender(self) -> None:
        while not self._closed:
            self._set_producing(False)
            request = await self._queue.get()
            self._set_producing(True)
            await self._stream(request)
            self._emu.notify()

    async def _cut_after_frames(self, faults: Faults) -> bool:
        """Apply `drop_after_frames` / `close_after_frames` once their count is reached."""
        count = self._frames_on_connection
        if faults.drop_after_frames is not None and count >= faults.drop_after_frames:
            self.drop()
            return True
        if faults.close_after_frames is not None and count >= faults.close_after_frames[0]:
            await self.close_with_code(faults.close_after_frames[1])
            return True
        return False

    async def _stream(self, request: _Request) -> None:
        index = 0
        while not self._closed:
            await self._wait_sendable(request, index)
            due = request.t0 + index * wire.FRAME_SECONDS / self._emu.speed
            delay = max(0.0, due - self._loop.time()) + self.faults.frame_delay
            if delay > 0:
                await asyncio.sleep(delay)
            faults = self.faults
            if await self._cut_after_frames(faults):
                return
            error = faults.error_after_frames
            if error is not None and not self._error_fired:
                after, code, text = error
                if self._frames_on_connection >= after:
                    self._error_fired = True
                    request.failed = True
                    self._emu.stats.errors_sent += 1
                    await self._send_binary(
                        wire.error_message(self.connection_id, request.req_id, code, text)
                    )
                    return
            end = request.ended and index >= self._total_frames(request) - 1
            data = wire.animation_message(
                self.connection_id, request.req_id, index, end, self._emu.frame_bytes
            )
            if not await self._send_binary(data):
                return
            self._frames_on_connection += 1
            self._emu.stats.frames_sent += 1
            index += 1
            if await self._cut_after_frames(self.faults):
                return
            if end:
                self._emu.stats.requests_completed += 1
                return
