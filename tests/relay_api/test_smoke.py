from __future__ import annotations

from app.relay import protocol as p
from tests.relay_api.conftest import SHORT_PCM, Peer, Relay, final_frame


async def test_one_conversation(relay: Relay) -> None:
    created = await relay.create()
    async with Peer.open(created["url"]) as peer:
        welcome = await peer.hello()
        assert welcome.session_id == created["sessionId"]
        await peer.utterance(SHORT_PCM)
        messages = await peer.until(final_frame)
    first = messages[0]
    assert isinstance(first, p.ServerAudio)
    assert first.first
