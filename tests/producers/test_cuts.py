"""Random cuts on both sides of producer sessions (issue 10, "Done when"): the producer's and the
page's connections are aborted (TCP abort, no close frame) at random points, hundreds of times,
and nothing either side sees changes.

Several producer sessions each speak several utterances of the short fixture in 40 ms chunks.
The producer's socket is cut after random chunks while it speaks; the page's after random events
while frames stream to it. A session without cuts is the reference. For every session:

- the page: its sequenced messages are seq 1..N exactly (no loss, duplicate or reorder); per
  conversation the audio is the producer's chunks, in order, and the frames are byte for byte
  what the emulator sent for that request; the structure equals the uncut run's;
- the producer: its events are seq 1..M exactly; per utterance, the conversation started with
  its first chunk, its first frame was told, and it completed with all of its audio and frames
  given to the page; the page's comings and goings are told, one `resumed` per reconnect;
- the upstream: each utterance's audio arrived exactly once, for exactly one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from avatar_relay_client import (
    Audio,
    ConversationAborted,
    Frame,
    Interrupted,
    RelayClient,
    SessionLost,
    StateChange,
)
from avatar_relay_client.producer import (
    Browser,
    BrowserState,
    ConversationCompleted,
    ConversationStarted,
    FirstFrame,
    Producer,
    Utterance,
)
from tests.producers.conftest import AUTH, CHUNKS, PCM, WAIT, Relay, running_relay
from tests.support.relay import upstream_frames

SEED = 20_261_202
SESSIONS = 5
UTTERANCES = 6
PRODUCER_CUTS = 4  # per utterance, after random chunks
LOST_CUTS = 2  # of those, cuts that lose the chunk being written (its resend is certain)
PAGE_CUTS = 3  # per utterance, after random consumed page events
MIN_CUTS = 200

Media = Audio | Frame | ConversationAborted | Interrupted


@dataclass
class SessionRun:
    page: list[Media] = field(default_factory=list)
    produced: list[Any] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    producer_cuts: int = 0
    losses: int = 0  # producer cuts that lost the chunk being written
    lost: int = 0
    page_cuts: int = 0
    page_reconnects: int = 0
    producer_reconnects: int = 0
    resent: int = 0
    missed: int = 0


def _final(event: Media) -> bool:
    return (isinstance(event, Frame) and event.end) or isinstance(event, ConversationAborted)


async def _cut(client: RelayClient | Producer) -> None:
    """Abort the live socket; if another cut just took it down, wait for the resumed one."""
    async with asyncio.timeout(WAIT):
        while not client.drop_connection():
            await client.wait_connected()


async def _consume_page(page: RelayClient, run: SessionRun, cut_after: set[int]) -> None:
    position = 0
    async with asyncio.timeout(WAIT):
        while True:
            event = await page.next_event()
            if isinstance(event, StateChange | SessionLost):
                continue
            run.page.append(event)
            if position in cut_after:
                await _cut(page)
                run.page_cuts += 1
            position += 1
            if _final(event):
                return


async def _collect(producer: Producer, run: SessionRun) -> None:
    with contextlib.suppress(Exception):
        async for event in producer.events():
            if not isinstance(event, StateChange):
                run.produced.append(event)


@contextlib.asynccontextmanager
async def _session(relay: Relay, rng: random.Random) -> AsyncIterator[tuple[Producer, RelayClient]]:
    session = await relay.session()
    page = RelayClient(
        relay.url, headers=AUTH, session=session.answer, rng=random.Random(rng.random())
    )
    producer = Producer(relay.url, session, headers=AUTH, rng=random.Random(rng.random()))
    await page.start()
    await producer.start()
    try:
        yield producer, page
    finally:
        await producer.close()
        await page.close(bye=False)


async def _play(relay: Relay, rng: random.Random, *, cuts: bool) -> SessionRun:
    run = SessionRun()
    async with _session(relay, rng) as (producer, page):
        collector = asyncio.create_task(_collect(producer, run))
        for _ in range(UTTERANCES):
            producer_cuts = set(rng.sample(range(len(CHUNKS)), PRODUCER_CUTS)) if cuts else set()
            # page events per utterance: one echo per chunk plus about one frame per 40 ms
            page_cuts = set(rng.sample(range(2 * len(CHUNKS) - 1), PAGE_CUTS)) if cuts else set()
            consumer = asyncio.create_task(_consume_page(page, run, page_cuts))
            # some cuts lose the chunk being written; the others land just after a write,
            # where whether the server read the chunk first is up to timing
            losing = set(rng.sample(sorted(producer_cuts), LOST_CUTS)) if cuts else set()
            async with producer.utterance() as utterance:
                for index, chunk in enumerate(CHUNKS):
                    if index in losing:
                        producer.lose_next_message()
                        run.losses += 1
                    assert await utterance.send(chunk)
                    if index in producer_cuts and index not in losing:
                        await _cut(producer)
                    if index in producer_cuts:
                        run.producer_cuts += 1
            run.utterances.append(utterance)
            await consumer
            await asyncio.wait_for(utterance.outcome(), WAIT)
        async with asyncio.timeout(WAIT):
            await page.wait_connected()  # the last cut, too, ends in a resumed connection
            await producer.wait_connected()
            # the producer has heard of every one of the page's returns
            while _states(run).count(BrowserState.RESUMED) < page.stats.reconnects:
                await asyncio.sleep(0.01)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        run.page_reconnects = page.stats.reconnects
        run.producer_reconnects = producer.stats.reconnects
        run.resent = producer.stats.resent
        run.lost = producer.stats.lost
        run.missed = page.stats.missed
        assert page.stats.out_of_order == producer.stats.out_of_order == 0
    return run


def _states(run: SessionRun) -> list[BrowserState]:
    return [e.state for e in run.produced if isinstance(e, Browser)]


def _conversations(events: list[Media]) -> list[str]:
    order: list[str] = []
    for event in events:
        if event.conversation_id and event.conversation_id not in order:
            order.append(event.conversation_id)
    return order


def _page_structure(events: list[Media]) -> list[tuple[object, ...]]:
    """Per conversation, in order: its audio chunks and its frames (sizes and flags); how the two
    interleave depends on timing even without cuts (audio first is checked apart)."""
    index = {cid: n for n, cid in enumerate(_conversations(events))}
    out: list[tuple[object, ...]] = []
    for cid, n in index.items():
        mine = [e for e in events if e.conversation_id == cid]
        audio = [(e.pcm, e.first, e.end) for e in mine if isinstance(e, Audio)]
        frames = [(len(e.payload), e.end) for e in mine if isinstance(e, Frame)]
        out.append((n, audio, frames))
    return out


def _check(run: SessionRun, relay: Relay, upstream: dict[str, list[bytes]]) -> None:
    # the page: exactly once, in order
    assert [e.seq for e in run.page] == list(range(1, len(run.page) + 1))
    conversations = _conversations(run.page)
    assert conversations == [u.conversation_id for u in run.utterances]
    seen: list[str] = []
    for event in run.page:
        if not seen or seen[-1] != event.conversation_id:
            assert event.conversation_id not in seen, "conversations interleaved"
            assert isinstance(event, Audio)
            assert event.first
            seen.append(event.conversation_id)
    for cid in conversations:
        mine = [e for e in run.page if e.conversation_id == cid]
        assert _final(mine[-1])
        assert [e.pcm for e in mine if isinstance(e, Audio)] == [*CHUNKS, b""]
        assert [e.payload for e in mine if isinstance(e, Frame)] == upstream[cid]
        assert relay.emulator.received_audio[cid] == PCM

    # the producer: exactly once, in order, and each utterance's whole story
    assert [e.seq for e in run.produced] == list(range(1, len(run.produced) + 1))
    lifecycle = [e for e in run.produced if not isinstance(e, Browser)]
    expected: list[Any] = []
    for utterance in run.utterances:
        spoken = utterance.conversation_id
        assert spoken is not None
        assert utterance.first_seq is not None
        expected += [
            (ConversationStarted, spoken, utterance.first_seq),
            (FirstFrame, spoken),
            (ConversationCompleted, spoken, len(PCM) // 32, len(upstream[spoken])),
        ]
    assert [_fields(e) for e in lifecycle] == expected
    states = _states(run)
    assert states[0] is BrowserState.CONNECTED
    rest = states[1:]
    assert rest == [BrowserState.DISCONNECTED, BrowserState.RESUMED] * (len(rest) // 2)
    assert states.count(BrowserState.RESUMED) == run.page_reconnects


def _fields(event: Any) -> tuple[Any, ...]:
    match event:
        case ConversationStarted(_, cid, input_seq, by_browser):
            assert not by_browser
            return (ConversationStarted, cid, input_seq)
        case FirstFrame(_, cid):
            return (FirstFrame, cid)
        case ConversationCompleted(_, cid, audio_ms, frames):
            return (ConversationCompleted, cid, audio_ms, frames)
    raise AssertionError(f"unexpected {event!r}")


async def test_random_cuts_on_both_sides_change_nothing_either_side_sees() -> None:
    rng = random.Random(SEED)
    async with running_relay() as relay:
        reference = await _play(relay, rng, cuts=False)
        runs = await asyncio.gather(
            *(_play(relay, random.Random(rng.random()), cuts=True) for _ in range(SESSIONS))
        )
        # every utterance became exactly one upstream request: no duplicate request ids
        assert len(relay.emulator.received_audio) == (SESSIONS + 1) * UTTERANCES
        upstream = upstream_frames(relay.emulator)

    _check(reference, relay, upstream)
    assert reference.page_reconnects == reference.producer_reconnects == 0
    expected = _page_structure(reference.page)
    for run in runs:
        _check(run, relay, upstream)
        assert _page_structure(run.page) == expected
        # every cut was followed by exactly one successful resume, on each side
        assert run.producer_reconnects == run.producer_cuts
        assert run.page_reconnects == run.page_cuts
    producer_cuts = sum(run.producer_cuts for run in runs)
    page_cuts = sum(run.page_cuts for run in runs)
    assert producer_cuts == SESSIONS * UTTERANCES * PRODUCER_CUTS
    assert page_cuts == SESSIONS * UTTERANCES * PAGE_CUTS
    assert producer_cuts + page_cuts >= MIN_CUTS
    # the cuts hit data in flight: every producer chunk lost in flight had to be resent (the
    # greeting's producerAck said the server lacked it), and page messages sent while the page
    # was away had to be replayed
    assert all(run.lost == run.losses == UTTERANCES * LOST_CUTS for run in runs)
    assert all(run.resent >= run.lost for run in runs)
    assert sum(run.missed for run in runs) > 0
