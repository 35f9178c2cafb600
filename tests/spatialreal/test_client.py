"""IngressClient against the emulator's ingress over loopback."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from app.emulator import Emulator, Faults, animation_message
from app.errors import AppError, ErrorCode, Phase
from app.proto import message_pb2
from app.settings import Endpoint
from app.spatialreal import (
    ConsoleClient,
    IngressClient,
    IngressConnection,
    UpstreamMessage,
    is_request_id,
    new_request_id,
)
from app.spatialreal.regions import BreakerState
from tests.spatialreal.conftest import AVATAR, OTHER_AVATAR, FakeClock, endpoint
from tests.support.servers import free_port

BYTES_PER_FRAME_16K = 1280  # 40 ms of 16 kHz s16le mono
WAIT = 10.0  # upper bound on any wait for the emulator; never a synchronisation sleep


def pcm(frames: float) -> bytes:
    """Silence lasting `frames` × 40 ms at 16 kHz."""
    return bytes(int(frames * BYTES_PER_FRAME_16K) & ~1)


async def collect(conn: IngressConnection, req_id: str) -> list[UpstreamMessage]:
    """Messages until the end (or error) of `req_id`."""
    out: list[UpstreamMessage] = []
    async with asyncio.timeout(WAIT):
        async for message in conn:
            out.append(message)
            if message.req_id == req_id and (message.end or message.error):
                break
    return out


async def request(
    conn: IngressConnection, audio: bytes, chunks: int = 1
) -> tuple[str, list[UpstreamMessage]]:
    req_id = new_request_id(datetime.now(UTC))
    size = math.ceil(len(audio) / chunks)
    for start in range(0, len(audio), size):
        await conn.send_audio(req_id, audio[start : start + size], end=False)
    await conn.send_audio(req_id, b"", end=True)
    return req_id, await collect(conn, req_id)


# --- handshake ---


@pytest.mark.parametrize("query_auth", [False, True])
async def test_handshake_confirms_a_session(
    ingress: IngressClient, emu: Emulator, query_auth: bool
) -> None:
    async with await ingress.connect(AVATAR, 16000, query_auth=query_auth) as conn:
        assert conn.connection_id.startswith("conn_")
        assert conn.region == "ap-northeast"
        assert conn.avatar_id == AVATAR
        assert conn.connection_id in repr(conn)
        assert not conn.closed
        assert emu.stats.handshakes_completed == 1
    assert conn.closed
    async with asyncio.timeout(WAIT):
        await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_every_connection_mints_its_own_token(ingress: IngressClient, emu: Emulator) -> None:
    async with await ingress.connect(AVATAR, 16000), await ingress.connect(AVATAR, 24000):
        assert emu.stats.tokens_minted == 2
        assert emu.stats.handshakes_completed == 2


# --- frames ---


async def test_frames_are_the_servers_original_bytes(ingress: IngressClient, emu: Emulator) -> None:
    async with await ingress.connect(AVATAR, 16000) as conn:
        req_id, messages = await request(conn, pcm(10))
    assert is_request_id(req_id)
    assert len(messages) == 10
    assert all(m.is_animation and m.req_id == req_id and m.error is None for m in messages)
    assert [m.end for m in messages] == [False] * 9 + [True]
    expected = [
        animation_message(conn.connection_id, req_id, index, index == 9, emu.frame_bytes)
        for index in range(10)
    ]
    assert [m.raw for m in messages] == expected
    # emu.sent[0] is the confirmation; everything after it is what we were handed, byte for byte.
    assert emu.sent[conn.connection_id][1:] == expected
    # Re-serializing would have changed them (undeclared fields, non-canonical order).
    parsed = message_pb2.Message()
    parsed.ParseFromString(messages[0].raw)
    assert parsed.SerializeToString() != messages[0].raw


async def test_many_requests_on_one_connection(ingress: IngressClient, emu: Emulator) -> None:
    async with await ingress.connect(AVATAR, 16000) as conn:
        counts = []
        for frames, chunks in ((3, 1), (7.5, 3), (1, 1), (12, 4)):
            req_id, messages = await request(conn, pcm(frames), chunks)
            assert {m.req_id for m in messages} == {req_id}
            assert messages[-1].end
            counts.append(len(messages))
    assert counts == [3, 8, 1, 12]
    assert emu.stats.requests_completed == 4
    assert emu.stats.handshakes_completed == 1


async def test_interrupt_reaches_the_server(ingress: IngressClient, emu: Emulator) -> None:
    async with await ingress.connect(AVATAR, 16000) as conn:
        req_id = new_request_id(datetime.now(UTC))
        await conn.send_audio(req_id, pcm(2))
        await conn.interrupt(req_id)
        async with asyncio.timeout(WAIT):
            await emu.wait_until(lambda: emu.stats.interrupts_received == 1)


# --- failures: minting, upgrade, handshake ---


async def test_mint_failure_has_session_token_phase(ingress: IngressClient, emu: Emulator) -> None:
    emu.faults.console_status = 402
    with pytest.raises(AppError) as caught:
        await ingress.connect(AVATAR, 16000)
    assert caught.value.code is ErrorCode.BILLING_REQUIRED
    assert caught.value.phase is Phase.SESSION_TOKEN


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.SESSION_TOKEN_INVALID),
        (401, ErrorCode.SESSION_TOKEN_EXPIRED),
        (402, ErrorCode.BILLING_REQUIRED),
        (404, ErrorCode.AVATAR_NOT_FOUND),
        (403, ErrorCode.INVALID_REQUEST),
        (503, ErrorCode.SERVER_ERROR),
    ],
)
async def test_rejected_upgrades_are_classified(
    ingress: IngressClient, emu: Emulator, status: int, code: ErrorCode
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=status))
    with pytest.raises(AppError) as caught:
        await ingress.connect(AVATAR, 16000)
    error = caught.value
    assert error.code is code
    assert error.phase is Phase.WEBSOCKET_CONNECT
    assert error.upstream_http_status == status


async def test_unknown_avatar(ingress: IngressClient) -> None:
    with pytest.raises(AppError) as caught:
        await ingress.connect("no-such-avatar", 16000)
    assert caught.value.code is ErrorCode.AVATAR_NOT_FOUND
    assert caught.value.upstream_http_status == 404


async def test_unknown_app_id(console: ConsoleClient) -> None:
    stranger = IngressClient(console, "someone-elses-app")
    with pytest.raises(AppError) as caught:
        await stranger.connect(AVATAR, 16000, query_auth=True)
    assert caught.value.code is ErrorCode.APP_ID_UNRECOGNIZED
    assert caught.value.phase is Phase.WEBSOCKET_CONNECT


async def test_token_of_another_app_is_app_id_mismatch(clock: FakeClock) -> None:
    apps = {"other-key": "other-app"}
    async with (
        Emulator(port=0, speed=50, avatars=(AVATAR,), apps=apps) as emulator,
        ConsoleClient([endpoint("r", emulator)], SecretStr("other-key"), clock=clock) as console,
    ):
        with pytest.raises(AppError) as caught:
            await IngressClient(console, emulator.app_id).connect(AVATAR, 16000)
    assert caught.value.code is ErrorCode.APP_ID_MISMATCH
    assert caught.value.upstream_http_status == 400


async def test_query_auth_token_is_scrubbed_from_errors(
    ingress: IngressClient, emu: Emulator
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=401))
    with pytest.raises(AppError) as caught:
        await ingress.connect(AVATAR, 16000, query_auth=True)
    assert "sessionKey" not in str(caught.value)


async def test_unsupported_sample_rate_fails_the_handshake(
    ingress: IngressClient, emu: Emulator
) -> None:
    with pytest.raises(AppError) as caught:
        await ingress.connect(AVATAR, 11025)
    error = caught.value
    assert error.code is ErrorCode.UNSUPPORTED_SAMPLE_RATE
    assert error.phase is Phase.WEBSOCKET_HANDSHAKE
    assert error.connection_id
    assert emu.stats.handshakes_failed == 1


@pytest.mark.parametrize(
    ("server_error", "code"),
    [
        ((0, "unsupported sample rate"), ErrorCode.UNSUPPORTED_SAMPLE_RATE),
        ((4001, "no credits"), ErrorCode.CREDITS_EXHAUSTED),
        ((0, "session denied"), ErrorCode.BILLING_REQUIRED),
        ((9, "expected ClientConfigureSession message"), ErrorCode.PROTOCOL_ERROR),
        ((13, "something else"), ErrorCode.SERVER_ERROR),
    ],
)
async def test_handshake_server_errors_are_classified(
    ingress: IngressClient, emu: Emulator, server_error: tuple[int, str], code: ErrorCode
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(handshake_error=server_error))
    with pytest.raises(AppError) as caught:
        await ingress.connect(AVATAR, 16000)
    assert caught.value.code is code
    assert caught.value.phase is Phase.WEBSOCKET_HANDSHAKE
    assert caught.value.server_code == (str(server_error[0]) if server_error[0] else None)


# --- failures at runtime ---


async def test_server_error_mid_request_is_a_message_and_the_connection_lives_on(
    ingress: IngressClient, emu: Emulator
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(error_after_frames=(3, 0, "driven server request failed")))
    async with await ingress.connect(AVATAR, 16000) as conn:
        req_id, messages = await request(conn, pcm(6))
        assert [m.is_animation for m in messages] == [True, True, True, False]
        failed = messages[-1]
        assert failed.type == message_pb2.MESSAGE_SERVER_ERROR
        assert failed.raw == emu.sent[conn.connection_id][-1]
        assert failed.error is not None
        assert failed.error.code is ErrorCode.UPSTREAM_ERROR
        assert failed.error.phase is Phase.WEBSOCKET_RUNTIME
        assert failed.error.req_id == req_id
        assert failed.error.connection_id == conn.connection_id
        # The fault fires once per connection: the next request completes.
        _, after = await request(conn, pcm(2))
        assert [m.end for m in after] == [False, True]


async def test_dropped_connection_raises_connection_closed(
    ingress: IngressClient, emu: Emulator
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(drop_after_frames=3))
    async with await ingress.connect(AVATAR, 16000) as conn:
        req_id = new_request_id(datetime.now(UTC))
        await conn.send_audio(req_id, pcm(8), end=True)
        received: list[UpstreamMessage] = []

        async def drain() -> None:
            async with asyncio.timeout(WAIT):
                async for message in conn:
                    received.append(message)

        with pytest.raises(AppError) as caught:
            await drain()
        assert len(received) == 3
        assert caught.value.code is ErrorCode.CONNECTION_CLOSED
        assert caught.value.phase is Phase.WEBSOCKET_RUNTIME
        assert caught.value.connection_id == conn.connection_id
        # And sending on the lost connection fails in the send phase.
        with pytest.raises(AppError) as sending:
            await conn.send_audio(req_id, pcm(1))
        assert sending.value.code is ErrorCode.CONNECTION_CLOSED
        assert sending.value.phase is Phase.WEBSOCKET_SEND
        assert sending.value.req_id == req_id


async def test_send_after_close(ingress: IngressClient) -> None:
    conn = await ingress.connect(AVATAR, 16000)
    await conn.close()
    await conn.close()  # idempotent
    req_id = new_request_id(datetime.now(UTC))
    for send in (conn.send_audio(req_id, pcm(1)), conn.interrupt(req_id)):
        with pytest.raises(AppError) as caught:
            await send
        assert caught.value.code is ErrorCode.CONNECTION_CLOSED
        assert caught.value.phase is Phase.WEBSOCKET_SEND


async def test_close_ends_iteration_in_another_task(ingress: IngressClient) -> None:
    conn = await ingress.connect(AVATAR, 16000)

    async def drain() -> list[UpstreamMessage]:
        return [message async for message in conn]

    reader = asyncio.create_task(drain())
    await asyncio.sleep(0)  # let the reader block in recv
    await conn.close()
    async with asyncio.timeout(WAIT):
        assert await reader == []


async def test_server_closing_normally_ends_iteration(
    ingress: IngressClient, emu: Emulator
) -> None:
    emu.idle_timeout = 0.2
    async with await ingress.connect(AVATAR, 16000) as conn:
        async with asyncio.timeout(WAIT):
            messages = [message async for message in conn]
    assert len(messages) == 1
    assert messages[0].error is not None
    assert messages[0].error.code is ErrorCode.IDLE_TIMEOUT


# --- regional fallback for connections ---


async def test_unreachable_ingress_falls_back_with_a_new_token(
    emu: Emulator, emu2: Emulator, clock: FakeClock
) -> None:
    dead_ingress = f"http://127.0.0.1:{free_port()}/v2/driveningress"
    regions = [
        Endpoint("ap-northeast", emu.console_url, dead_ingress),
        endpoint("us-west", emu2),
    ]
    async with ConsoleClient(regions, SecretStr(emu.api_keys[0]), clock=clock) as console:
        async with await IngressClient(console, emu.app_id).connect(AVATAR, 16000) as conn:
            assert conn.region == "us-west"
        assert emu.stats.tokens_minted == 1  # the token for the dead region, wasted
        assert emu2.stats.tokens_minted == 1
        assert emu2.stats.handshakes_completed == 1


async def test_5xx_upgrade_falls_back_and_opens_only_that_avatars_breaker(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator, clock: FakeClock
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=503))
    ingress = IngressClient(two_regions, emu.app_id)
    for _ in range(2):
        async with await ingress.connect(AVATAR, 16000) as conn:
            assert conn.region == "us-west"
    breakers = ingress.breakers
    assert breakers.avatars.state("ap-northeast/" + AVATAR, clock()) is BreakerState.OPEN
    # Open for this avatar only: it goes straight to the healthy region, minting there.
    async with await ingress.connect(AVATAR, 16000) as conn:
        assert conn.region == "us-west"
    assert emu.stats.tokens_minted == 2
    # The region itself is fine: its host breaker, its console breaker and other avatars.
    assert breakers.hosts.state("ap-northeast", clock()) is BreakerState.CLOSED
    assert two_regions.breakers.state("ap-northeast", clock()) is BreakerState.CLOSED
    async with await ingress.connect(OTHER_AVATAR, 16000) as conn:
        assert conn.region == "ap-northeast"
    assert (await two_regions.mint(int(datetime.now(UTC).timestamp()) + 60)).region == (
        "ap-northeast"
    )


async def test_4xx_upgrade_does_not_fall_back(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=402))
    with pytest.raises(AppError) as caught:
        await IngressClient(two_regions, emu.app_id).connect(AVATAR, 16000)
    assert caught.value.code is ErrorCode.BILLING_REQUIRED
    assert emu2.stats.console_requests == 0


async def test_handshake_error_does_not_fall_back(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator
) -> None:
    with pytest.raises(AppError) as caught:
        await IngressClient(two_regions, emu.app_id).connect(OTHER_AVATAR, 11025)
    assert caught.value.code is ErrorCode.UNSUPPORTED_SAMPLE_RATE
    assert emu2.stats.console_requests == 0


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: an ingress that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v2/driveningress"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_hanging_ingress_times_out_then_falls_back(
    silent_server: str, emu: Emulator, emu2: Emulator, clock: FakeClock
) -> None:
    regions = [
        Endpoint("ap-northeast", emu.console_url, silent_server),
        endpoint("us-west", emu2),
    ]
    async with ConsoleClient(regions, SecretStr(emu.api_keys[0]), clock=clock) as console:
        ingress = IngressClient(console, emu.app_id, connect_timeout=0.3)
        async with await ingress.connect(AVATAR, 16000) as conn:
            assert conn.region == "us-west"
        only_primary = ConsoleClient(regions[:1], SecretStr(emu.api_keys[0]), clock=clock)
        async with only_primary:
            with pytest.raises(AppError) as caught:
                await IngressClient(only_primary, emu.app_id, connect_timeout=0.3).connect(
                    AVATAR, 16000
                )
    assert caught.value.code is ErrorCode.CONNECTION_FAILED
    assert caught.value.phase is Phase.WEBSOCKET_CONNECT
    assert "timed out" in caught.value.message


def test_constructor_validates(console: ConsoleClient) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        IngressClient(console, "app", connect_timeout=0)
    with pytest.raises(ValueError, match="token_ttl"):
        IngressClient(console, "app", token_ttl=86_400)
