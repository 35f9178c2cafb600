"""The producer socket over real sockets: its REST rules, ticket kinds, and every bad input of
docs/protocol.md section 14 with its stable code. A raw peer speaks the producer codec and nothing
else, so the tests see exactly the bytes on the wire."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from app.api.websocket import RelayWebSocketProtocol
from app.emulator import Emulator
from app.errors import ErrorCode, spec
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp
from tests.relay_api.conftest import (
    CALLER_KEY,
    OTHER_KEY,
    Peer,
    Relay,
    relay_settings,
    running_relay,
)
from tests.relay_api.test_transport_limits import frame_header
from tests.support.producer_peer import BAD_INPUT, ProducerPeer

AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(speed=50, record=True, frame_bytes=256) as emulator:
        yield emulator


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    async with running_relay(relay_settings(emu, max_message_bytes=1024)) as running:
        yield running


async def _session(relay: Relay, **body: Any) -> dict[str, Any]:
    return await relay.create(**({"audioSource": "producer"} | body))


async def _producer_url(relay: Relay, session_id: str, key: str = CALLER_KEY) -> str:
    response = await relay.http.post(
        f"/v1/relay/sessions/{session_id}/producer-tickets",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    return url


# --- REST ---


async def test_a_producer_session_answers_both_credentials(relay: Relay) -> None:
    body = await _session(relay, forwardMicrophone=True)
    assert (body["audioSource"], body["forwardMicrophone"], body["allowProducer"]) == (
        "producer",
        True,
        True,
    )
    producer = body["producer"]
    assert set(producer) == {"ticket", "url", "ticketTtlSeconds"}
    assert producer["ticket"] != body["ticket"]
    assert "/v1/relay/producer?" in producer["url"]
    assert f"session={body['sessionId']}" in producer["url"]
    # a fresh producer ticket for it, for its owner only
    again = await relay.http.post(
        f"/v1/relay/sessions/{body['sessionId']}/producer-tickets", headers=AUTH
    )
    assert again.status_code == 201
    assert again.headers["cache-control"] == "no-store"
    assert set(again.json()) == {"sessionId", "ticket", "url", "ticketTtlSeconds"}
    other = await relay.http.post(
        f"/v1/relay/sessions/{body['sessionId']}/producer-tickets",
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "sessionNotFound"


async def test_a_browser_session_accepts_a_producer_only_when_allowed(relay: Relay) -> None:
    plain = await relay.create()
    assert "producer" not in plain
    refused = await relay.http.post(
        f"/v1/relay/sessions/{plain['sessionId']}/producer-tickets", headers=AUTH
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "producerNotAllowed"
    allowed = await relay.create(allowProducer=True)
    assert allowed["audioSource"] == "browser"
    assert allowed["allowProducer"] is True
    async with ProducerPeer.open(allowed["producer"]["url"]) as producer:
        welcome = await producer.hello()
    assert welcome.browser_speaks
    assert not welcome.microphone


@pytest.mark.parametrize(
    "body",
    [
        {"forwardMicrophone": True},
        {"audioSource": "browser", "forwardMicrophone": True},
        {"audioSource": "agent"},
        {"allowProducer": "maybe"},
    ],
)
async def test_meaningless_routing_is_invalid_request(relay: Relay, body: dict[str, Any]) -> None:
    response = await relay.http.post("/v1/relay/sessions", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"


# --- ticket kinds ---


async def test_ticket_kinds_are_not_interchangeable(relay: Relay) -> None:
    body = await _session(relay)
    base = body["url"].split("?")[0]
    query = f"session={body['sessionId']}"
    # the browser's ticket at the producer socket, and the producer's at the browser's
    browser_at_producer = f"{base}/producer?{query}&ticket={body['ticket']}"
    async with ProducerPeer.open(browser_at_producer) as peer:
        assert await peer.closed() == (4401, "ticketInvalid")
    producer_at_browser = f"{base}?{query}&ticket={body['producer']['ticket']}"
    async with Peer.open(producer_at_browser) as peer2:
        assert await peer2.closed() == (4401, "ticketInvalid")
    # both were spent where they were wrongly shown
    async with ProducerPeer.open(body["producer"]["url"]) as peer:
        assert await peer.closed() == (4401, "ticketInvalid")


async def test_the_producer_socket_needs_its_subprotocol(relay: Relay) -> None:
    body = await _session(relay)
    with pytest.raises(InvalidStatus) as refused:
        async with ProducerPeer.open(body["producer"]["url"], subprotocol=p.SUBPROTOCOL):
            pass
    assert refused.value.response.status_code == 400


async def test_a_ticket_for_an_ended_session_is_session_closed(relay: Relay) -> None:
    body = await _session(relay)
    late = await _producer_url(relay, body["sessionId"])
    async with ProducerPeer.open(body["producer"]["url"]) as producer:
        await producer.hello()
        await producer.send(pp.Bye())
        assert await producer.closed() == (1000, "bye")
    async with ProducerPeer.open(late) as producer:
        assert await producer.closed() == (4410, "sessionClosed")


# --- bad input: each ends the session, for both endpoints, with its code ---


async def _fatal_for_both(relay: Relay, send: Any, code: ErrorCode, *, hello: bool = True) -> None:
    body = await _session(relay)
    async with Peer.open(body["url"]) as page, ProducerPeer.open(body["producer"]["url"]) as peer:
        await page.hello()
        if hello:
            await peer.hello()
        await send(peer)
        messages = await peer.until(pp.ServerError)
        error = messages[-1]
        assert isinstance(error, pp.ServerError)
        assert error.code == code
        close_code = spec(code).close_code
        assert await peer.closed() == (close_code, code.value)
        told = await page.until(lambda m: isinstance(m, p.ServerError))
        assert told[-1].code == code  # type: ignore[union-attr]
        assert await page.closed() == (close_code, code.value)
    assert relay.services.sessions.live_count == 0


@pytest.mark.parametrize(("name", "data", "code"), BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
async def test_bad_producer_input_has_its_stable_code(
    relay: Relay, name: str, data: bytes | str, code: ErrorCode
) -> None:
    async def send(peer: ProducerPeer) -> None:
        await peer.ws.send(data)

    await _fatal_for_both(relay, send, code)


async def test_the_first_message_must_be_hello(relay: Relay) -> None:
    async def send(peer: ProducerPeer) -> None:
        await peer.send(pp.Audio(1, b"\x01\x00"))

    await _fatal_for_both(relay, send, ErrorCode.INVALID_REQUEST, hello=False)


async def test_hello_beyond_what_was_sent_is_bad_ack(relay: Relay) -> None:
    async def send(peer: ProducerPeer) -> None:
        await peer.send(pp.Hello(5))

    await _fatal_for_both(relay, send, ErrorCode.BAD_ACK, hello=False)


async def test_a_message_over_the_limit_is_refused_in_the_producer_protocol(relay: Relay) -> None:
    async def send(peer: ProducerPeer) -> None:
        peer.ws.transport.write(frame_header(16 << 20))  # the header alone is enough

    await _fatal_for_both(relay, send, ErrorCode.MESSAGE_TOO_LARGE)


async def test_a_duplicate_is_dropped_and_acknowledged_again(relay: Relay, emu: Emulator) -> None:
    body = await _session(relay)
    async with ProducerPeer.open(body["producer"]["url"]) as peer:
        await peer.hello()
        await peer.send(pp.Audio(1, b"\x01\x00", end=True))
        assert pp.ServerAck(1) in await peer.until(pp.ServerAck)
        await peer.send(pp.Audio(1, b"\x01\x00", end=True))
        assert (await peer.until(pp.ServerAck))[-1] == pp.ServerAck(1)
        await emu.wait_until(lambda: len(emu.received_audio) == 1)
        assert list(emu.received_audio.values()) == [b"\x01\x00"]


async def test_resuming_from_before_an_own_ack_fails_explicitly(relay: Relay) -> None:
    body = await relay.create(allowProducer=True)
    async with Peer.open(body["url"]) as page:
        await page.hello()
        async with ProducerPeer.open(body["producer"]["url"]) as peer:
            await peer.hello()
            await peer.until(pp.Browser)  # event 1: the page is there
            await peer.send(pp.Ack(1))
        async with ProducerPeer.open(await _producer_url(relay, body["sessionId"])) as peer:
            await peer.send(pp.Hello(0))
            failed = await peer.recv()
            assert failed == pp.ResumeFailed(0, 2, "resumeFailed")
            assert await peer.closed() == (4409, "resumeFailed")


async def test_a_stalled_producer_message_is_cut_and_the_producer_may_resume(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RelayWebSocketProtocol, "partial_message_seconds", 0.5)
    body = await _session(relay)
    async with ProducerPeer.open(body["producer"]["url"]) as peer:
        await peer.hello()
        started = time.monotonic()
        peer.ws.transport.write(frame_header(600) + b"\x12\x00" + b"\x00" * 8)
        assert await peer.closed() == (1008, "messageIncomplete")
    assert time.monotonic() - started < 3
    async with ProducerPeer.open(await _producer_url(relay, body["sessionId"])) as peer:
        welcome = await peer.hello()
    assert welcome.resumed
