"""The emulated ingress v2 with a raw `websockets` client and message_pb2, over real sockets."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from app.emulator import (
    ANIMATION_UNDECLARED_FIELD,
    SEND_TIME_FIELD,
    Emulator,
    animation_message,
    frame_marker,
    frame_payload,
    send_time_ns,
)
from app.proto import message_pb2
from tests.emulator.helpers import (
    audio,
    configure,
    frames_until_end,
    handshake,
    ingress_url,
    interrupt,
    mint,
    open_ws,
    parse,
    session,
)
from tests.support.servers import FIXTURES

SHORT = (FIXTURES / "short_16000.pcm").read_bytes()
FRAME_16K = 1280  # bytes of 16 kHz s16le mono audio per 40 ms frame


async def rejection(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Status and the single JSON error of a refused upgrade."""
    with pytest.raises(InvalidStatus) as info:
        await connect(url, additional_headers=headers)
    response = info.value.response
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.body)
    (error,) = body["errors"]
    assert error["status"] == response.status_code
    return response.status_code, error


async def expect_server_error(ws: ClientConnection) -> message_pb2.ServerError:
    """The next message is a SERVER_ERROR and the server then closes normally."""
    message = parse(await ws.recv())
    assert message.type == message_pb2.MESSAGE_SERVER_ERROR
    with pytest.raises(ConnectionClosedOK):
        await ws.recv()
    assert ws.close_code == 1000
    return message.server_error


def headers(emu: Emulator, token: str) -> dict[str, str]:
    return {"X-App-ID": emu.app_id, "X-Session-Key": token}


# --- authentication and upgrade rejections ---


@pytest.mark.parametrize("query_auth", [False, True])
async def test_handshake_with_header_or_query_auth(emu: Emulator, query_auth: bool) -> None:
    ws = await open_ws(emu, await mint(emu), query_auth=query_auth)
    connection_id = await handshake(ws)
    assert connection_id.startswith("conn_")
    assert emu.stats.connections_active == 1
    await ws.close()
    await emu.wait_until(lambda: emu.stats.connections_active == 0)
    assert emu.sent[connection_id][0] == parse(emu.sent[connection_id][0]).SerializeToString()


async def test_connection_ids_are_unique(emu: Emulator) -> None:
    ids = set()
    for _ in range(5):
        ws, connection_id = await session(emu)
        ids.add(connection_id)
        await ws.close()
    assert len(ids) == 5


async def test_token_is_single_use(emu: Emulator) -> None:
    token = await mint(emu)
    ws = await open_ws(emu, token)
    await handshake(ws)
    status, error = await rejection(ingress_url(emu), headers(emu, token))
    assert (status, error["detail"]) == (400, "invalid session token")
    await ws.close()
    # Still used after the first connection closed.
    status, _ = await rejection(ingress_url(emu), headers(emu, token))
    assert status == 400


async def test_multi_use_tokens_open_many_sessions_until_they_expire() -> None:
    now = [1_700_000_000.0]
    async with Emulator(clock=lambda: now[0], multi_use_tokens=True) as emu:
        token = emu.mint_token(expire_at=int(now[0]) + 60)
        first = await open_ws(emu, token)
        await handshake(first)
        second = await open_ws(emu, token, query_auth=True)
        await handshake(second)
        await first.close()
        await second.close()
        third = await open_ws(emu, token)
        await handshake(third)
        await third.close()
        now[0] += 61
        status, error = await rejection(ingress_url(emu), headers(emu, token))
        assert (status, error["detail"]) == (401, "token is expired")
        assert emu.stats.handshakes_completed == 3


async def test_rejected_upgrade_does_not_consume_the_token(emu: Emulator) -> None:
    token = await mint(emu)
    status, _ = await rejection(ingress_url(emu, "no-such-avatar"), headers(emu, token))
    assert status == 404
    ws = await open_ws(emu, token)
    await handshake(ws)
    await ws.close()


async def test_expired_token_is_401() -> None:
    now = [1_700_000_000.0]
    async with Emulator(clock=lambda: now[0]) as emu:
        token = emu.mint_token(expire_at=int(now[0]) + 60)
        live = emu.mint_token(expire_at=int(now[0]) + 60)
        ws = await open_ws(emu, live)
        await handshake(ws)
        now[0] += 61
        status, error = await rejection(ingress_url(emu), headers(emu, token))
        assert (status, error["detail"]) == (401, "token is expired")
        # A connection opened before expiry is not affected.
        await ws.send(audio("r", b"", end=True))
        assert len(await frames_until_end(ws)) == 1
        await ws.close()


async def test_rejections_have_status_and_detail() -> None:
    apps = {"other-key": "other-app"}
    async with Emulator(apps=apps) as emu:
        token = await mint(emu)
        other = emu.mint_token(app_id="other-app")
        url = ingress_url(emu)
        cases: list[tuple[str, dict[str, str], int, str]] = [
            (url, {"X-App-ID": emu.app_id}, 400, "empty token"),
            (url, {"X-App-ID": emu.app_id, "X-Session-Key": ""}, 400, "empty token"),
            (url, headers(emu, "not-a-token"), 400, "invalid session token"),
            (url, {"X-App-ID": "unknown-app", "X-Session-Key": token}, 404, "app id unrecognized"),
            (url, {"X-App-ID": "", "X-Session-Key": token}, 404, "app id unrecognized"),
            (url, headers(emu, other), 400, "app id mismatch"),
            (ingress_url(emu, "nobody"), headers(emu, token), 404, "avatar not found"),
            (ingress_url(emu, ""), headers(emu, token), 404, "avatar not found"),
            (
                ingress_url(emu, query_auth={"appId": emu.app_id, "sessionKey": "nope"}),
                {},
                400,
                "invalid session token",
            ),
        ]
        for case_url, case_headers, status, detail in cases:
            got_status, error = await rejection(case_url, case_headers)
            assert (got_status, error["detail"]) == (status, detail), detail
        assert emu.stats.upgrades_rejected == len(cases)
        # The token was never consumed by those failures.
        ws = await open_ws(emu, token)
        await handshake(ws)
        await ws.close()


async def test_unknown_websocket_path_is_404(emu: Emulator) -> None:
    status, _ = await rejection(emu.websocket_url.replace("/websocket", "/other"))
    assert status == 404


# --- handshake failures ---


@pytest.mark.parametrize(
    ("first", "text"),
    [
        (b"\xff\xff\xff", "failed to unmarshal initial message"),
        (audio("r", b"\x00\x00"), "expected clientconfiguresession message"),
        (message_pb2.Message().SerializeToString(), "expected clientconfiguresession message"),
        (configure(12345), "unsupported sample rate: 12345"),
        (configure(12000), "unsupported sample rate: 12000"),
        (configure(0), "unsupported sample rate: 0"),
        (configure(12000, message_pb2.AUDIO_FORMAT_OGG_OPUS), None),
        (configure(22050, message_pb2.AUDIO_FORMAT_OGG_OPUS), "unsupported sample rate: 22050"),
    ],
)
async def test_configure_errors(emu: Emulator, first: bytes, text: str | None) -> None:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(first)
    if text is None:
        assert parse(await ws.recv()).type == message_pb2.MESSAGE_SERVER_CONFIRM_SESSION
        await ws.close()
        return
    error = await expect_server_error(ws)
    assert error.message == text
    assert error.connection_id
    assert error.code not in (3, 14, 16)
    assert emu.stats.handshakes_failed == 1


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
async def test_every_pcm_rate_is_accepted(emu: Emulator, rate: int) -> None:
    ws = await open_ws(emu, await mint(emu))
    connection_id = await handshake(ws, rate)
    per_frame = rate * 2 * 40 // 1000
    await ws.send(audio("r", b"\x01\x00" * (per_frame * 3 // 2), end=True))
    frames = await frames_until_end(ws)
    assert frames == [
        animation_message(connection_id, "r", i, i == 2, emu.frame_bytes) for i in range(3)
    ]
    await ws.close()


async def test_agora_egress_is_refused(emu: Emulator) -> None:
    ws = await open_ws(emu, await mint(emu))
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION)
    message.client_configure_session.sample_rate = 16000
    message.client_configure_session.egress_type = message_pb2.EGRESS_TYPE_AGORA
    message.client_configure_session.agora_egress.channel_name = "channel"
    await ws.send(message.SerializeToString())
    error = await expect_server_error(ws)
    assert (error.code, error.message) == (14, "egress client is not configured on server")


async def test_livekit_egress_to_another_server_is_unavailable(emu: Emulator) -> None:
    ws = await open_ws(emu, await mint(emu))
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION)
    message.client_configure_session.sample_rate = 16000
    message.client_configure_session.egress_type = message_pb2.EGRESS_TYPE_LIVEKIT
    message.client_configure_session.livekit_egress.url = "wss://livekit.invalid"
    await ws.send(message.SerializeToString())
    error = await expect_server_error(ws)
    assert error.code == 14
    assert error.message.startswith("livekit egress unavailable: cannot connect to")


async def test_text_frame_first_is_a_protocol_error(emu: Emulator) -> None:
    ws = await open_ws(emu, await mint(emu))
    await ws.send("hello")
    error = await expect_server_error(ws)
    assert "unexpected message type" in error.message


async def test_text_frame_later_is_a_protocol_error(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    await ws.send("{}")
    error = await expect_server_error(ws)
    assert error.message.startswith("unexpected message type")
    assert error.connection_id == connection_id


@pytest.mark.parametrize(
    "data",
    [
        configure(),
        b"\x08\x05",  # a SERVER_RESPONSE_ANIMATION from the client
        b"\xff\xff\xff",
    ],
)
async def test_unexpected_binary_after_handshake(emu: Emulator, data: bytes) -> None:
    ws, _ = await session(emu)
    await ws.send(data)
    error = await expect_server_error(ws)
    assert error.message.startswith("unexpected message type")


# --- requests and animation frames ---


async def test_fixture_frames_are_byte_exact(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    req = "20250101120000_AbCdEfGhIjKl"
    await ws.send(audio(req, SHORT, end=True))
    frames = await frames_until_end(ws)
    count = math.ceil(len(SHORT) / FRAME_16K)
    assert len(frames) == count
    expected = [
        animation_message(connection_id, req, i, i == count - 1, emu.frame_bytes)
        for i in range(count)
    ]
    assert frames == expected
    assert [parse(f).server_response_animation.end for f in frames] == [False] * (count - 1) + [
        True
    ]
    assert emu.received_audio[req] == SHORT
    await ws.close()


async def test_many_requests_on_one_connection(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    for n, size in enumerate([FRAME_16K * 40, FRAME_16K * 3 + 1, 0, 2]):
        req = f"20250101120000_request{n:05d}"
        # Audio in uneven chunks, then an empty end message.
        for start in range(0, size, 1000):
            await ws.send(audio(req, b"\x00" * min(1000, size - start)))
        await ws.send(audio(req, b"", end=True))
        frames = await frames_until_end(ws)
        count = max(1, math.ceil(size / FRAME_16K))
        assert frames == [
            animation_message(connection_id, req, i, i == count - 1, emu.frame_bytes)
            for i in range(count)
        ]
    assert emu.stats.requests_completed == 4
    await ws.close()


async def test_queued_requests_follow_each_other(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    # Both requests sent before any frame is read: the second one's frames follow the first's end.
    await ws.send(audio("first", b"\x00" * FRAME_16K * 5, end=True))
    await ws.send(audio("second", b"\x00" * FRAME_16K * 2, end=True))
    first = await frames_until_end(ws)
    second = await frames_until_end(ws)
    assert [parse(f).server_response_animation.req_id for f in first] == ["first"] * 5
    assert second == [
        animation_message(connection_id, "second", i, i == 1, emu.frame_bytes) for i in range(2)
    ]
    await ws.close()


async def test_new_req_id_ends_the_open_request(emu: Emulator) -> None:
    ws, _ = await session(emu)
    await ws.send(audio("abandoned", b"\x00" * FRAME_16K * 2))
    await ws.send(audio("next", b"\x00" * FRAME_16K, end=True))
    abandoned = await frames_until_end(ws)
    assert len(abandoned) == 2
    assert parse(abandoned[-1]).server_response_animation.end
    nxt = await frames_until_end(ws)
    assert [parse(f).server_response_animation.req_id for f in nxt] == ["next"]
    await ws.close()


async def test_frames_wait_for_their_audio(emu: Emulator) -> None:
    ws, _ = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 3))
    # Audio for 3 frames, not ended: frames 0 and 1 are surely not the last and go out.
    first_two = [parse(await ws.recv()) for _ in range(2)]
    assert [m.server_response_animation.end for m in first_two] == [False, False]
    await emu.wait_until(lambda: emu.stats.frames_sent == 2)
    await ws.send(audio("r", b"", end=True))
    last = parse(await ws.recv())
    assert last.server_response_animation.end
    assert emu.stats.frames_sent == 3
    await ws.close()


async def test_empty_req_id_is_invalid_argument(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    await ws.send(audio("", b"\x00" * 10, end=True))
    message = parse(await ws.recv())
    assert message.type == message_pb2.MESSAGE_SERVER_ERROR
    assert message.server_error.code == 3
    assert message.server_error.connection_id == connection_id
    # The connection stays usable.
    await ws.send(audio("ok", b"", end=True))
    assert len(await frames_until_end(ws)) == 1
    await ws.close()


async def test_interrupt_is_counted_but_has_no_effect(emu: Emulator) -> None:
    ws, _ = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 4, end=True))
    await ws.send(interrupt("r"))
    assert len(await frames_until_end(ws)) == 4
    await emu.wait_until(lambda: emu.stats.interrupts_received == 1)
    await ws.close()


async def test_animation_bytes_are_not_canonical(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 2, end=True))
    frames = await frames_until_end(ws)
    for index, raw in enumerate(frames):
        message = parse(raw)
        assert message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
        animation = message.server_response_animation
        assert (animation.connection_id, animation.req_id) == (connection_id, "r")
        assert animation.end == (index == 1)
        # The October 2026 schema declares the animation bytes (4) and the avatar id (5) ...
        assert animation.animation == frame_payload("r", index, emu.frame_bytes)
        assert animation.avatar_id == emu.avatars[0]
        # ... and the field no schema declares survives parsing as an unknown field ...
        fields = UnknownFieldSet(animation)
        unknown = {fields[i].field_number: fields[i].data for i in range(len(fields))}
        assert unknown == {ANIMATION_UNDECLARED_FIELD: frame_marker(index)}
        # ... but a parse-and-reserialize relay changes the bytes.
        assert message.SerializeToString() != raw
        assert len(raw) > emu.frame_bytes
    await ws.close()


async def test_stamped_frames_end_with_their_send_time() -> None:
    async with Emulator(speed=100, frame_bytes=64, stamp_frames=True) as emu:
        ws, connection_id = await session(emu)
        before = time.time_ns()
        await ws.send(audio("r", b"\x00" * FRAME_16K * 3, end=True))
        frames = await frames_until_end(ws)
        after = time.time_ns()
        stamps = [send_time_ns(raw) for raw in frames]
        assert all(s is not None and before <= s <= after for s in stamps), stamps
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        for index, raw in enumerate(frames):
            # The stamp is appended to the unstamped bytes, a field of the outer Message that
            # parses as unknown and leaves every declared field as it was.
            plain = animation_message(connection_id, "r", index, index == 2, emu.frame_bytes)
            assert raw[: len(plain)] == plain
            assert len(raw) == len(plain) + 9
            message = parse(raw)
            fields = UnknownFieldSet(message)
            assert [(fields[i].field_number, fields[i].data) for i in range(len(fields))] == [
                (SEND_TIME_FIELD, stamps[index])
            ]
            assert message.server_response_animation.animation == frame_payload(
                "r", index, emu.frame_bytes
            )
        await ws.close()


async def test_frames_are_unstamped_by_default(emu: Emulator) -> None:
    ws, connection_id = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K, end=True))
    (raw,) = await frames_until_end(ws)
    assert raw == animation_message(connection_id, "r", 0, True, emu.frame_bytes)
    assert send_time_ns(raw) is None
    await ws.close()


async def test_idle_timeout() -> None:
    async with Emulator(speed=100, idle_timeout=0.3) as emu:
        ws, _ = await session(emu)
        await ws.send(audio("r", b"\x00" * FRAME_16K, end=True))
        assert len(await frames_until_end(ws)) == 1
        error = await expect_server_error(ws)
        assert error.message == "no audio input for 0.3s"
        assert emu.stats.idle_timeouts == 1


async def test_idle_timeout_on_a_stalled_request() -> None:
    async with Emulator(speed=100, idle_timeout=0.3) as emu:
        ws, _ = await session(emu)
        # Three frames of audio, never ended: two frames go out, then the client goes quiet.
        await ws.send(audio("stalled", b"\x00" * FRAME_16K * 3))
        assert [parse(await ws.recv()).server_response_animation.end for _ in range(2)] == [
            False,
            False,
        ]
        error = await expect_server_error(ws)
        assert error.message == "no audio input for 0.3s"


async def test_long_answer_does_not_time_out() -> None:
    async with Emulator(speed=1, idle_timeout=0.2) as emu:
        ws, _ = await session(emu)
        # 0.4 s of real-time frames after the last audio: output keeps the connection alive.
        await ws.send(audio("r", b"\x00" * FRAME_16K * 10, end=True))
        assert len(await frames_until_end(ws)) == 10
        await ws.close()


async def test_idle_timeout_before_configure() -> None:
    async with Emulator(idle_timeout=0.2) as emu:
        ws = await open_ws(emu, await mint(emu))
        error = await expect_server_error(ws)
        assert error.message == "no audio input for 0.2s"


async def test_client_disconnect_mid_request_is_clean(emu: Emulator) -> None:
    ws, _ = await session(emu)
    await ws.send(audio("r", b"\x00" * FRAME_16K * 200))
    await ws.recv()
    await ws.close()
    await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_stop_closes_open_connections() -> None:
    emu = Emulator()
    await emu.start()
    ws, _ = await session(emu)
    await emu.stop()
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 1012


def _ogg_page(granule: int, body: bytes, serial: int = 1, seq: int = 0) -> bytes:
    segments = [255] * (len(body) // 255) + [len(body) % 255]
    return (
        b"OggS\x00\x00"
        + granule.to_bytes(8, "little", signed=True)
        + serial.to_bytes(4, "little")
        + seq.to_bytes(4, "little")
        + b"\x00\x00\x00\x00"
        + bytes([len(segments), *segments])
        + body
    )


async def test_ogg_opus_frames_follow_granule_positions(emu: Emulator) -> None:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(configure(16000, message_pb2.AUDIO_FORMAT_OGG_OPUS))
    assert parse(await ws.recv()).type == message_pb2.MESSAGE_SERVER_CONFIRM_SESSION
    head = b"OpusHead\x01\x01" + (312).to_bytes(2, "little") + b"\x80\x3e\x00\x00\x00\x00\x00"
    stream = _ogg_page(0, head) + _ogg_page(0, b"OpusTags" + b"\x00" * 8, seq=1)
    # 0.2 s of audio after the 312-sample pre-skip: 5 frames of 40 ms.
    stream += _ogg_page(312 + 9600, b"\x00" * 300, seq=2)
    await ws.send(audio("opus", stream[:50]))
    await ws.send(audio("opus", stream[50:], end=True))
    frames = await frames_until_end(ws)
    assert len(frames) == 5
    await ws.close()


async def test_query_tokens_are_redacted_in_uvicorn_logs(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    token = await mint(emu)
    ws = await open_ws(emu, token, query_auth=True)
    await handshake(ws)
    await ws.close()
    assert "sessionKey=[redacted]" in caplog.text
    assert token not in caplog.text
