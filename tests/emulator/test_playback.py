"""October 2026 additions on the ingress: capabilities, pause / resume with playback states, the
avatar id in every frame, extra_params and trace_context. Raw clients over real sockets."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection

from app.emulator import FRAME_MS, Emulator, animation_message
from app.proto import message_pb2
from tests.emulator.helpers import (
    audio,
    configure,
    frames_until_end,
    mint,
    open_ws,
    parse,
    pause,
    resume,
    session,
)

FRAME_16K = 1280
STATE = message_pb2.ServerPlaybackState


async def confirm(emu: Emulator) -> message_pb2.Message:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure())
    message = parse(await ws.recv())
    await ws.close()
    return message


def state_of(raw: bytes) -> tuple[int, int, str] | None:
    """(state, played_ms, reason) of a SERVER_PLAYBACK_STATE, None for anything else."""
    message = parse(raw)
    if message.type != message_pb2.MESSAGE_SERVER_PLAYBACK_STATE:
        return None
    playback = message.server_playback_state
    return playback.state, playback.played_ms, playback.reason


async def recv(ws: ClientConnection) -> bytes:
    raw = await ws.recv()
    assert isinstance(raw, bytes)
    return raw


async def until_state(ws: ClientConnection, frames: list[bytes]) -> tuple[int, int, str]:
    """Collect animation frames into `frames` until the next playback state; return that state."""
    while True:
        raw = await recv(ws)
        state = state_of(raw)
        if state is not None:
            return state
        assert parse(raw).type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
        frames.append(raw)


async def test_capabilities_are_declared_only_with_playback_control() -> None:
    async with Emulator() as plain:
        assert list((await confirm(plain)).server_confirm_session.capabilities) == []
    async with Emulator(playback_control=True, capabilities=("future_thing",)) as emu:
        declared = (await confirm(emu)).server_confirm_session.capabilities
        assert list(declared) == ["playback_control", "playback_state", "future_thing"]


async def test_pause_and_resume_are_ignored_without_the_capability(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 10, end=True))
    await ws.send(pause("r"))
    await ws.send(resume("r"))
    await ws.send(pause("unknown"))
    frames = await frames_until_end(ws)
    assert frames == [
        animation_message(connection_id, "r", i, i == 9, emu.frame_bytes) for i in range(10)
    ]
    await emu.wait_until(lambda: emu.stats.pauses_received == 2)
    assert emu.stats.resumes_received == 1
    assert emu.stats.playback_states_sent == 0
    # The connection is still open and usable.
    await ws.send(audio("next", b"", end=True))
    assert len(await frames_until_end(ws)) == 1
    await ws.close()


async def test_pause_stops_frames_until_resume() -> None:
    total = 40
    speed = 5.0  # 8 ms a frame: the pause lands mid-request even on a busy machine
    async with Emulator(speed=speed, playback_control=True, frame_bytes=64, record=True) as emu:
        loop = asyncio.get_running_loop()
        ws, connection_id = await session(emu)
        await ws.send(audio("r", b"\x00" * FRAME_16K * total, end=True))
        frames: list[bytes] = []
        # Playback start is announced before the first frame.
        assert await until_state(ws, frames) == (STATE.PLAYING, 0, "")
        while len(frames) < 3:
            frames.append(await recv(ws))
        await ws.send(pause("r"))
        state, played_ms, _ = await until_state(ws, frames)
        # The state follows the last frame sent before the pause and counts exactly those.
        assert state == STATE.PAUSED
        assert played_ms == len(frames) * FRAME_MS
        before = emu.stats.frames_sent
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        # Audio keeps being taken while paused; frames do not move.
        await ws.send(audio("more", b"\x00" * 10))
        assert emu.stats.frames_sent == before
        await ws.send(resume("r"))
        resumed_at = loop.time()
        assert await until_state(ws, frames) == (STATE.PLAYING, played_ms, "")
        paused_count = len(frames)
        assert await until_state(ws, frames) == (STATE.ENDED, total * FRAME_MS, "")
        # Pacing resumes where it stopped: no burst to catch up with the paused time. (Half the
        # schedule as the bound: frames already late before the pause stay as late after it.)
        remaining = total - paused_count
        assert loop.time() - resumed_at >= 0.5 * (remaining - 1) * 0.040 / speed
        # The frames themselves are the same as without a pause.
        assert frames == [
            animation_message(connection_id, "r", i, i == total - 1, emu.frame_bytes)
            for i in range(total)
        ]
        # A pause for a finished request answers its end state; an unknown one is ignored.
        await ws.send(pause("nobody"))
        await ws.send(pause("r"))
        assert state_of(await recv(ws)) == (STATE.ENDED, total * FRAME_MS, "")
        await ws.close()


async def test_pause_timeout_interrupts_the_request() -> None:
    async with Emulator(speed=5, playback_control=True, pause_timeout=0.2) as emu:
        ws, _ = await session(emu)
        await ws.send(audio("r", b"\x00" * FRAME_16K * 40, end=True))
        frames: list[bytes] = []
        assert (await until_state(ws, frames))[0] == STATE.PLAYING
        await ws.send(pause("r"))
        state, played_ms, _ = await until_state(ws, frames)
        assert state == STATE.PAUSED
        assert await until_state(ws, frames) == (STATE.INTERRUPTED, played_ms, "pause_timeout")
        # The request is given up (no end frame); the next one plays.
        await ws.send(audio("next", b"\x00" * FRAME_16K * 2, end=True))
        later: list[bytes] = []
        assert (await until_state(ws, later))[0] == STATE.PLAYING
        assert (await until_state(ws, later))[0] == STATE.ENDED
        assert [parse(f).server_response_animation.req_id for f in later] == ["next", "next"]
        assert emu.stats.requests_completed == 1
        await ws.close()


async def test_frames_carry_their_avatar_id() -> None:
    async with Emulator(avatars=("first", "second"), speed=100, record=True) as emu:
        ws, connection_id = await session(emu, avatar="second")
        await ws.send(audio("r", b"\x00" * FRAME_16K * 2, end=True))
        frames = await frames_until_end(ws)
        assert [parse(f).server_response_animation.avatar_id for f in frames] == ["second"] * 2
        assert frames == [
            animation_message(connection_id, "r", i, i == 1, emu.frame_bytes, avatar_id="second")
            for i in range(2)
        ]
        await ws.close()


async def test_extra_params_and_trace_context_are_accepted(emu: Emulator) -> None:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure(extra_params={"voice": "calm", "tier": "x"}))
    connection_id = parse(await ws.recv()).server_confirm_session.connection_id
    assert emu.extra_params[connection_id] == {"voice": "calm", "tier": "x"}
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_AUDIO_INPUT)
    message.client_audio_input.req_id = "traced"
    message.client_audio_input.audio = b"\x00" * FRAME_16K
    message.client_audio_input.end = True
    trace = message.client_audio_input.trace_context
    trace.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    trace.tracestate = "vendor=1"
    await ws.send(message.SerializeToString())
    assert len(await frames_until_end(ws)) == 1
    assert emu.trace_contexts["traced"] == (trace.traceparent, "vendor=1")
    await ws.close()
