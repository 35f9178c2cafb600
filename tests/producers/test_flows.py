"""A producer session over real sockets: server, emulator, the producer client and the page's
client. The producer's audio reaches the page and the upstream exactly; the page's frames are
the upstream's bytes; the producer hears each conversation's fate, the page's barge-in, upstream
failures, and the user's microphone when it is forwarded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from avatar_relay_client import Audio, Frame, Interrupted, RelayError
from avatar_relay_client import ConversationAborted as PageAborted
from avatar_relay_client.errors import ErrorCode
from avatar_relay_client.producer import (
    BargeIn,
    Browser,
    BrowserState,
    ConversationAborted,
    ConversationCompleted,
    ConversationInterrupted,
    ConversationStarted,
    FirstFrame,
    Microphone,
)
from tests.producers.conftest import CHUNKS, PCM, WAIT, running_relay, take_until
from tests.support.relay import upstream_frames


def _page_over(event: Any) -> bool:
    return (isinstance(event, Frame) and event.end) or isinstance(event, PageAborted)


def _outcome(event: Any) -> bool:
    return isinstance(event, ConversationCompleted | ConversationInterrupted | ConversationAborted)


async def test_producer_speech_reaches_the_page_byte_for_byte_and_its_fate_the_producer() -> None:
    async with running_relay() as relay, relay.pair() as (producer, page):
        assert producer.sample_rate == page.sample_rate == 16000
        utterance = await producer.say(CHUNKS)
        page_events = await take_until(page, _page_over)
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        produced = await take_until(producer, _outcome)
        frames = upstream_frames(relay.emulator)

    cid = utterance.conversation_id
    assert cid is not None
    # the page: the producer's audio chunk for chunk (FIRST, then END on the empty last one),
    # then the frames exactly as the avatar service sent them
    audio = [e for e in page_events if isinstance(e, Audio)]
    assert [e.pcm for e in audio] == [*CHUNKS, b""]
    assert audio[0].first
    assert audio[-1].end
    assert isinstance(page_events[0], Audio)  # audio before frames
    assert [e.payload for e in page_events if isinstance(e, Frame)] == frames[cid]
    assert {e.conversation_id for e in page_events} == {cid}
    # the upstream got the audio once, for one request
    assert relay.emulator.received_audio == {cid: PCM}
    # the producer: the page's arrival, then start, first frame, completion with the counts
    assert [type(e) for e in produced] == [
        Browser,
        ConversationStarted,
        FirstFrame,
        ConversationCompleted,
    ]
    assert produced[0].state is BrowserState.CONNECTED
    assert produced[1] == ConversationStarted(2, cid, utterance.first_seq or 0)
    assert outcome == ConversationCompleted(4, cid, len(PCM) // 32, len(frames[cid]))
    assert produced[3] == outcome


async def test_barge_in_reaches_the_producer_and_stops_the_conversation() -> None:
    # Real-time pacing upstream, so the conversation is still being spoken when the user talks.
    async with running_relay(speed=1.0) as relay, relay.pair() as (producer, page):
        async with producer.utterance() as utterance:
            for chunk in CHUNKS[:10]:
                await utterance.send(chunk)
            cid = await asyncio.wait_for(utterance.started(), WAIT)
            await take_until(page, lambda e: isinstance(e, Frame))  # the avatar is speaking
            await page.interrupt()
            produced = await take_until(producer, _outcome)
            # the rest of the sentence is not spoken: the utterance drops it
            assert utterance.cancelled
            assert not await utterance.send(CHUNKS[10])
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        page_events = await take_until(page, lambda e: isinstance(e, Interrupted))
        await relay.emulator.wait_until(lambda: relay.emulator.stats.interrupts_received == 1)
        # the next utterance is a new conversation, spoken in full
        after = await producer.say(CHUNKS[:3])
        assert await asyncio.wait_for(after.started(), WAIT) != cid
        assert isinstance(await asyncio.wait_for(after.outcome(), WAIT), ConversationCompleted)
        received = dict(relay.emulator.received_audio)

    barge = [e for e in produced if isinstance(e, BargeIn)]
    assert barge == [BargeIn(barge[0].seq, cid)]
    assert isinstance(outcome, ConversationInterrupted)
    assert outcome.by_browser
    assert outcome.conversation_id == cid
    assert produced[-1] == outcome
    assert 0 < outcome.audio_ms <= 10 * 40
    assert outcome.frames >= 1
    assert page_events[-1] == Interrupted(page_events[-1].seq, cid)
    assert received[cid] == b"".join(CHUNKS[:10])  # nothing after the barge-in went upstream


async def test_the_producers_interrupt_stops_the_page() -> None:
    async with running_relay(speed=1.0) as relay, relay.pair() as (producer, page):
        async with producer.utterance() as utterance:
            for chunk in CHUNKS[:10]:
                await utterance.send(chunk)
            await take_until(page, lambda e: isinstance(e, Frame))
            await producer.interrupt()
            assert not await utterance.send(CHUNKS[10])
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        page_events = await take_until(page, lambda e: isinstance(e, Interrupted))
    assert isinstance(outcome, ConversationInterrupted)
    assert not outcome.by_browser
    assert page_events[-1].conversation_id == utterance.conversation_id


async def test_pause_on_a_relay_session_is_refused_before_anything_is_sent() -> None:
    async with running_relay() as relay, relay.pair() as (producer, _page):
        assert not producer.playback_control
        assert not producer.rtc
        sent = producer.unacked
        for control in (producer.pause, producer.resume):
            with pytest.raises(RelayError) as refused:
                await control()
            assert refused.value.code is ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
        assert producer.unacked == sent
        # The session goes on: an utterance still completes.
        utterance = await producer.say(CHUNKS[:3])
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        assert isinstance(outcome, ConversationCompleted)


async def test_an_upstream_abort_reaches_the_producer_as_an_event() -> None:
    async with running_relay() as relay, relay.pair() as (producer, page):
        relay.emulator.faults.error_after_frames = (2, 4500, "driven server failed")
        utterance = await producer.say(CHUNKS)
        outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
        page_events = await take_until(page, _page_over)
        relay.emulator.faults.error_after_frames = None
        # the session goes on: the next utterance is spoken
        again = await producer.say(CHUNKS[:3])
        assert isinstance(await asyncio.wait_for(again.outcome(), WAIT), ConversationCompleted)
    assert isinstance(outcome, ConversationAborted)
    # the code the page got for it: SERVER_ERROR 4500 of the avatar service is serverError
    assert outcome.code == page_events[-1].code == ErrorCode.SERVER_ERROR
    assert outcome.frames == 2


async def test_an_upstream_refusal_ends_the_session_for_the_producer_with_its_code() -> None:
    async with running_relay() as relay:
        relay.emulator.faults.close_after_frames = (2, 4001)  # credits exhausted
        async with relay.pair() as (producer, page):
            utterance = await producer.say(CHUNKS)
            outcome = await asyncio.wait_for(utterance.outcome(), WAIT)
            with pytest.raises(RelayError) as caught:
                await take_until(producer, lambda e: False)
            with pytest.raises(RelayError) as page_caught:
                await take_until(page, lambda e: False)
    assert isinstance(outcome, ConversationAborted)
    assert outcome.code == ErrorCode.CREDITS_EXHAUSTED
    assert caught.value.code is ErrorCode.CREDITS_EXHAUSTED
    assert page_caught.value.code is ErrorCode.CREDITS_EXHAUSTED


async def test_the_microphone_reaches_the_producer_when_forwarding_is_on() -> None:
    async with running_relay() as relay:
        session = await relay.session(forward_microphone=True)
        async with relay.pair(session) as (producer, page):
            assert producer.microphone
            for index, chunk in enumerate(CHUNKS):
                await page.send_audio(chunk, end=index == len(CHUNKS) - 1)
            heard = await take_until(producer, lambda e: isinstance(e, Microphone) and e.end)
            # the microphone is not speech: nothing went upstream, nothing came back
            assert relay.emulator.received_audio == {}
            assert page.unacked == 0 or await _acked(page)
    microphone = [e for e in heard if isinstance(e, Microphone)]
    assert [e.pcm for e in microphone] == CHUNKS
    assert [e.end for e in microphone] == [False] * (len(CHUNKS) - 1) + [True]


async def _acked(page: Any) -> bool:
    async with asyncio.timeout(WAIT):
        while page.unacked:
            await asyncio.sleep(0.01)
    return True


async def test_the_microphone_is_refused_with_a_stable_code_when_forwarding_is_off() -> None:
    async with running_relay() as relay, relay.pair() as (producer, page):
        assert not producer.microphone
        await page.send_audio(CHUNKS[0])
        with pytest.raises(RelayError) as page_caught:
            await take_until(page, lambda e: False)
        with pytest.raises(RelayError) as caught:
            await take_until(producer, lambda e: False)
        assert relay.emulator.received_audio == {}
    assert page_caught.value.code is ErrorCode.MICROPHONE_DISABLED
    assert caught.value.code is ErrorCode.MICROPHONE_DISABLED


async def test_page_and_producer_both_speak_when_the_page_allows_a_producer() -> None:
    async with running_relay() as relay:
        session = await relay.session(audioSource="browser", allowProducer=True)
        async with relay.pair(session) as (producer, page):
            assert producer.browser_speaks
            for index, chunk in enumerate(CHUNKS[:5]):
                await page.send_audio(chunk, end=index == 4)
            await take_until(page, _page_over)
            spoken = await producer.say(CHUNKS[:5])
            assert isinstance(await asyncio.wait_for(spoken.outcome(), WAIT), ConversationCompleted)
            produced = await take_until(producer, lambda e: e == spoken._outcome.result())
    started = [e for e in produced if isinstance(e, ConversationStarted)]
    assert [e.by_browser for e in started] == [True, False]
    assert len(relay.emulator.received_audio) == 2
