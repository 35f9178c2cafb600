"""`audioEcho: false` over real sockets: the session option, what the wire carries, the rule for
producer speech, and a handover through Redis keeping the mode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.api.ops import drain
from app.emulator import Emulator
from avatar_relay_client import Producer
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    CALLER_KEY,
    SHORT_PCM,
    Peer,
    Relay,
    conversation_over,
    relay_settings,
    running_relay,
)
from tests.support.relay import upstream_frames

AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}


def _sequenced(messages: list[p.ServerMessage]) -> list[p.SequencedServerMessage]:
    return [m for m in messages if isinstance(m, p.SequencedServerMessage)]


async def test_an_echo_off_conversation_is_its_marker_and_its_frames(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create(audioEcho=False)
    assert body["audioEcho"] is False
    async with Peer.open(body["url"]) as peer:
        welcome = await peer.hello()
        assert welcome.no_echo
        await peer.utterance(SHORT_PCM)
        stream = _sequenced(await peer.until(conversation_over))
    started = stream[0]
    assert started == p.ConversationStarted(1, started.conversation_id, 1, 0)
    cid = started.conversation_id
    # Nothing but the marker and the frames came down: no AUDIO, frames byte for byte.
    assert not any(isinstance(m, p.ServerAudio) for m in stream)
    frames = stream[1:]
    assert all(isinstance(m, p.ServerFrame) and m.conversation_id == cid for m in frames)
    assert [m.payload for m in frames] == upstream_frames(emu)[cid]  # type: ignore[union-attr]
    assert [m.seq for m in stream] == list(range(1, len(stream) + 1))
    assert emu.received_audio[cid] == SHORT_PCM  # upstream gets the audio as before


async def test_an_echo_session_is_unchanged(relay: Relay) -> None:
    body = await relay.create()
    assert body["audioEcho"] is True
    async with Peer.open(body["url"]) as peer:
        assert not (await peer.hello()).no_echo
        await peer.utterance(SHORT_PCM)
        stream = _sequenced(await peer.until(conversation_over))
    assert isinstance(stream[0], p.ServerAudio)
    assert stream[0].first
    assert not any(isinstance(m, p.ConversationStarted) for m in stream)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"audioEcho": False, "audioSource": "producer"}, 400, "invalidRequest"),
        (
            {"audioEcho": False, "audioSource": "producer", "forwardMicrophone": True},
            400,
            "invalidRequest",
        ),
        ({"audioEcho": "sometimes"}, 400, "invalidRequest"),
        ({"audioEcho": [False]}, 400, "invalidRequest"),
        ({"audioEcho": False, "forwardMicrophone": True}, 400, "invalidRequest"),
    ],
)
async def test_bad_echo_options_are_refused_with_a_code(
    relay: Relay, body: dict[str, Any], status: int, code: str
) -> None:
    before = relay.services.sessions.live_count
    response = await relay.http.post("/v1/relay/sessions", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert relay.services.sessions.live_count == before  # nothing left behind


async def test_a_producers_speech_is_still_carried_when_the_browser_has_no_echo(
    relay: Relay, emu: Emulator
) -> None:
    """allowProducer with audioEcho false: the browser's own speech comes as a marker, the
    producer's as AUDIO (the browser holds no copy of it)."""
    body = await relay.create(audioEcho=False, allowProducer=True)
    assert (body["audioEcho"], body["allowProducer"]) == (False, True)
    producer = Producer(
        relay.url,
        body["sessionId"],
        headers=AUTH,
        ticket=body["producer"]["ticket"],
        url=body["producer"]["url"],
    )
    async with Peer.open(body["url"]) as peer, producer:
        assert (await peer.hello()).no_echo
        await producer.send_audio(SHORT_PCM, end=True)
        spoken = _sequenced(await peer.until(conversation_over))
        await peer.utterance(SHORT_PCM)
        own = _sequenced(await peer.until(conversation_over))
    assert isinstance(spoken[0], p.ServerAudio)
    assert spoken[0].first
    assert b"".join(m.pcm for m in spoken if isinstance(m, p.ServerAudio)) == SHORT_PCM
    assert isinstance(own[0], p.ConversationStarted)
    assert not any(isinstance(m, p.ServerAudio) for m in own)
    assert [m.payload for m in own[1:]] == upstream_frames(emu)[own[0].conversation_id]  # type: ignore[union-attr]


async def test_a_handed_over_session_keeps_its_mode(emu: Emulator, redis_url: str) -> None:
    settings = relay_settings(emu, drain_timeout_seconds=20, redis_url=redis_url)
    async with running_relay(settings) as relay, running_relay(settings) as successor:
        body = await relay.create(audioEcho=False)
        async with Peer.open(body["url"]) as peer:
            assert (await peer.hello()).no_echo
            await peer.utterance(SHORT_PCM)
            first = _sequenced(await peer.until(conversation_over))
            draining = asyncio.create_task(drain(relay.app, 25))
            assert await peer.closed() == (1012, "sessionMoved")
        await asyncio.wait_for(draining, 10)
        async with Peer.open(await successor.new_url(body["sessionId"])) as peer:
            peer.seq = len(range(0, len(SHORT_PCM), 6400))  # the client seqs it sent before
            welcome = await peer.hello(first[-1].seq)
            assert welcome.resumed
            assert welcome.no_echo
            next_seq = peer.seq + 1
            await peer.utterance(SHORT_PCM)
            after = _sequenced(await peer.until(conversation_over))
    assert after[0] == p.ConversationStarted(
        first[-1].seq + 1, after[0].conversation_id, next_seq, 0
    )
    assert not any(isinstance(m, p.ServerAudio) for m in after)
    assert [m.payload for m in after[1:]] == upstream_frames(emu)[after[0].conversation_id]  # type: ignore[union-attr]
