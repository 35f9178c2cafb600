"""Every injected fault, observed with raw clients over real sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from app.emulator import Emulator, Faults, animation_message
from app.proto import message_pb2
from tests.emulator.helpers import (
    audio,
    configure,
    frames_until_end,
    ingress_url,
    mint,
    open_ws,
    parse,
    session,
)

FRAME_16K = 1280


async def collect(ws: ClientConnection, into: list[bytes]) -> None:
    """Append every message until the connection closes (raises unless it closed cleanly)."""
    async for message in ws:
        assert isinstance(message, bytes)
        into.append(message)


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (400, "invalid session token"),
        (401, "token is expired"),
        (402, "session denied"),
        (404, "avatar not found"),
        (500, "internal error"),
        (503, "service temporarily unavailable"),
    ],
)
async def test_upgrade_status(emu: Emulator, status: int, detail: str) -> None:
    emu.faults.upgrade_status = status
    token = await mint(emu)
    with pytest.raises(InvalidStatus) as info:
        await connect(
            ingress_url(emu), additional_headers={"X-App-ID": emu.app_id, "X-Session-Key": token}
        )
    assert info.value.response.status_code == status
    (error,) = json.loads(info.value.response.body)["errors"]
    assert error["detail"] == detail
    emu.faults.upgrade_status = None
    # The token was not consumed by the injected rejection.
    ws, _ = await session(emu)
    await ws.close()


async def test_avatar_faults_apply_to_that_avatar_only() -> None:
    async with Emulator(avatars=("calm", "broken"), speed=100) as emu:
        emu.set_avatar_faults("broken", Faults(upgrade_status=402))
        ws, _ = await session(emu, avatar="calm")
        await ws.close()
        with pytest.raises(InvalidStatus) as info:
            await session(emu, avatar="broken")
        assert info.value.response.status_code == 402
        emu.set_avatar_faults("broken", None)
        ws, _ = await session(emu, avatar="broken")
        await ws.close()


async def test_avatar_faults_override_field_by_field() -> None:
    async with Emulator(avatars=("a", "b"), speed=100) as emu:
        emu.faults.handshake_error = (4001, "credits exhausted")
        emu.set_avatar_faults("b", Faults(drop_after_frames=1))
        merged = emu.faults_for("b")
        assert merged.handshake_error == (4001, "credits exhausted")
        assert merged.drop_after_frames == 1
        assert emu.faults_for("a").drop_after_frames is None


@pytest.mark.parametrize(
    ("code", "text"),
    [(4001, "credits exhausted"), (4002, "session time limit reached"), (3, "bad config")],
)
async def test_handshake_error(emu: Emulator, code: int, text: str) -> None:
    emu.faults.handshake_error = (code, text)
    ws = await connect(
        ingress_url(emu),
        additional_headers={"X-App-ID": emu.app_id, "X-Session-Key": await mint(emu)},
    )
    await ws.send(configure())
    message = parse(await ws.recv())
    assert message.type == message_pb2.MESSAGE_SERVER_ERROR
    assert (message.server_error.code, message.server_error.message) == (code, text)
    with pytest.raises(ConnectionClosedOK):
        await ws.recv()


@pytest.mark.parametrize("after", [0, 1, 7])
async def test_drop_after_frames(emu: Emulator, after: int) -> None:
    emu.faults.drop_after_frames = after
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 20, end=True))
    received: list[bytes] = []
    with pytest.raises(ConnectionClosedError) as info:
        await collect(ws, received)
    # An abrupt TCP drop: no close frame at all.
    assert info.value.rcvd is None
    assert received == [
        animation_message(connection_id, "r", i, False, emu.frame_bytes) for i in range(after)
    ]
    await emu.wait_until(lambda: emu.stats.connections_dropped == 1)
    await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_drop_counts_frames_across_requests(emu: Emulator) -> None:
    emu.faults.drop_after_frames = 3
    ws, _ = await session(emu)
    await ws.send(audio("one", b"\x00" * FRAME_16K * 2, end=True))
    assert len(await frames_until_end(ws)) == 2
    await ws.send(audio("two", b"\x00" * FRAME_16K * 2, end=True))
    assert parse(await ws.recv()).server_response_animation.req_id == "two"
    with pytest.raises(ConnectionClosedError):
        await ws.recv()


async def test_error_after_frames_ends_that_request_only(emu: Emulator) -> None:
    emu.faults.error_after_frames = (5, 0, "driven server request failed")
    ws, connection_id = await session(emu)
    await ws.send(audio("broken", b"\x00" * FRAME_16K * 40, end=True))
    messages = await frames_until_end(ws)
    assert messages[:5] == [
        animation_message(connection_id, "broken", i, False, emu.frame_bytes) for i in range(5)
    ]
    error = parse(messages[5])
    assert len(messages) == 6
    assert error.type == message_pb2.MESSAGE_SERVER_ERROR
    assert (error.server_error.req_id, error.server_error.code) == ("broken", 0)
    assert error.server_error.message == "driven server request failed"
    assert error.server_error.connection_id == connection_id
    # Once per connection: the next request completes.
    await ws.send(audio("fine", b"\x00" * FRAME_16K * 3, end=True))
    frames = await frames_until_end(ws)
    assert frames == [
        animation_message(connection_id, "fine", i, i == 2, emu.frame_bytes) for i in range(3)
    ]
    await ws.close()


async def test_frame_delay_slows_every_frame(emu: Emulator) -> None:
    emu.faults.frame_delay = 0.1
    ws, _ = await session(emu)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ws.send(audio("r", b"\x00" * FRAME_16K * 3, end=True))
    assert len(await frames_until_end(ws)) == 3
    # A lower bound only: three delayed frames cannot arrive sooner than 3 x 0.1 s.
    assert loop.time() - started >= 0.3
    await ws.close()


async def test_drop_connections(emu: Emulator) -> None:
    first, _ = await session(emu)
    second, _ = await session(emu)
    assert emu.drop_connections() == 2
    for ws in (first, second):
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.rcvd is None
    await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_faults_can_be_replaced_while_running(emu: Emulator) -> None:
    ws, _ = await session(emu)
    emu.faults = Faults(error_after_frames=(0, 13, "driven server returned non-200 status code"))
    await ws.send(audio("r", b"\x00" * FRAME_16K, end=True))
    (message,) = await frames_until_end(ws)
    assert parse(message).server_error.code == 13
    await ws.close()


CONTRACT_CODES = [
    (4001, "credits exhausted"),
    (4002, "maximum session duration reached"),
    (4003, "concurrency limit reached"),
    (4010, "invalid session token"),
    (4503, "upstream unavailable"),
]


@pytest.mark.parametrize(("code", "reason"), CONTRACT_CODES)
async def test_close_at_handshake(emu: Emulator, code: int, reason: str) -> None:
    emu.faults.close_at_handshake = code
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure())
    # No confirm and no SERVER_ERROR: the close frame is the whole answer.
    with pytest.raises(ConnectionClosedError) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, reason)
    assert emu.stats.closes_sent == 1
    assert emu.stats.handshakes_failed == 1
    assert emu.stats.handshakes_completed == 0


@pytest.mark.parametrize(("code", "reason"), CONTRACT_CODES)
@pytest.mark.parametrize("after", [0, 4])
async def test_close_after_frames(emu: Emulator, code: int, reason: str, after: int) -> None:
    emu.faults.close_after_frames = (after, code)
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 20, end=True))
    received: list[bytes] = []
    with pytest.raises(ConnectionClosedError) as info:
        await collect(ws, received)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, reason)
    assert received == [
        animation_message(connection_id, "r", i, False, emu.frame_bytes) for i in range(after)
    ]
    await emu.wait_until(lambda: emu.stats.connections_active == 0)
    assert emu.stats.closes_sent == 1
    assert emu.stats.connections_dropped == 0


async def test_close_after_frames_counts_across_requests(emu: Emulator) -> None:
    emu.faults.close_after_frames = (3, 4002)
    ws, _ = await session(emu)
    await ws.send(audio("one", b"\x00" * FRAME_16K * 2, end=True))
    assert len(await frames_until_end(ws)) == 2
    await ws.send(audio("two", b"\x00" * FRAME_16K * 2, end=True))
    assert parse(await ws.recv()).server_response_animation.req_id == "two"
    with pytest.raises(ConnectionClosedError) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4002


@pytest.mark.parametrize(("code", "reason"), CONTRACT_CODES)
async def test_contract_codes_as_server_errors(emu: Emulator, code: int, reason: str) -> None:
    # The same codes inside SERVER_ERROR, at the handshake and after frames.
    emu.faults.handshake_error = (code, reason)
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure())
    error = parse(await ws.recv()).server_error
    assert (error.code, error.message) == (code, reason)
    emu.faults.handshake_error = None
    emu.faults.error_after_frames = (2, code, reason)
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 5, end=True))
    messages = await frames_until_end(ws)
    assert len(messages) == 3
    error = parse(messages[2]).server_error
    assert (error.code, error.message, error.req_id) == (code, reason, "r")
    assert error.connection_id == connection_id
    await ws.close()


async def test_handshake_hang_never_confirms() -> None:
    async with Emulator(speed=100, idle_timeout=0.2) as emu:
        emu.faults.handshake_hang = True
        ws = await open_ws(emu, await mint(emu))
        await ws.send(configure())
        await ws.send(audio("r", b"\x00" * FRAME_16K, end=True))
        # Not even the idle timeout answers: nothing comes back at all.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.6)
        assert emu.stats.handshakes_unanswered == 1
        assert emu.stats.connections_active == 1
        await ws.close()
        await emu.wait_until(lambda: emu.stats.connections_active == 0)
        assert emu.stats.handshakes_completed == 0
        assert emu.stats.frames_sent == 0


async def test_handshake_hang_ends_when_the_emulator_stops() -> None:
    emu = Emulator(faults=Faults(handshake_hang=True))
    await emu.start()
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure())
    await emu.wait_until(lambda: emu.stats.handshakes_unanswered == 1)
    await emu.stop()
    with pytest.raises(ConnectionClosedError) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1012
