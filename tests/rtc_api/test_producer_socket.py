"""An RTC session's producer socket over real sockets, by a raw peer: its REST credentials, the
ticket kinds, the WELCOME, exactly-once input across reconnects, and every bad input with its
stable code."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from app.emulator import Emulator
from app.errors import ErrorCode, spec
from avatar_relay_client import producer_protocol as pp
from tests.relay_api.test_transport_limits import frame_header
from tests.rtc_api.conftest import AUTH, OTHER_KEY, PCM, Rtc, rtc_settings, running_rtc
from tests.support.producer_peer import BAD_INPUT, ProducerPeer

OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


async def _ticket(rtc: Rtc, session_id: str, headers: dict[str, str] = AUTH) -> Any:
    return await rtc.http.post(f"/v1/rtc/sessions/{session_id}/producer-tickets", headers=headers)


async def test_the_answer_carries_a_producer_credential(rtc: Rtc) -> None:
    created = await rtc.create()
    producer = created["producer"]
    assert producer["url"].startswith(rtc.url.replace("http", "ws") + "/v1/rtc/producer?")
    assert f"session={created['sessionId']}" in producer["url"]
    assert producer["ticketTtlSeconds"] > 0
    async with ProducerPeer.open(producer["url"]) as peer:
        welcome = await peer.hello()
        assert welcome.rtc is True
        assert welcome.playback_control is False
        assert welcome.session_id == created["sessionId"]
        assert welcome.sample_rate == created["sampleRate"]
        assert welcome.resume_window_ms == round(created["idleTimeoutSeconds"] * 1000)
        assert (welcome.producer_ack, welcome.server_seq, welcome.resumed) == (0, 0, False)


async def test_welcome_declares_playback_control_when_upstream_does() -> None:
    async with (
        Emulator(speed=50, record=True, playback_control=True) as emu,
        running_rtc(rtc_settings(emu)) as rtc,
    ):
        created = await rtc.create()
        async with ProducerPeer.open(created["producer"]["url"]) as peer:
            welcome = await peer.hello()
            assert welcome.playback_control is True
            assert welcome.rtc is True


async def test_producer_tickets_are_the_owners_only(rtc: Rtc) -> None:
    created = await rtc.create()
    session_id = created["sessionId"]
    fresh = await _ticket(rtc, session_id)
    assert fresh.status_code == 201
    assert fresh.headers["cache-control"] == "no-store"
    body = fresh.json()
    assert body["sessionId"] == session_id
    assert body["ticket"] != created["producer"]["ticket"]
    for response in (
        await _ticket(rtc, session_id, OTHER),
        await _ticket(rtc, "rtc_unknown"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "sessionNotFound"
    unauthenticated = await rtc.http.post(f"/v1/rtc/sessions/{session_id}/producer-tickets")
    assert unauthenticated.status_code == 401
    # An ended session has no producer tickets any more.
    assert (await rtc.delete(session_id)).status_code == 204
    assert (await _ticket(rtc, session_id)).status_code == 404


async def test_tickets_are_single_use_and_of_their_kind(rtc: Rtc) -> None:
    created = await rtc.create()
    url = created["producer"]["url"]
    async with ProducerPeer.open(url) as peer:
        await peer.hello()
    async with ProducerPeer.open(url) as again:
        assert await again.closed() == (4401, "ticketInvalid")
    # An RTC producer ticket does not open the relay's producer socket.
    fresh = (await _ticket(rtc, created["sessionId"])).json()
    relay_url = fresh["url"].replace("/v1/rtc/producer", "/v1/relay/producer")
    async with ProducerPeer.open(relay_url) as elsewhere:
        assert (await elsewhere.closed())[1] == "ticketInvalid"
    # Nor the browser's protocol this one.
    fresh = (await _ticket(rtc, created["sessionId"])).json()
    with pytest.raises(InvalidStatus) as refused:
        async with ProducerPeer.open(fresh["url"], subprotocol="avatar-relay.v1"):
            pass
    assert refused.value.response.status_code == 400
    # An unknown session's socket.
    bad = fresh["url"].replace(created["sessionId"], "rtc_unknown")
    async with ProducerPeer.open(bad) as unknown:
        assert await unknown.closed() == (4401, "ticketInvalid")


async def test_a_resent_message_is_acknowledged_again_not_applied_twice(
    emu: Emulator, rtc: Rtc
) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as peer:
        await peer.hello()
        await peer.send(pp.Audio(1, PCM[:3200]))
        await peer.send(pp.Audio(2, PCM[3200:6400], end=True))
        messages = await peer.until(pp.ConversationCompleted)
        started = next(m for m in messages if isinstance(m, pp.ConversationStarted))
        assert started.input_seq == 1
        events = [m for m in messages if not isinstance(m, pp.ServerAck)]
    fresh = (await _ticket(rtc, created["sessionId"])).json()
    async with ProducerPeer.open(fresh["url"]) as peer:
        welcome = await peer.hello(0)
        assert welcome.resumed is True
        assert welcome.producer_ack == 2
        # Nothing was acknowledged: every event is replayed, each once, in order.
        assert [await peer.recv() for _ in events] == events
        await peer.send(pp.Ack(len(events)))
        # The resent END is acknowledged again and applied once only.
        await peer.send(pp.Audio(2, PCM[3200:6400], end=True))
        assert await peer.recv() == pp.ServerAck(2)
        await peer.send(pp.Ping(7))
        assert await peer.recv() == pp.ServerPong(7)  # no event came in between
    room = emu.livekit.rooms[created["roomName"]]
    assert room.published_audio() == {started.conversation_id: PCM[:6400]}
    assert rtc.session(created["sessionId"]).feed.stats.duplicates == 1


async def test_a_newer_connection_replaces_the_current_one(rtc: Rtc) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as first:
        await first.hello()
        fresh = (await _ticket(rtc, created["sessionId"])).json()
        async with ProducerPeer.open(fresh["url"]) as second:
            assert await first.closed() == (4001, "connectionReplaced")
            assert (await second.hello()).resumed is True


async def test_delete_closes_the_producer_normally(rtc: Rtc) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as peer:
        await peer.hello()
        assert (await rtc.delete(created["sessionId"])).status_code == 204
        assert await peer.closed() == (1000, "bye")


# --- bad input: each ends the session with its code ---

RTC_BAD_INPUT: list[tuple[str, bytes | str, ErrorCode]] = [
    *BAD_INPUT,
    (
        "PAUSE without playback control",
        pp.encode_producer(pp.Pause(1)),
        ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE,
    ),
    (
        "RESUME without playback control",
        pp.encode_producer(pp.Resume(1)),
        ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE,
    ),
]


async def _fatal(
    rtc: Rtc, data: bytes | str | None, code: ErrorCode, *, hello: bool = True
) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as peer:
        if hello:
            await peer.hello()
        if data is None:
            peer.ws.transport.write(frame_header(16 << 20))  # the header alone is enough
        else:
            await peer.ws.send(data)
        messages = await peer.until(pp.ServerError)
        error = messages[-1]
        assert isinstance(error, pp.ServerError)
        assert error.code == code
        assert await peer.closed() == (spec(code).close_code, code.value)
    session = rtc.services.rtc._live.get(created["sessionId"])
    if session is not None:
        await session.wait_closed()
    assert rtc.services.rtc.live_count == 0


@pytest.mark.parametrize(
    ("name", "data", "code"), RTC_BAD_INPUT, ids=[row[0] for row in RTC_BAD_INPUT]
)
async def test_bad_producer_input_has_its_stable_code(
    emu: Emulator, name: str, data: bytes | str, code: ErrorCode
) -> None:
    async with running_rtc(rtc_settings(emu, max_message_bytes=1024)) as rtc:
        await _fatal(rtc, data, code)


async def test_the_first_message_must_be_hello(rtc: Rtc) -> None:
    await _fatal(
        rtc, pp.encode_producer(pp.Audio(1, b"\x01\x00")), ErrorCode.INVALID_REQUEST, hello=False
    )


async def test_hello_beyond_what_was_sent_is_bad_ack(rtc: Rtc) -> None:
    await _fatal(rtc, pp.encode_producer(pp.Hello(5)), ErrorCode.BAD_ACK, hello=False)


async def test_a_message_over_the_limit_is_message_too_large(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu, max_message_bytes=1024)) as rtc:
        await _fatal(rtc, None, ErrorCode.MESSAGE_TOO_LARGE)


async def test_a_resume_from_before_what_was_acknowledged_fails(rtc: Rtc) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as peer:
        await peer.hello()
        await peer.send(pp.Audio(1, PCM[:3200], end=True))
        started = await peer.until(pp.ConversationStarted)
        await peer.send(pp.Ack(started[-1].seq))  # type: ignore[union-attr]
        await peer.send(pp.Ping(1))
        await peer.until(pp.ServerPong)
    fresh = (await _ticket(rtc, created["sessionId"])).json()
    async with ProducerPeer.open(fresh["url"]) as peer:
        await peer.send(pp.Hello(0))  # it acknowledged event 1 already: gone for good
        failed = await peer.recv()
        assert isinstance(failed, pp.ResumeFailed)
        assert failed.code == "resumeFailed"
        assert await peer.closed() == (spec(ErrorCode.RESUME_FAILED).close_code, "resumeFailed")
    scraped = (await rtc.http.get("/metrics")).text
    assert 'avatar_relay_resumes_total{outcome="failed"} 1.0' in scraped


async def test_shutdown_tells_the_producer_to_go_away(rtc: Rtc) -> None:
    created = await rtc.create()
    async with ProducerPeer.open(created["producer"]["url"]) as peer:
        await peer.hello()
        await rtc.services.rtc.shutdown()
        error = (await peer.until(pp.ServerError))[-1]
        assert error == pp.ServerError("goingAway", error.message)  # type: ignore[union-attr]
        assert await peer.closed() == (1001, "goingAway")
