"""Draining over real sockets: SIGTERM's drain lets the conversation in flight finish, takes no
new sessions or conversations, and only then tells the client to go."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from app.api.ops import drain
from app.emulator import Emulator
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    CALLER_KEY,
    SHORT_PCM,
    Peer,
    conversation_over,
    relay_settings,
    running_relay,
)
from tests.relay_api.test_flows import check_stream, sequenced


async def test_the_conversation_in_flight_finishes_and_nothing_new_starts(
    emu: Emulator, redis_url: str
) -> None:
    settings = relay_settings(emu, drain_timeout_seconds=20, redis_url=redis_url)
    async with running_relay(settings) as relay:
        body = await relay.create()
        other = await relay.create()
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.audio(SHORT_PCM[:6400])
            echo = await peer.until(lambda m: isinstance(m, p.ServerAudio))
            draining = asyncio.create_task(drain(relay.app, 25))
            await asyncio.sleep(0)
            # Readiness fails at once; no new sessions, no sockets for sessions not running here.
            ready = await relay.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["draining"]["ok"] is False
            refused = await relay.http.post(
                "/v1/relay/sessions", headers={"Authorization": f"Bearer {CALLER_KEY}"}
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "goingAway"
            with pytest.raises(InvalidStatus) as denied:
                async with Peer.open(other["url"]):
                    pass
            assert denied.value.response.status_code == 503
            # The utterance in flight completes: its END is accepted, its frames all come.
            end_seq = await peer.audio(SHORT_PCM[6400:12800], end=True)
            # The next utterance would start a new conversation: not accepted here.
            await peer.audio(SHORT_PCM[:6400])
            messages = echo + await peer.until(conversation_over, skip_control=False)
            acks = [m.seq for m in messages if isinstance(m, p.ServerAck)]
            assert max(acks) == end_seq
            stream = sequenced(messages)
            assert len(check_stream(stream)) == 1
            assert isinstance(stream[-1], p.ServerFrame)
            assert stream[-1].end
            # Then the session ends here (its state is not kept where another instance finds it).
            rest = await peer.until(lambda m: isinstance(m, p.ServerError), skip_control=False)
            assert not sequenced(rest)
            assert all(m.seq == end_seq for m in rest if isinstance(m, p.ServerAck))
            assert rest[-1] == p.ServerError("goingAway", "server is shutting down")
            assert await peer.closed() == (1001, "goingAway")
        await asyncio.wait_for(draining, 10)
        assert relay.services.sessions.live_count == 0


async def test_the_drain_timeout_bounds_a_conversation_that_never_ends(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu, drain_timeout_seconds=0.5)) as relay:
        body = await relay.create()
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.audio(SHORT_PCM[:6400])  # an utterance that is never finished
            await peer.until(lambda m: isinstance(m, p.ServerAudio))
            started = asyncio.get_running_loop().time()
            await drain(relay.app, 5)
            assert await peer.closed() == (1001, "goingAway")
            assert asyncio.get_running_loop().time() - started < 3
