"""A session outlives its instances: three real instances (separate processes) on one Redis,
behind deploy/nginx.conf run by nginx, and one client session through 20 drains (SIGTERM: the
conversation in flight completes, the session continues elsewhere) and 20 kills (SIGKILL: the
client resumes elsewhere once the dead instance's heartbeat expired, what it had not received
is replayed byte for byte, the conversation in flight is aborted explicitly, the next one
completes). Every killed or drained instance is replaced, as a rolling deploy replaces a pod."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from redis import asyncio as aioredis

from app.emulator import Emulator
from app.server import shutdown_budget
from app.settings import Settings
from app.store.relay_state import HEARTBEAT_TTL
from avatar_relay_client import (
    Audio,
    Backoff,
    ConversationAborted,
    Frame,
    Producer,
    RelayClient,
    SessionLost,
    StateChange,
    create_session,
)
from avatar_relay_client.producer import ConversationAborted as ProducerAborted
from avatar_relay_client.producer import ConversationCompleted as ProducerCompleted
from tests.support.cluster import AUTH, Cluster, Instance
from tests.support.relay import upstream_frames
from tests.support.servers import FIXTURES

PCM = (FIXTURES / "short_16000.pcm").read_bytes()  # 1.6 s: 41 frames, ~0.4 s at speed 4
CHUNK = 6400
DRAINS = 20
KILLS = 20
# The client's reconnect backoff in this file's sessions.
BACKOFF = Backoff(initial=0.05, maximum=0.25)
# From SIGKILL to the client's socket resumed on another instance: another instance may take the
# session once the dead one's heartbeat expired (HEARTBEAT_TTL), and the client retries at most
# BACKOFF.maximum apart. The margin is for a loaded machine: this is a bound on the takeover rule
# (a session never waits for its dead owner longer than its heartbeat), not a performance target
# (bench/results/relay_state.json times the takeover).
RESUME_BOUND = HEARTBEAT_TTL + BACKOFF.maximum + 2.0
# Beyond the server's own shutdown budget (drain, handover, uvicorn's graceful shutdown): the
# app's lifespan shutdown and the process's exit, which the budget does not cover.
EXIT_MARGIN = 10.0


@dataclass
class Conversation:
    id: str
    audio: bytearray = field(default_factory=bytearray)
    frames: list[bytes] = field(default_factory=list)
    completed: bool = False
    aborted: str | None = None


@dataclass
class Run:
    conversations: dict[str, Conversation] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    resumes: list[float] = field(default_factory=list)


async def owner(cluster: Cluster, redis: aioredis.Redis, session_id: str) -> Instance:
    name = await redis.get(f"avatar-relay:relay:lease:{session_id}")
    assert isinstance(name, bytes), "nobody holds the session"
    return cluster.by_name(name.decode())


def exit_budget(cluster: Cluster, instance: Instance) -> float:
    """How long a SIGTERM'd instance may take to exit: its own shutdown budget, plus a margin."""
    settings = Settings(_env_file=None, **cluster.settings(instance))  # type: ignore[call-arg]
    return shutdown_budget(settings) + EXIT_MARGIN


async def replace(cluster: Cluster, instance: Instance, pid: int) -> None:
    await cluster.replace(instance, pid, timeout=exit_budget(cluster, instance))


async def speak(client: RelayClient) -> None:
    for start in range(0, len(PCM), CHUNK):
        await client.send_audio(PCM[start : start + CHUNK], end=start + CHUNK >= len(PCM))


async def until(client: RelayClient, run: Run, done: str, *, timeout: float = 20.0) -> None:
    """Record events until `done`: "frame" (the newest conversation's first frame), or "end"
    (it completed or was aborted)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event()
            if isinstance(event, SessionLost):
                raise AssertionError(f"the session was lost: {event}")
            if isinstance(event, StateChange):
                if event.state == "resumed":
                    run.resumes.append(loop.time())
                continue
            if isinstance(event, Audio):
                if event.first:
                    run.conversations[event.conversation_id] = Conversation(event.conversation_id)
                    run.order.append(event.conversation_id)
                run.conversations[event.conversation_id].audio += event.pcm
                continue
            conversation = run.conversations[event.conversation_id]
            if isinstance(event, Frame):
                conversation.frames.append(event.payload)
                conversation.completed = event.end
                if done == "frame" or event.end:
                    return
            elif isinstance(event, ConversationAborted):
                conversation.aborted = event.code
                return


async def test_a_session_survives_drains_and_kills(tmp_path: Path, redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    replacing: list[asyncio.Task[None]] = []
    run = Run()
    kill_times: list[float] = []
    drained: list[str] = []
    killed: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with (
            Emulator(speed=4, record=True, frame_bytes=128) as emulator,
            Cluster(emulator, redis_url, tmp_path, drain_timeout_seconds=10).running() as cluster,
            RelayClient(cluster.url, headers=AUTH, backoff=BACKOFF) as client,
        ):
            for cycle in range(DRAINS + KILLS):
                await speak(client)
                await until(client, run, "frame")
                current = run.order[-1]
                running = await owner(cluster, redis, client.session_id)
                if cycle % 2 == 0:
                    # Drain: the conversation in flight completes, then the session moves.
                    pid = cluster.term(running)
                    await until(client, run, "end")
                    drained.append(current)
                else:
                    if cycle % 4 == 3:
                        # The client is away when the instance dies: what it misses meanwhile
                        # must come back from the saved replay buffer.
                        client.drop_connection(offline_for=0.3)
                        await asyncio.sleep(0.2)
                    kill_times.append(loop.time())
                    pid = cluster.kill(running)
                    await until(client, run, "end")
                    killed.append(current)
                replacing.append(asyncio.create_task(replace(cluster, running, pid)))
            # The session goes on: one more conversation, complete.
            await speak(client)
            await until(client, run, "end")
            final = run.conversations[run.order[-1]]
            assert final.completed
            await asyncio.gather(*replacing)
            stats = client.stats
            sent = {cid: emulator.received_audio.get(cid, b"") for cid in run.order}
            frames = upstream_frames(emulator)

        # One conversation per utterance, each told in full or aborted explicitly.
        assert len(run.order) == DRAINS + KILLS + 1
        assert len(set(run.order)) == len(run.order)
        for cid in drained:
            conversation = run.conversations[cid]
            assert conversation.completed, f"drained conversation {cid} did not complete"
            assert conversation.aborted is None
        for cid in killed:
            conversation = run.conversations[cid]
            assert conversation.completed or conversation.aborted == "connectionClosed"
        assert any(run.conversations[cid].aborted for cid in killed)
        for cid in run.order:
            conversation = run.conversations[cid]
            # Up: the utterance reached upstream exactly once; down: its echo and frames byte
            # for byte, in order, nothing twice. Of one a kill aborted, what came before the
            # abort: the first frame can come before the instance has taken all of the audio
            # (under load it often does), and the rest of an aborted utterance is discarded
            # (docs/protocol.md section 4), its echo and its upstream audio included.
            upstream = frames[cid]
            if conversation.completed:
                assert conversation.audio == PCM
                assert sent[cid] == PCM
                assert conversation.frames == upstream
            else:
                assert conversation.audio == PCM[: len(conversation.audio)]
                assert sent[cid] == PCM[: len(sent[cid])]
                assert conversation.frames == upstream[: len(conversation.frames)]
        # In order, nothing lost or repeated on the browser's stream across 40 moves.
        assert stats.out_of_order == 0
        assert stats.missed > 0  # the replay after a kill carried what the client had missed
        # Each kill: resumed on another instance within the bound.
        for killed_at in kill_times:
            after = [t for t in run.resumes if t > killed_at]
            assert after, "no resume after a kill"
            assert after[0] - killed_at < RESUME_BOUND
    finally:
        for task in replacing:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await redis.aclose()


async def page_has_all(events: list[object], cid: str, frames: dict[str, list[bytes]]) -> None:
    """Until the page has received as many frames of conversation `cid` as upstream sent."""
    while sum(isinstance(e, Frame) and e.conversation_id == cid for e in events) < len(
        frames.get(cid, [])
    ):
        await asyncio.sleep(0.02)


async def test_a_producer_session_moves_the_same_way(tmp_path: Path, redis_url: str) -> None:
    """A producer (a server-side voice agent) and its page through drains and kills: each
    utterance completes (drain) or is aborted explicitly (kill) for the producer, the page gets
    its frames byte for byte, neither stream loses or repeats anything."""
    redis = aioredis.Redis.from_url(redis_url)
    replacing: list[asyncio.Task[None]] = []
    page_events: list[object] = []
    frame_seen = asyncio.Event()
    outcomes: list[tuple[str, object]] = []
    try:
        async with (
            Emulator(speed=4, record=True, frame_bytes=128) as emulator,
            Cluster(
                emulator, redis_url, tmp_path, drain_timeout_seconds=10, log_level="info"
            ).running() as cluster,
        ):
            session = await create_session(cluster.url, headers=AUTH)
            backoff = BACKOFF
            page = RelayClient(cluster.url, headers=AUTH, session=session.answer, backoff=backoff)
            producer = Producer(cluster.url, session, headers=AUTH, backoff=backoff)
            await page.start()
            await producer.start()

            async def watch_page() -> None:
                while True:
                    event = await page.next_event()
                    page_events.append(event)
                    if isinstance(event, Frame):
                        frame_seen.set()

            watcher = asyncio.create_task(watch_page())
            chunks = [PCM[i : i + CHUNK] for i in range(0, len(PCM), CHUNK)]
            for cycle in range(6):
                frame_seen.clear()
                utterance = await producer.say(chunks)
                await asyncio.wait_for(frame_seen.wait(), 20)
                running = await owner(cluster, redis, session.session_id)
                kind = "drain" if cycle % 2 == 0 else "kill"
                pid = cluster.term(running) if kind == "drain" else cluster.kill(running)
                outcomes.append((kind, await asyncio.wait_for(utterance.outcome(), 20)))
                replacing.append(asyncio.create_task(replace(cluster, running, pid)))
            last = await producer.say(chunks)
            final = await asyncio.wait_for(last.outcome(), 20)
            await asyncio.gather(*replacing)
            frames = upstream_frames(emulator)
            if isinstance(final, ProducerCompleted):
                # The producer's COMPLETED and the page's last frame leave on two sockets; the
                # page may still be reading it. Bounded: a frame that never comes still fails.
                await asyncio.wait_for(page_has_all(page_events, final.conversation_id, frames), 10)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            assert page.stats.out_of_order == 0
            assert producer.stats.out_of_order == 0
            await producer.close()
            await page.close()

        assert isinstance(final, ProducerCompleted)
        for kind, outcome in outcomes:
            if kind == "drain":
                assert isinstance(outcome, ProducerCompleted), outcome
            else:
                assert isinstance(outcome, ProducerCompleted | ProducerAborted), outcome
                if isinstance(outcome, ProducerAborted):
                    assert outcome.code == "connectionClosed"
        assert any(isinstance(o, ProducerAborted) for _, o in outcomes)
        seen: dict[str, list[bytes]] = {}
        for event in page_events:
            if isinstance(event, Frame):
                seen.setdefault(event.conversation_id, []).append(event.payload)
        for cid, payloads in seen.items():
            assert payloads == frames[cid][: len(payloads)]
        completed = [o for _, o in [*outcomes, ("", final)] if isinstance(o, ProducerCompleted)]
        for outcome in completed:
            assert seen[outcome.conversation_id] == frames[outcome.conversation_id]
    finally:
        for task in replacing:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await redis.aclose()
