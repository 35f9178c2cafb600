"""The producer feed of RTC sessions end to end: our app under uvicorn, the emulator with its
LiveKit stand-in, and the Python `Producer` over the real producer socket. What the avatar
"publishes" is read from the emulator's recorded room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.emulator import Emulator
from avatar_relay_client import (
    ConversationCompleted,
    ConversationInterrupted,
    ConversationStarted,
    ErrorCode,
    FirstFrame,
    PlaybackState,
    PlaybackStateKind,
    Producer,
    RelayError,
    RtcProducerSession,
    StateChange,
    create_rtc_session,
)
from avatar_relay_client.producer_protocol import ConversationAborted
from tests.rtc_api.conftest import AUTH, PCM, WAIT, Rtc, rtc_settings, running_rtc
from tests.support.servers import FIXTURES

SPEECH = (FIXTURES / "speech_16000.pcm").read_bytes()
CHUNK = 1280  # 40 ms at 16 kHz


def chunks(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]


async def created(rtc: Rtc, **fields: Any) -> RtcProducerSession:
    return await create_rtc_session(rtc.url, headers=AUTH, http=rtc.http, **fields)


@contextlib.asynccontextmanager
async def producing(rtc: Rtc, **fields: Any) -> AsyncIterator[tuple[RtcProducerSession, Producer]]:
    session = await created(rtc, **fields)
    producer = Producer(rtc.url, session, headers=AUTH)
    await producer.start()
    try:
        yield session, producer
    finally:
        await producer.close(bye=False)


async def events_until(producer: Producer, stop: Any, within: float = WAIT) -> list[Any]:
    """The producer's events (state changes skipped) up to and including the first `stop`."""
    out: list[Any] = []
    async with asyncio.timeout(within):
        while True:
            event = await producer.next_event()
            if isinstance(event, StateChange):
                continue
            out.append(event)
            if stop(event):
                return out


def completed(conversation_id: str | None = None) -> Any:
    def stop(event: Any) -> bool:
        return isinstance(event, ConversationCompleted) and conversation_id in (
            None,
            event.conversation_id,
        )

    return stop


async def test_two_utterances_reach_the_room_byte_exact(emu: Emulator, rtc: Rtc) -> None:
    async with producing(rtc) as (session, producer):
        assert producer.rtc is True
        assert producer.playback_control is False
        assert session.producer_url.startswith("ws://")
        first = await producer.say(chunks(PCM))
        second = await producer.say(chunks(PCM[:9600]))
        outcome = await asyncio.wait_for(second.outcome(), WAIT)
        assert isinstance(outcome, ConversationCompleted)
        assert isinstance(await first.outcome(), ConversationCompleted)
        room = emu.livekit.rooms[session.room_name]
        published = room.published_audio()
        assert published == {first.conversation_id: PCM, second.conversation_id: PCM[:9600]}
        assert outcome.audio_ms == 9600 * 500 // 16000


async def test_the_lifecycle_once_in_order_and_duplicate_ends_deduped(
    emu: Emulator, rtc: Rtc
) -> None:
    async with producing(rtc) as (session, producer):
        utterance = await producer.say(chunks(PCM))
        events = await events_until(producer, completed())
        cid = utterance.conversation_id
        assert [type(e) for e in events] == [ConversationStarted, FirstFrame, ConversationCompleted]
        assert all(e.conversation_id == cid for e in events)
        assert [e.seq for e in events] == [1, 2, 3]
        # The emulator repeats every end: the core drops the repeats, the producer hears one.
        live = rtc.session(session.session_id)
        await emu.wait_until(lambda: live.core.duplicates >= 1)
        follow = await producer.say(chunks(PCM[:3200]))
        more = await events_until(producer, completed(follow.conversation_id))
        assert not any(getattr(e, "conversation_id", None) == cid for e in more)


async def test_an_interrupt_stops_the_avatar(emu: Emulator) -> None:
    emu.speed = 2
    async with running_rtc(rtc_settings(emu)) as rtc, producing(rtc) as (session, producer):
        utterance = await producer.say(chunks(SPEECH))
        await events_until(producer, lambda e: isinstance(e, FirstFrame))
        await producer.interrupt()
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        assert isinstance(outcome, ConversationInterrupted)
        assert not outcome.by_browser
        await emu.wait_until(lambda: emu.stats.requests_interrupted == 1)
        (publication,) = emu.livekit.rooms[session.room_name].publications
        assert publication.interrupted
        assert 0 < len(publication.audio) < len(SPEECH)


async def test_pause_and_resume_with_playback_control() -> None:
    async with (
        Emulator(speed=2, record=True, playback_control=True) as emu,
        running_rtc(rtc_settings(emu)) as rtc,
        producing(rtc) as (session, producer),
    ):
        assert session.playback_control
        assert producer.playback_control
        utterance = await producer.say(chunks(SPEECH))
        await events_until(producer, lambda e: isinstance(e, FirstFrame))
        await producer.pause()
        (paused,) = (await events_until(producer, lambda e: isinstance(e, PlaybackState)))[-1:]
        assert paused.state is PlaybackStateKind.PAUSED
        assert paused.conversation_id == utterance.conversation_id
        assert emu.stats.pauses_received == 1
        await producer.resume()
        (resumed,) = (await events_until(producer, lambda e: isinstance(e, PlaybackState)))[-1:]
        assert resumed.state is PlaybackStateKind.PLAYING
        assert resumed.played_ms == paused.played_ms
        emu.speed = 50
        await events_until(producer, completed())
        room = emu.livekit.rooms[session.room_name]
        assert room.published_audio() == {utterance.conversation_id: SPEECH}


async def test_pause_without_playback_control_is_refused(emu: Emulator, rtc: Rtc) -> None:
    async with producing(rtc) as (_, producer):
        with pytest.raises(RelayError) as local:
            await producer.pause()
        assert local.value.code is ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
        # Sent anyway (the raw protocol), the server ends the session with the same code.
        producer.playback_control = True
        await producer.pause()
        with pytest.raises(RelayError) as remote:
            await events_until(producer, lambda e: False)
        assert remote.value.code is ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
        assert emu.stats.pauses_received == 0


async def test_a_producer_cut_mid_utterance_resumes_with_nothing_lost(
    emu: Emulator, rtc: Rtc
) -> None:
    async with producing(rtc) as (session, producer):
        pieces = chunks(SPEECH[: 16000 * 2 * 3])
        async with producer.utterance() as utterance:
            for index, piece in enumerate(pieces):
                await utterance.send(piece)
                if index in (5, 20, 40):
                    while not producer.drop_connection():
                        await producer.wait_connected()
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        assert isinstance(outcome, ConversationCompleted)
        assert producer.stats.reconnects >= 3
        room = emu.livekit.rooms[session.room_name]
        assert room.published_audio() == {utterance.conversation_id: b"".join(pieces)}
        live = rtc.session(session.session_id)
        assert live.feed.stats.resumes >= 3


async def test_4002_rolls_over_and_the_next_utterance_plays(emu: Emulator, rtc: Rtc) -> None:
    async with producing(rtc) as (session, producer):
        emu.faults.close_after_frames = (5, 4002)
        lost = await producer.say(chunks(PCM))
        outcome = await asyncio.wait_for(lost.outcome(), WAIT)
        assert isinstance(outcome, ConversationAborted)
        assert outcome.code == ErrorCode.SESSION_DURATION_EXCEEDED.value
        emu.faults.close_after_frames = None
        room = emu.livekit.rooms[session.room_name]
        await emu.wait_until(lambda: len(room.joins) == 2)
        follow = await producer.say(chunks(PCM[:6400]))
        assert isinstance(await asyncio.wait_for(follow.outcome(), WAIT), ConversationCompleted)
        assert follow.conversation_id is not None
        assert room.published_audio()[follow.conversation_id] == PCM[:6400]
        assert len(emu.egress_configs) == 2  # played on the new ingress session


async def test_an_idle_session_closes_the_producer(emu: Emulator) -> None:
    async with (
        running_rtc(rtc_settings(emu, rtc_idle_timeout_seconds=1.0)) as rtc,
        producing(rtc) as (session, producer),
    ):
        with pytest.raises(RelayError) as closed:
            await events_until(producer, lambda e: False)
        assert closed.value.code is ErrorCode.IDLE_TIMEOUT
        await emu.wait_until(lambda: session.room_name not in emu.livekit.rooms)


async def test_bye_ends_the_session(emu: Emulator, rtc: Rtc) -> None:
    session = await created(rtc)
    producer = Producer(rtc.url, session, headers=AUTH)
    await producer.start()
    await producer.close()
    live = rtc.services.rtc._live
    await emu.wait_until(lambda: session.session_id not in live)
    assert (await rtc.delete(session.session_id)).status_code == 404
