"""The randomized cut test (issue 4, "Done when"): cutting the client's connection at many random
points changes nothing the consumer sees, in either direction.

Several sessions each play several utterances of the short fixture in 40 ms chunks. Their
connections are aborted (TCP abort, no close frame) after random chunks while audio is being sent
and after random events while frames stream. A run without cuts is the reference. For every
session the test proves:

- downstream: the sequenced messages reach the consumer as seq 1..N exactly (no loss, no
  duplicate, no reorder); per conversation the echoed audio is the sent audio chunk for chunk and
  the frames are byte for byte what the emulator sent for that request, in order; the structure
  (conversations in order, FIRST/END flags, counts, audio before frames) equals the uncut run's,
  with conversation ids mapped by order (they are fresh upstream request ids on every run);
- upstream: the emulator received each utterance's audio exactly once, for exactly one request.

The same runs in an `audioEcho: false` session: the relay sends no audio down (a marker and the
frames per conversation), the client yields the audio it sent, and the consumer's structure still
equals the echo reference run's: the client's own audio is given once, first, in the
conversation's id, across every cut.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from app.emulator import Emulator
from avatar_relay_client import (
    Audio,
    ConversationAborted,
    Frame,
    Interrupted,
    RelayClient,
    SessionLost,
    StateChange,
)
from tests.relay_client.conftest import AUTH, Relay, running_relay
from tests.support.relay import upstream_frames
from tests.support.servers import FIXTURES

SEED = 20_261_121
CHUNK_BYTES = 1280  # 40 ms of 16 kHz s16le
SESSIONS = 4
UTTERANCES = 8
SEND_CUTS = 4  # per utterance, after random chunks
LOST_CUTS = 2  # of those, cuts that lose the chunk being written (its resend is certain)
RECEIVE_CUTS = 4  # per utterance, after random consumed events
MIN_CUTS = 200

PCM = (FIXTURES / "short_16000.pcm").read_bytes()
CHUNKS = [PCM[i : i + CHUNK_BYTES] for i in range(0, len(PCM), CHUNK_BYTES)]

Media = Audio | Frame | ConversationAborted | Interrupted


@dataclass
class SessionRun:
    events: list[Media] = field(default_factory=list)
    cuts_while_sending: int = 0
    losses: int = 0  # cuts that lost the chunk being written
    lost: int = 0
    cuts_while_streaming: int = 0
    reconnects: int = 0
    resent: int = 0
    missed: int = 0
    received: int = 0  # sequenced messages off the socket (no echo: no audio among them)


def _final(event: Media) -> bool:
    return (isinstance(event, Frame) and event.end) or isinstance(event, ConversationAborted)


async def _cut(client: RelayClient) -> None:
    """Abort the live socket; if another cut just took it down, wait for the resumed one."""
    async with asyncio.timeout(30):
        while not client.drop_connection():
            await client.wait_connected()


async def _consume(
    client: RelayClient, run: SessionRun, cut_after: set[int], *, timeout: float = 30.0
) -> None:
    """Take events until this utterance's conversation ends, cutting after the chosen ones."""
    position = 0
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event()
            if isinstance(event, StateChange | SessionLost):
                continue
            run.events.append(event)
            if position in cut_after:
                await _cut(client)
                run.cuts_while_streaming += 1
            position += 1
            if _final(event):
                return


async def _play_session(
    relay: Relay, rng: random.Random, *, cuts: bool, echo: bool = True
) -> SessionRun:
    run = SessionRun()
    client_rng = random.Random(rng.random())
    async with RelayClient(relay.url, headers=AUTH, rng=client_rng, audio_echo=echo) as client:
        assert client.audio_echo is echo
        for _ in range(UTTERANCES):
            # Events per utterance: one echo per chunk plus about one frame per 40 ms.
            send_cuts = set(rng.sample(range(len(CHUNKS)), SEND_CUTS)) if cuts else set()
            receive_cuts = (
                set(rng.sample(range(2 * len(CHUNKS) - 1), RECEIVE_CUTS)) if cuts else set()
            )
            # Some send cuts lose the chunk being written; the others land just after a write,
            # where whether the server read the chunk first is up to timing.
            losing = set(rng.sample(sorted(send_cuts), LOST_CUTS)) if cuts else set()
            consumer = asyncio.create_task(_consume(client, run, receive_cuts))
            for index, chunk in enumerate(CHUNKS):
                if index in losing:
                    client.lose_next_message()
                    run.losses += 1
                await client.send_audio(chunk, end=index == len(CHUNKS) - 1)
                if index in send_cuts and index not in losing:
                    await _cut(client)
                if index in send_cuts:
                    run.cuts_while_sending += 1
            await consumer
        async with asyncio.timeout(30):
            await client.wait_connected()  # the last cut, too, ends in a resumed connection
        run.reconnects = client.stats.reconnects
        run.resent = client.stats.resent
        run.lost = client.stats.lost
        run.missed = client.stats.missed
        run.received = client.last_seq
        assert client.stats.out_of_order == 0
    return run


def _conversations(events: list[Media]) -> list[str]:
    order: list[str] = []
    for event in events:
        if event.conversation_id and event.conversation_id not in order:
            order.append(event.conversation_id)
    return order


def _structure(events: list[Media]) -> list[tuple[object, ...]]:
    """Per conversation, in order: its echoed audio chunks and its frames (sizes and flags).

    Audio and frames of one conversation are projected apart: how the two interleave depends on
    timing even without cuts, and the rule that matters (audio first) is checked separately.
    """
    index = {cid: n for n, cid in enumerate(_conversations(events))}
    audio: dict[int, list[tuple[bytes, bool, bool]]] = defaultdict(list)
    frames: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    other: list[tuple[object, ...]] = []
    for event in events:
        n = index.get(event.conversation_id, -1)
        if isinstance(event, Audio):
            audio[n].append((event.pcm, event.first, event.end))
        elif isinstance(event, Frame):
            frames[n].append((len(event.payload), event.end))
        else:
            other.append((type(event).__name__, n))
    return [(n, audio[n], frames[n]) for n in range(len(index))] + other


def _check_session(
    run: SessionRun, emulator: Emulator, upstream: dict[str, list[bytes]], *, echo: bool = True
) -> None:
    # Exactly once and in order at the protocol level: the consumer saw seq 1, 2, ..., N (the
    # client's own audio carries its conversation's marker's seq).
    stream = [e for e in run.events if echo or not isinstance(e, Audio) or e.first]
    assert [event.seq for event in stream] == list(range(1, len(stream) + 1))
    assert run.received == len(stream)
    conversations = _conversations(run.events)
    assert len(conversations) == UTTERANCES
    # No interleaving; audio FIRST opens each conversation; nothing follows its final frame.
    seen: list[str] = []
    for event in run.events:
        if not seen or seen[-1] != event.conversation_id:
            assert event.conversation_id not in seen, "conversations interleaved"
            assert isinstance(event, Audio)
            assert event.first
            seen.append(event.conversation_id)
    for cid in conversations:
        mine = [e for e in run.events if e.conversation_id == cid]
        assert _final(mine[-1])
        assert not any(_final(e) for e in mine[:-1])
        # Echo: the sent audio, chunk for chunk; upstream: received exactly once.
        echoed = [e.pcm for e in mine if isinstance(e, Audio)]
        assert echoed == CHUNKS
        assert emulator.received_audio[cid] == PCM
        # Frames: byte for byte what the emulator sent for this request, in order.
        assert [e.payload for e in mine if isinstance(e, Frame)] == upstream[cid]


@pytest.mark.parametrize("echo", [True, False], ids=["echo", "no-echo"])
async def test_random_cuts_change_nothing_the_consumer_sees(echo: bool) -> None:
    rng = random.Random(SEED)
    async with running_relay() as relay:
        reference = await _play_session(relay, rng, cuts=False)
        runs = await asyncio.gather(
            *(
                _play_session(relay, random.Random(rng.random()), cuts=True, echo=echo)
                for _ in range(SESSIONS)
            )
        )
        emulator = relay.emulator
        # Every utterance became exactly one upstream request: no duplicate request ids.
        assert len(emulator.received_audio) == (SESSIONS + 1) * UTTERANCES
        upstream = upstream_frames(emulator)

    _check_session(reference, emulator, upstream)
    assert reference.reconnects == 0
    expected = _structure(reference.events)
    for run in runs:
        _check_session(run, emulator, upstream, echo=echo)
        assert _structure(run.events) == expected
    sending = sum(run.cuts_while_sending for run in runs)
    streaming = sum(run.cuts_while_streaming for run in runs)
    assert sending == streaming == SESSIONS * UTTERANCES * SEND_CUTS
    assert sending + streaming >= MIN_CUTS
    # The cuts did hit data in flight both ways: every chunk lost in flight had to be resent (the
    # greeting's clientAck said the server lacked it), and messages sent while the client was
    # away had to be replayed.
    assert all(run.lost == run.losses == UTTERANCES * LOST_CUTS for run in runs)
    assert all(run.resent >= run.lost for run in runs)
    assert sum(run.missed for run in runs) > 0
    # Every cut was followed by exactly one successful resume.
    assert all(run.reconnects == run.cuts_while_sending + run.cuts_while_streaming for run in runs)


def test_cut_plan_is_large_enough() -> None:
    # The plan alone must reach the bar even before counting what actually landed.
    assert SESSIONS * UTTERANCES * (SEND_CUTS + RECEIVE_CUTS) >= MIN_CUTS
    assert len(CHUNKS) >= 40
    assert all(len(chunk) == CHUNK_BYTES for chunk in CHUNKS[:-1])
