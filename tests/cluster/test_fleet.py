"""A real fleet: three instances (separate processes) on Redis behind deploy/nginx.conf."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.emulator import Emulator
from avatar_relay_client import ErrorCode, Frame, RelayClient, RelayError, SessionLost
from tests.support.cluster import AUTH, Cluster, Instance
from tests.support.servers import FIXTURES

PCM = (FIXTURES / "short_16000.pcm").read_bytes()
CHUNK = 6400


async def owner(cluster: Cluster) -> Instance:
    """The instance running the (only) live session."""
    async with httpx.AsyncClient(timeout=5) as http:
        for instance in cluster.instances:
            text = (await http.get(instance.url + "/metrics")).text
            if "avatar_relay_sessions_active 1.0" in text:
                return instance
    raise AssertionError("no instance runs the session")


async def test_sigterm_lets_the_conversation_finish(tmp_path: Path, redis_url: str) -> None:
    async with (
        Emulator(speed=5, record=True, frame_bytes=256) as emulator,
        Cluster(emulator, redis_url, tmp_path, drain_timeout_seconds=20).running() as cluster,
        RelayClient(cluster.url, headers=AUTH) as client,
    ):
        await client.send_audio(PCM[:CHUNK])
        running = await owner(cluster)
        cluster.term(running)
        await asyncio.sleep(0.1)
        for start in range(CHUNK, len(PCM), CHUNK):
            await client.send_audio(PCM[start : start + CHUNK], end=start + CHUNK >= len(PCM))
        frames = []
        async with asyncio.timeout(30):
            while True:
                event = await client.next_event()
                if isinstance(event, Frame):
                    frames.append(event)
                    if event.end:
                        break
        assert frames
        # Without durable state the session cannot move: the client is told to start anew.
        events: list[object] = []

        async def rest() -> None:
            async with asyncio.timeout(30):
                while True:
                    events.append(await client.next_event())

        with pytest.raises(RelayError) as caught:
            await rest()
        assert caught.value.code is ErrorCode.GOING_AWAY
        assert events[-1] == SessionLost(ErrorCode.GOING_AWAY, caught.value.message)
        # uvicorn ends a SIGTERM'd server by re-raising the signal once it has shut down.
        assert await cluster.wait_exited(running) in (0, -15)
