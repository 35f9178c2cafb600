"""The WebSocket endpoint's own checks and every bad input of docs/protocol.md section 6,
each over a real socket."""

from __future__ import annotations

import struct
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus

from app.emulator import Emulator
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    SHORT_PCM,
    Peer,
    Relay,
    final_frame,
    relay_settings,
    running_relay,
)


def socket_base(relay: Relay) -> str:
    return "ws" + relay.url.removeprefix("http") + "/v1/relay"


# --- refused before the upgrade: HTTP answers ---


@pytest.mark.parametrize("protocols", [["avatar-relay.v0"], ["chat", "avatar-relay.v2"]])
async def test_wrong_subprotocol_is_refused(relay: Relay, protocols: list[str]) -> None:
    body = await relay.create()
    with pytest.raises(InvalidStatus) as refused:
        async with Peer.open(body["url"], subprotocols=protocols):
            pass
    assert refused.value.response.status_code == 400
    assert b"invalidRequest" in bytes(refused.value.response.body or b"")
    # The ticket was not spent on a refused upgrade.
    async with Peer.open(body["url"]) as peer:
        await peer.hello()


async def test_foreign_origin_is_refused(emu: Emulator) -> None:
    settings = relay_settings(emu, cors_origins=["https://app.example.com"])
    async with running_relay(settings) as relay:
        body = await relay.create()
        with pytest.raises(InvalidStatus) as refused:
            async with Peer.open(body["url"], origin="https://evil.example.net"):
                pass
        assert refused.value.response.status_code == 403
        assert b"originNotAllowed" in bytes(refused.value.response.body or b"")
        # An allowed origin, this server's own origin, and no origin (not a browser) get in.
        own = "http://" + urlsplit(relay.url).netloc
        for origin in ("https://app.example.com", own, None):
            url = await relay.new_url(body["sessionId"])
            async with Peer.open(url, origin=origin) as peer:
                await peer.hello()


# --- refused right after the upgrade: close code + the error code as reason ---


async def test_bad_tickets_close_with_4401(relay: Relay) -> None:
    body = await relay.create()
    session = body["sessionId"]
    base = socket_base(relay)
    for url in (
        f"{base}?session={session}",
        f"{base}?session={session}&ticket=not-a-ticket",
        f"{base}?session=rs_other&ticket={body['ticket']}",  # bound to another session
        body["url"],  # ...which spent it
    ):
        async with Peer.open(url) as peer:
            assert await peer.closed() == (4401, "ticketInvalid")


async def test_a_replayed_ticket_is_refused(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as first:
        await first.hello()
        async with Peer.open(body["url"]) as replay:
            assert await replay.closed() == (4401, "ticketInvalid")
        # The first connection is untouched by the attempt.
        await first.utterance(SHORT_PCM)
        await first.until(final_frame)


async def test_connecting_to_an_ended_session_says_closed(relay: Relay) -> None:
    body = await relay.create()
    spare = await relay.new_url(body["sessionId"])
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send(p.Bye())
        assert await peer.closed() == (1000, "bye")
    async with Peer.open(spare) as late:
        assert await late.closed() == (4410, "sessionClosed")


async def test_a_newer_connection_replaces_the_older(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as old:
        await old.hello()
        async with Peer.open(await relay.new_url(body["sessionId"])) as new:
            welcome = await new.hello()
            assert welcome.resumed
            assert await old.closed() == (4001, "connectionReplaced")
            await new.utterance(SHORT_PCM)
            await new.until(final_frame)


# --- the bad-input table ---

HELLO = p.encode_client(p.Hello(0))


def audio(seq: int, pcm: bytes, flags: int = 0) -> bytes:
    return struct.pack("<BBI", p.ClientType.AUDIO, flags, seq) + pcm


BAD_BEFORE_HELLO = [
    pytest.param(b"\x01", "invalidRequest", 4400, id="too-short"),
    pytest.param(HELLO + b"\x00", "invalidRequest", 4400, id="trailing-bytes"),
    pytest.param(b"\x01\x01" + HELLO[2:], "invalidRequest", 4400, id="reserved-flags"),
    pytest.param(audio(1, b"\x00\x00"), "invalidRequest", 4400, id="first-not-hello"),
    pytest.param(b"\x7f\x00\x00\x00\x00\x00", "unknownMessageType", 4400, id="unknown-type"),
    pytest.param(p.encode_server(p.ServerPing(1)), "unknownMessageType", 4400, id="server-type"),
    pytest.param(struct.pack("<BBI", 1, 0, 5), "badAck", 4400, id="hello-beyond-sent"),
]

BAD_AFTER_HELLO = [
    pytest.param(HELLO, "invalidRequest", 4400, id="second-hello"),
    pytest.param(audio(1, b"\x00\x00\x00"), "badAudio", 4400, id="odd-pcm"),
    pytest.param(audio(1, b""), "badAudio", 4400, id="empty-without-end"),
    pytest.param(audio(0, b"\x00\x00"), "badSequence", 4400, id="seq-zero"),
    pytest.param(audio(2, b"\x00\x00"), "badSequence", 4400, id="seq-gap"),
    pytest.param(struct.pack("<BBI", 3, 0, 3), "badSequence", 4400, id="interrupt-gap"),
    pytest.param(p.encode_client(p.ClientAck(7)), "badAck", 4400, id="ack-beyond-sent"),
    pytest.param(audio(1, b"\x00\x00" * 2048), "messageTooLarge", 1009, id="oversized"),
]


async def _assert_fatal(peer: Peer, code: str, close_code: int) -> None:
    error = await peer.recv()
    assert isinstance(error, p.ServerError), error
    assert error.code == code
    assert await peer.closed() == (close_code, code)


@pytest.mark.parametrize(("data", "code", "close_code"), BAD_BEFORE_HELLO)
async def test_bad_input_before_hello(
    small_relay: Relay, data: bytes, code: str, close_code: int
) -> None:
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.send_raw(data)
        await _assert_fatal(peer, code, close_code)
    # Every protocol violation ends the session.
    refused = await small_relay.ticket(body["sessionId"])
    assert refused.json()["error"]["code"] == "sessionClosed"
    assert small_relay.services.sessions.live_count == 0


@pytest.mark.parametrize(("data", "code", "close_code"), BAD_AFTER_HELLO)
async def test_bad_input_after_hello(
    small_relay: Relay, data: bytes, code: str, close_code: int
) -> None:
    body = await small_relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send_raw(data)
        await _assert_fatal(peer, code, close_code)
    refused = await small_relay.ticket(body["sessionId"])
    assert refused.json()["error"]["code"] == "sessionClosed"


async def test_a_text_frame_is_invalid(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send_raw('{"type":"audio"}')
        await _assert_fatal(peer, "invalidRequest", 4400)


async def test_resent_chunks_are_dropped_and_acknowledged(relay: Relay, emu: Emulator) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send_raw(audio(1, b"\x01\x00" * 8))
        await peer.send_raw(audio(1, b"\x01\x00" * 8))  # a resend: dropped, re-acknowledged
        ack = await peer.until(lambda m: isinstance(m, p.ServerAck), skip_control=False)
        assert ack[-1] == p.ServerAck(1)
        await peer.send_raw(audio(2, b"\x02\x00" * 8, flags=p.FLAG_END))
        messages = ack + await peer.until(final_frame)
    echoes = [m for m in messages if isinstance(m, p.ServerAudio)]
    assert [m.pcm for m in echoes] == [b"\x01\x00" * 8, b"\x02\x00" * 8]
    assert emu.received_audio[echoes[0].conversation_id] == b"\x01\x00" * 8 + b"\x02\x00" * 8


async def test_an_ack_below_an_earlier_ack_is_ignored(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        messages = await peer.until(final_frame)
        last = messages[-1]
        assert isinstance(last, p.ServerFrame)
        await peer.send(p.ClientAck(last.seq))
        await peer.send(p.ClientAck(1))
        await peer.send(p.ClientPing(99))
        assert await peer.until(lambda m: isinstance(m, p.ServerPong)) == [p.ServerPong(99)]


async def test_audio_after_bye_is_ignored(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send(p.Bye())
        await peer.send_raw(audio(1, b"\x00\x00"))
        assert await peer.closed() == (1000, "bye")
    assert relay.services.sessions.live_count == 0


@pytest.mark.parametrize(
    ("setting", "code"),
    [("idle_timeout_seconds", "idleTimeout"), ("max_session_seconds", "sessionDurationExceeded")],
)
async def test_session_timers_end_the_session(emu: Emulator, setting: str, code: str) -> None:
    async with running_relay(relay_settings(emu, **{setting: 0.3})) as relay:
        body = await relay.create()
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            error = await peer.recv()
            assert error == p.ServerError(code, error.message)  # type: ignore[union-attr]
            assert await peer.closed() == (4408, code)
        await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_tickets_never_reach_the_logs(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    body = await relay.create()
    spare = await relay.ticket(body["sessionId"])
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM[:6400])
        await peer.until(final_frame)
        async with Peer.open(body["url"]) as replayed:  # refused: logged, without the ticket
            await replayed.closed()
    # The server's records (the test's own websockets client logs its request line at DEBUG).
    server = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert any(r.name.startswith("avatar_relay") for r in server)
    for ticket in (body["ticket"], spare.json()["ticket"]):
        for record in server:
            assert ticket not in repr(record.__dict__), record.name
