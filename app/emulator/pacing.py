"""When an ingress session's next frame may go out: pacing at 25 frames per second of audio,
waiting for audio, pause and resume (playback control), interrupts and the pause timeout.

A base of `IngressSession` (app/emulator/ingress.py), which owns the state these read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from app.emulator.playback import PAUSE_TIMEOUT_REASON, Control, Request
from app.proto import message_pb2

if TYPE_CHECKING:
    from app.emulator.emulator import Emulator

_PLAYBACK = message_pb2.ServerPlaybackState


class Pacing:
    _emu: Emulator
    _loop: asyncio.AbstractEventLoop
    _producing: bool
    _last_activity: float
    _units_per_frame: int
    _playback_control: bool

    async def _send_state(
        self,
        req_id: str,
        state: message_pb2.ServerPlaybackState.State.ValueType,
        played_ms: int,
        reason: str = "",
    ) -> None:
        raise NotImplementedError

    def _set_producing(self, producing: bool) -> None:
        if self._producing and not producing:
            # The end of output counts as activity: the idle clock starts now at the earliest.
            self._last_activity = max(self._last_activity, self._loop.time())
        self._producing = producing

    def _sendable(self, request: Request, index: int) -> bool:
        # Frame `index` goes out once audio beyond it exists (so it is surely not the last) or the
        # request has ended (so whether it is the last is known).
        return request.ended or (index + 1) * self._units_per_frame < request.units

    async def _wait_sendable(self, request: Request, index: int) -> None:
        while not self._sendable(request, index) and not request.interrupted:
            self._set_producing(False)
            request.changed.clear()
            await request.changed.wait()
        self._set_producing(True)

    async def _until_due(self, request: Request, index: int) -> bool:
        """Wait until frame `index` may go out; False when the request was given up."""
        if self._playback_control:
            return await self._until_due_with_controls(request, index)
        await self._wait_sendable(request, index)
        delay = request.due(index, self._emu.speed) - self._loop.time()
        if delay > 0 and not request.interrupted:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not request.interrupted:
                        request.changed.clear()
                        await request.changed.wait()
        return not request.interrupted

    async def _until_due_with_controls(self, request: Request, index: int) -> bool:
        """`_until_due`, applying pause and resume on the way (one wait wakes on all three:
        audio, controls and the frame's due time)."""
        while True:
            request.changed.clear()
            now = self._loop.time()
            if request.interrupted:
                return False
            if request.controls:
                kind = request.controls.popleft()
                request.apply(kind, now)
                state = _PLAYBACK.PAUSED if kind is Control.PAUSE else _PLAYBACK.PLAYING
                request.announced = True
                await self._send_state(request.req_id, state, request.played_ms)
                continue
            limit = self._emu.pause_timeout
            wait: float | None
            if request.paused_since is not None:
                # Frames are pending: the idle timeout does not run, the pause timeout does.
                self._set_producing(True)
                wait = None if limit is None else request.paused_since + limit - now
                if wait is not None and wait <= 0:
                    await self._send_state(
                        request.req_id,
                        _PLAYBACK.INTERRUPTED,
                        request.played_ms,
                        PAUSE_TIMEOUT_REASON,
                    )
                    return False
            elif not self._sendable(request, index):
                self._set_producing(False)
                wait = None
            else:
                self._set_producing(True)
                wait = request.due(index, self._emu.speed) - now
                if wait <= 0:
                    return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await request.changed.wait()
