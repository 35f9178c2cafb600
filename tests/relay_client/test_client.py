"""The reference client against the real relay and emulator: interrupt, BYE, failure paths."""

from __future__ import annotations

import asyncio

import pytest

from avatar_relay_client import (
    Audio,
    ConversationAborted,
    ErrorCode,
    Frame,
    Interrupted,
    RelayClient,
    RelayError,
    SessionLost,
    StateChange,
)
from avatar_relay_client.link import ws_url
from tests.relay_client.conftest import AUTH, running_relay
from tests.relay_client.proxy import FreezingProxy
from tests.support.servers import FIXTURES, free_port

CHUNK_BYTES = 1280
PCM = (FIXTURES / "short_16000.pcm").read_bytes()
CHUNKS = [PCM[i : i + CHUNK_BYTES] for i in range(0, len(PCM), CHUNK_BYTES)]

Media = Audio | Frame | ConversationAborted | Interrupted


async def _next_media(client: RelayClient) -> Media:
    while True:
        event = await client.next_event()
        if not isinstance(event, StateChange | SessionLost):
            return event


async def _until(client: RelayClient, done: type[Media], timeout: float = 20.0) -> list[Media]:
    """Events up to and including the first of type `done` (a final frame for Frame)."""
    out: list[Media] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await _next_media(client)
            out.append(event)
            if isinstance(event, done) and (not isinstance(event, Frame) or event.end):
                return out


async def _drain(client: RelayClient) -> None:
    async with asyncio.timeout(20):
        async for _ in client.events():
            pass


async def test_interrupt_stops_the_conversation_and_next_audio_starts_a_new_one() -> None:
    async with running_relay() as relay, RelayClient(relay.url, headers=AUTH) as client:
        for chunk in CHUNKS[:10]:  # an open utterance: its conversation cannot finish
            await client.send_audio(chunk)
        first = await _next_media(client)
        assert isinstance(first, Audio)
        assert first.first
        # Once upstream has the request, the interrupt must reach it too.
        emulator = relay.emulator
        await emulator.wait_until(lambda: first.conversation_id in emulator.received_audio)
        await client.interrupt()
        before = [first, *await _until(client, Interrupted)]
        interrupted = before[-1]
        assert isinstance(interrupted, Interrupted)
        assert interrupted.conversation_id == first.conversation_id
        assert not any(isinstance(e, Frame) and e.end for e in before)

        for index, chunk in enumerate(CHUNKS):
            await client.send_audio(chunk, end=index == len(CHUNKS) - 1)
        after = await _until(client, Frame)
        assert isinstance(after[0], Audio)
        assert after[0].first
        assert after[0].conversation_id != first.conversation_id
        # Nothing of the interrupted conversation follows INTERRUPTED.
        assert {e.conversation_id for e in after} == {after[0].conversation_id}
        assert b"".join(e.pcm for e in after if isinstance(e, Audio)) == PCM
        seqs = [e.seq for e in before + after]
        assert seqs == list(range(1, len(seqs) + 1))
        await emulator.wait_until(lambda: emulator.stats.interrupts_received == 1)


async def test_resume_fails_explicitly_when_the_buffer_overflowed_while_away() -> None:
    async with (
        running_relay(replay_buffer_messages=16) as relay,
        RelayClient(relay.url, headers=AUTH) as client,
    ):
        await client.send_audio(CHUNKS[0])
        await _next_media(client)
        # Away for a while: the whole utterance's echo and frames (80 messages) pile up.
        assert client.drop_connection(offline_for=0.5)
        for index, chunk in enumerate(CHUNKS[1:], start=1):
            await client.send_audio(chunk, end=index == len(CHUNKS) - 1)
        with pytest.raises(RelayError) as caught:
            await _drain(client)
        assert caught.value.code is ErrorCode.SLOW_CONSUMER
        assert client.error is caught.value
        with pytest.raises(RelayError):
            await client.send_audio(CHUNKS[0])


async def test_reconnecting_after_the_resume_window_surfaces_the_servers_refusal() -> None:
    async with (
        running_relay(resume_window_seconds=1) as relay,
        RelayClient(relay.url, headers=AUTH) as client,
    ):
        await client.send_audio(CHUNKS[0], end=True)
        await _until(client, Frame)
        assert client.drop_connection(offline_for=1.5)
        with pytest.raises(RelayError) as caught:
            async with asyncio.timeout(20):
                await _next_media(client)
        # The server's verdict, not a client-side guess: the session is gone.
        assert caught.value.code in (ErrorCode.SESSION_NOT_FOUND, ErrorCode.SESSION_CLOSED)


async def test_a_lost_session_is_announced_once_with_what_to_do() -> None:
    async with (
        running_relay(resume_window_seconds=1) as relay,
        RelayClient(relay.url, headers=AUTH) as client,
    ):
        await client.send_audio(CHUNKS[0], end=True)
        await _until(client, Frame)
        assert client.drop_connection(offline_for=1.5)
        seen: list[object] = []

        async def take_all() -> None:
            async with asyncio.timeout(20):
                while True:
                    seen.append(await client.next_event())

        with pytest.raises(RelayError) as caught:
            await take_all()
        lost = [event for event in seen if isinstance(event, SessionLost)]
        assert lost == [SessionLost(caught.value.code, caught.value.message)]
        assert lost[0].action == "newSession"
        assert seen[-1] is lost[0]


async def test_a_message_lost_in_flight_is_written_again_after_the_resume() -> None:
    async with running_relay() as relay, RelayClient(relay.url, headers=AUTH) as client:
        await client.send_audio(CHUNKS[0])
        client.lose_next_message()
        await client.send_audio(CHUNKS[1])  # never reaches the server; the link resumes
        await client.send_audio(CHUNKS[2], end=True)
        events = await _until(client, Frame)
        assert [e.pcm for e in events if isinstance(e, Audio)] == CHUNKS[:3]
        assert relay.emulator.received_audio[events[0].conversation_id] == b"".join(CHUNKS[:3])
        assert client.stats.lost == 1
        assert client.stats.drops == client.stats.reconnects == 1
        assert client.stats.resent >= 1  # the greeting's clientAck lacked the lost chunk


async def test_without_reconnect_a_drop_ends_the_stream_with_connection_closed() -> None:
    async with (
        running_relay() as relay,
        RelayClient(relay.url, headers=AUTH, reconnect=False) as client,
    ):
        assert client.drop_connection()
        with pytest.raises(RelayError) as caught:
            async with asyncio.timeout(20):
                await _next_media(client)
        assert caught.value.code is ErrorCode.CONNECTION_CLOSED


async def test_close_says_bye_and_the_server_releases_the_upstream() -> None:
    async with running_relay() as relay:
        emulator = relay.emulator
        client = RelayClient(relay.url, headers=AUTH)
        await client.start()
        await client.send_audio(CHUNKS[0], end=True)
        await _until(client, Frame)
        assert emulator.stats.connections_active == 1
        await client.close()
        await emulator.wait_until(lambda: emulator.stats.connections_active == 0)
        assert [e async for e in client.events()] == []
        assert client.stats.reconnects == 0
        assert client.stats.messages_received >= 3  # WELCOME, echo, frame


async def test_session_creation_errors_are_app_errors() -> None:
    async with running_relay() as relay:
        with pytest.raises(RelayError) as caught:
            async with RelayClient(relay.url, headers={"Authorization": "Bearer wrong"}):
                pass
        assert caught.value.code is ErrorCode.UNAUTHORIZED
        with pytest.raises(RelayError) as caught:
            async with RelayClient(relay.url, headers=AUTH, sample_rate=12345):
                pass
        assert caught.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(RelayError) as caught:
        async with RelayClient(f"http://127.0.0.1:{free_port()}", headers=AUTH):
            pass
    assert caught.value.code is ErrorCode.CONNECTION_FAILED


async def test_bad_audio_is_refused_before_it_is_sent() -> None:
    client = RelayClient("http://127.0.0.1:9")
    with pytest.raises(RelayError) as caught:
        await client.send_audio(b"\x00")
    assert caught.value.code is ErrorCode.BAD_AUDIO
    with pytest.raises(RelayError) as caught:
        await client.send_audio(b"")
    assert caught.value.code is ErrorCode.BAD_AUDIO


def test_socket_url_carries_the_ticket() -> None:
    base = "http://127.0.0.1:8080"
    assert ws_url(base, "/v1/relay?session=rs_1&ticket=old", "t2") == (
        "ws://127.0.0.1:8080/v1/relay?session=rs_1&ticket=t2"
    )
    assert ws_url(base, "https://relay.example/v1/relay?session=rs_1", "t") == (
        "wss://relay.example/v1/relay?session=rs_1&ticket=t"
    )
    assert (
        ws_url(base, "ws://h:1/v1/relay?session=a", "x") == "ws://h:1/v1/relay?session=a&ticket=x"
    )


async def test_a_silent_dead_connection_is_detected_and_resumed() -> None:
    async with running_relay() as relay:
        port = int(relay.url.rsplit(":", 1)[1])
        async with (
            FreezingProxy(port).running() as proxy,
            RelayClient(proxy.url, headers=AUTH, liveness_timeout=0.6) as client,
        ):
            await client.send_audio(CHUNKS[0], end=True)
            first = await _until(client, Frame)
            # The socket goes silent without a close (REST connections keep working).
            assert proxy.freeze(lambda head: head.startswith(b"GET /v1/relay?")) == 1
            await client.send_audio(CHUNKS[1], end=True)
            # PING unanswered -> the client gives up on the socket and resumes on a new one.
            second = await _until(client, Frame)
            assert client.stats.pings_sent >= 1
            assert client.stats.reconnects == 1
            assert b"".join(e.pcm for e in second if isinstance(e, Audio)) == CHUNKS[1]
            seqs = [e.seq for e in first + second]
            assert seqs == list(range(1, len(seqs) + 1))
