"""Ingress v2: one WebSocket session (handshake, requests, animation frames, playback control)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from app.emulator import wire
from app.emulator.asgi import Receive, Send
from app.emulator.configure import (
    CODE_IDLE,
    CODE_INVALID_ARGUMENT,
    CODE_PROTOCOL,
    CODE_UNAVAILABLE,
    OPUS_SAMPLE_RATES,
    PCM_SAMPLE_RATES,
    audio_settings,
    configure_message,
)
from app.emulator.egress import EgressOutput, bind_egress
from app.emulator.faults import Faults
from app.emulator.ogg import OggGranules
from app.emulator.pacing import Pacing
from app.emulator.playback import EXPLICIT_REASON, Control, Request
from app.proto import message_pb2

__all__ = ["OPUS_SAMPLE_RATES", "PCM_SAMPLE_RATES", "IngressSession"]

if TYPE_CHECKING:
    from app.emulator.emulator import Emulator

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000

# Playback states of finished requests kept per connection, to answer a late pause or resume.
_FINISHED_MEMORY = 64
# Request ids interrupted in egress mode, remembered so their late audio is dropped.
_INTERRUPTED_MEMORY = 64

_PLAYBACK = message_pb2.ServerPlaybackState


class IngressSession(Pacing):
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
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._open: Request | None = None
        # Requests not finished yet, and the played_ms of recently finished ones.
        self._live: dict[str, Request] = {}
        self._finished: dict[str, int] = {}
        self._playback_control = emu.playback_control
        # True while the sender has frames it can send; the idle timeout only runs while it waits
        # for audio (so a long answer never times out, but a stalled request does).
        self._producing = False
        self._frames_on_connection = 0
        self._error_fired = False
        # LiveKit egress mode: output goes to a room; the socket carries playback signals only.
        self._egress: EgressOutput | None = None
        self._interrupted: dict[str, None] = {}
        self._idle_timeout = emu.idle_timeout
        self._idle_text = f"no audio input for {emu.idle_timeout:g}s"
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
        if self._egress is not None:
            self._egress.join()
        sender = asyncio.create_task(self._sender())
        sender.add_done_callback(self._sender_done)
        try:
            await self._receiver()
        finally:
            if self._egress is not None:
                self._egress.leave()
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
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every receive in a task
        # of its own, the receiver's largest cost per audio message.
        try:
            async with asyncio.timeout(wait):
                return dict(await self._receive())
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
        config = configure_message(event)
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
        if self._emu.record:
            self._emu.extra_params[self.connection_id] = dict(config.extra_params)
            if self._egress is not None:
                kept = message_pb2.LiveKitEgressConfig()
                kept.CopyFrom(config.livekit_egress)
                self._emu.egress_configs[self.connection_id] = kept
        self._emu.stats.handshakes_completed += 1
        if self._egress is not None:
            self._emu.stats.egress_sessions += 1
        self._emu.register_session(self)
        await self._send_binary(wire.confirm_message(self.connection_id, self._emu.capabilities))
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
        audio = audio_settings(config)
        if isinstance(audio, tuple):
            return audio
        self._opus = audio.opus
        self._units_per_frame = audio.units_per_frame
        if config.egress_type == message_pb2.EGRESS_TYPE_LIVEKIT or config.HasField(
            "livekit_egress"
        ):
            emu = self._emu
            binding = bind_egress(emu.livekit, config, emu.netlocs, self.connection_id)
            if isinstance(binding, tuple):
                return binding
            self._egress = EgressOutput(
                emu.livekit,
                binding,
                self.connection_id,
                self._avatar_id,
                bytes_per_frame=audio.bytes_per_frame,
                end_repeats=emu.egress_end_repeats,
            )
            if binding.idle_timeout is not None:
                self._idle_timeout = binding.idle_timeout
                self._idle_text = f"livekit silence timeout after {binding.idle_timeout:g}s"
        elif config.egress_type != message_pb2.EGRESS_TYPE_UNSPECIFIED or config.HasField(
            "agora_egress"
        ):
            return CODE_UNAVAILABLE, "egress client is not configured on server"
        return None

    # --- receiving ---

    def _idle_wait(self) -> float:
        """Seconds the receiver may wait before re-checking the idle timeout."""
        if self._producing:
            return self._idle_timeout
        return max(0.0, self._last_activity + self._idle_timeout - self._loop.time())

    async def _receiver(self) -> None:
        while not self._closed:
            event = await self._next_event(self._idle_wait())
            if event is None:
                idle_at = self._last_activity + self._idle_timeout
                if self._producing or self._loop.time() < idle_at:
                    continue
                self._emu.stats.idle_timeouts += 1
                await self._fail(CODE_IDLE, self._idle_text)
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
                # The docs say interrupt only has effect with LiveKit egress; Host Mode counts it.
                self._emu.stats.interrupts_received += 1
                self._emu.notify()
                if self._egress is not None:
                    self._on_interrupt(message.client_interrupt.req_id)
            elif message.type == message_pb2.MESSAGE_CLIENT_PAUSE:
                self._emu.stats.pauses_received += 1
                await self._on_control(message.client_pause.req_id, Control.PAUSE)
            elif message.type == message_pb2.MESSAGE_CLIENT_RESUME:
                self._emu.stats.resumes_received += 1
                await self._on_control(message.client_resume.req_id, Control.RESUME)
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
        if audio.req_id in self._interrupted:
            return  # late audio of a request interrupted in egress mode: nothing plays it
        request = self._open
        if request is None or request.req_id != audio.req_id:
            if request is not None:
                # A new request while the previous one is still open ends the previous one.
                request.ended = True
                request.update()
            request = Request(
                req_id=audio.req_id, t0=now, ogg=OggGranules() if self._opus else None
            )
            self._open = request
            self._live[request.req_id] = request
            self._emu.stats.requests_started += 1
            self._queue.put_nowait(request)
        self._emu.stats.audio_bytes_received += len(audio.audio)
        if self._emu.record:
            previous = self._emu.received_audio.get(audio.req_id, b"")
            self._emu.received_audio[audio.req_id] = previous + audio.audio
            trace = audio.trace_context
            if trace.traceparent or trace.tracestate:
                self._emu.trace_contexts[audio.req_id] = (trace.traceparent, trace.tracestate)
        if self._egress is not None:
            self._egress.audio(audio.req_id, audio.audio)
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

    def _on_interrupt(self, req_id: str) -> None:
        """Egress mode: stop the request's playout (the sender gives it up at its next frame)."""
        request = self._live.get(req_id)
        if request is None or request.interrupted:
            return
        request.interrupted = True
        if self._open is request:
            self._open = None
        self._interrupted[req_id] = None
        if len(self._interrupted) > _INTERRUPTED_MEMORY:
            del self._interrupted[next(iter(self._interrupted))]
        request.update()

    async def _on_control(self, req_id: str, kind: Control) -> None:
        """CLIENT_PAUSE / CLIENT_RESUME: ignored unless playback control is declared."""
        self._emu.notify()
        if not self._playback_control:
            return
        request = self._live.get(req_id)
        if request is not None:
            # The sender applies it before its next frame and reports the state.
            request.control(kind)
            return
        played = self._finished.get(req_id)
        if played is not None:
            await self._send_state(req_id, _PLAYBACK.ENDED, played)

    # --- sending ---

    async def _send_state(
        self,
        req_id: str,
        state: message_pb2.ServerPlaybackState.State.ValueType,
        played_ms: int,
        reason: str = "",
    ) -> None:
        self._emu.stats.playback_states_sent += 1
        await self._send_binary(
            wire.playback_state_message(self.connection_id, req_id, state, played_ms, reason)
        )

    async def _report_interrupted(self, request: Request) -> None:
        assert self._egress is not None
        self._egress.interrupted(request.req_id)
        self._emu.stats.requests_interrupted += 1
        if self._playback_control:
            await self._send_state(
                request.req_id, _PLAYBACK.INTERRUPTED, request.played_ms, EXPLICIT_REASON
            )

    def _total_frames(self, request: Request) -> int:
        """Frames of an ended request: one per 40 ms, a remainder counts, never fewer than one."""
        return max(1, math.ceil(request.units / self._units_per_frame))

    async def _sender(self) -> None:
        while not self._closed:
            self._set_producing(False)
            request = await self._queue.get()
            self._set_producing(True)
            await self._stream(request)
            if request.interrupted:
                await self._report_interrupted(request)
            self._live.pop(request.req_id, None)
            self._finished[request.req_id] = request.played_ms
            if len(self._finished) > _FINISHED_MEMORY:
                del self._finished[next(iter(self._finished))]
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

    async def _emit_frame(self, request: Request, index: int, end: bool) -> bool:
        """Frame `index` out: an animation message, or in egress mode playout into the room
        and its playback signals. False once the connection is closed."""
        if self._egress is None:
            data = wire.animation_message(
                self.connection_id,
                request.req_id,
                index,
                end,
                self._emu.frame_bytes,
                avatar_id=self._avatar_id,
            )
            if self._emu.stamp_frames:
                data += wire.send_time_field(time.time_ns())
            return await self._send_binary(data)
        for signal in self._egress.frame(request.req_id, index, end):
            self._emu.stats.egress_signals_sent += 1
            if not await self._send_binary(signal):
                return False
        return not self._closed

    async def _stream(self, request: Request) -> None:
        index = 0
        while not self._closed:
            if not await self._until_due(request, index):
                return
            if self.faults.frame_delay > 0:
                await asyncio.sleep(self.faults.frame_delay)
            faults = self.faults
            if await self._cut_after_frames(faults):
                return
            error = faults.error_after_frames
            if error is not None and not self._error_fired:
                after, code, text = error
                if self._frames_on_connection >= after:
                    self._error_fired = True
                    self._emu.stats.errors_sent += 1
                    await self._send_binary(
                        wire.error_message(self.connection_id, request.req_id, code, text)
                    )
                    return
            if self._playback_control and not request.announced:
                request.announced = True
                await self._send_state(request.req_id, _PLAYBACK.PLAYING, 0)
            end = request.ended and index >= self._total_frames(request) - 1
            if not await self._emit_frame(request, index, end):
                return
            request.frames_sent += 1
            self._frames_on_connection += 1
            self._emu.stats.frames_sent += 1
            index += 1
            if await self._cut_after_frames(self.faults):
                return
            if end:
                self._emu.stats.requests_completed += 1
                if self._playback_control:
                    await self._send_state(request.req_id, _PLAYBACK.ENDED, request.played_ms)
                return
