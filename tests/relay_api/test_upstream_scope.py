"""The whole server against the emulator: one avatar's upstream trouble stays that avatar's, and
upstream messages the relay has no use for pass by without harm."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.emulator import Emulator, Faults
from app.proto import message_pb2
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    AVATAR,
    CALLER_KEY,
    SHORT_PCM,
    Peer,
    conversation_over,
    final_frame,
    relay_settings,
    running_relay,
)
from tests.support.relay import upstream_frames

HEALTHY = "healthy-avatar"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(
        speed=50, record=True, frame_bytes=256, avatars=(AVATAR, HEALTHY), playback_control=True
    ) as emulator:
        yield emulator


async def test_one_avatars_failing_upgrades_do_not_take_the_region_down(emu: Emulator) -> None:
    settings = relay_settings(emu, avatar_allowlist=[HEALTHY], breaker_failure_threshold=3)
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=503))
    async with running_relay(settings) as relay:
        for _ in range(3):  # each session connects upstream at once, and fails
            await relay.create()
        await emu.wait_until(lambda: emu.stats.upgrades_rejected == 3)
        # The region's only console still mints for callers ...
        minted = await relay.http.post(
            "/v1/session-tokens", headers={"Authorization": f"Bearer {CALLER_KEY}"}
        )
        assert minted.status_code == 201, minted.text
        # ... and another avatar's conversations go through in the same region.
        body = await relay.create(avatarId=HEALTHY)
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM[:12800])
            messages = await peer.until(conversation_over)
        assert final_frame(messages[-1])
        # The failing avatar is skipped for the cool-down: no more tokens spent on it.
        tokens = emu.stats.tokens_minted
        failing = await relay.create()
        async with Peer.open(failing["url"]) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM[:6400])
            aborted = (await peer.until(conversation_over))[-1]
        assert isinstance(aborted, p.ConversationAborted)
        assert aborted.code == "upstreamUnavailable"
        assert emu.stats.tokens_minted == tokens
        assert emu.stats.upgrades_rejected == 3


async def test_playback_states_are_ignored_and_frames_pass_byte_for_byte(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu)) as relay:
        body = await relay.create()
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM)
            messages = await peer.until(conversation_over)
    frames = [m for m in messages if isinstance(m, p.ServerFrame)]
    assert final_frame(messages[-1])
    (sent,) = upstream_frames(emu).values()
    assert [f.payload for f in frames] == sent
    # The emulator declared playback control and reported PLAYING / ENDED along the way.
    states = 0
    for raw_messages in emu.sent.values():
        for raw in raw_messages:
            message = message_pb2.Message()
            message.ParseFromString(raw)
            states += message.type == message_pb2.MESSAGE_SERVER_PLAYBACK_STATE
    assert states >= 2
