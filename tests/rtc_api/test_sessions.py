"""RTC sessions end to end against the emulator over real sockets: the room, the tokens as
LiveKit's own verifier reads them, the ingress session with LiveKit egress, and the audio the
avatar publishes into the room."""

from __future__ import annotations

import time
from typing import Any

from livekit.api import TokenVerifier
from prometheus_client.parser import text_string_to_metric_families

from app.emulator import DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET, Emulator
from app.errors import ErrorCode
from app.rtc.core import Kind
from tests.rtc_api.conftest import (
    AUTH,
    OTHER_KEY,
    PCM,
    Listener,
    Rtc,
    rtc_settings,
    running_rtc,
)

VERIFIER = TokenVerifier(DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_a_session_end_to_end(emu: Emulator, rtc: Rtc) -> None:
    created = await rtc.create(identity="visitor-1", name="Visitor")
    room_name = created["roomName"]
    # The room exists in LiveKit, made through its RoomService.
    room = emu.livekit.rooms[room_name]
    assert room.created_by_api
    assert room.empty_timeout == 300
    assert ("CreateRoom", 200) in emu.livekit.calls
    assert created["url"] == emu.livekit_url
    # The browser's token, read by livekit-api's verifier.
    claims = VERIFIER.verify(created["token"])
    assert (claims.identity, claims.name) == ("visitor-1", "Visitor")
    video = claims.video
    assert video is not None
    assert (video.room_join, video.room) == (True, room_name)
    assert video.can_publish_sources == ["microphone"]
    assert video.can_subscribe is True
    assert video.can_publish_data is False
    assert not video.room_create
    assert not video.room_admin
    assert abs(created["tokenExpiresAt"] - (time.time() + 900)) < 5
    # The ingress session is configured with LiveKit egress, its token made as the plugin does.
    (connection_id, egress) = next(iter(emu.egress_configs.items()))
    assert egress.url == emu.livekit_url
    assert egress.room_name == room_name
    assert egress.publisher_id == created["avatarIdentity"] == "spatialreal-avatar"
    assert dict(egress.extra_attributes) == {"lk.publish_on_behalf": "avatar-relay-agent"}
    assert egress.idle_timeout == 120
    assert not egress.api_key
    assert not egress.api_secret
    publisher = VERIFIER.verify(egress.api_token)
    assert (publisher.kind, publisher.identity) == ("agent", "spatialreal-avatar")
    assert publisher.attributes == {"lk.publish_on_behalf": "avatar-relay-agent"}
    grants = publisher.video
    assert grants is not None
    assert (grants.room_join, grants.room) == (True, room_name)
    assert grants.can_subscribe is False
    assert grants.can_publish_data is True
    assert sorted(grants.can_publish_sources or []) == ["camera", "microphone"]
    # The avatar is in the room, as an agent publishing on behalf of the agent identity.
    avatar = room.participants["spatialreal-avatar"]
    assert avatar.kind == "agent"
    assert avatar.connection_id == connection_id

    session = rtc.session(created["sessionId"])
    listener = Listener(session)
    sent: dict[str, bytes] = {}
    for utterance in (PCM, PCM[: len(PCM) // 2]):
        req_id = session.audio(utterance[:3200])
        assert req_id is not None
        assert session.audio(utterance[3200:]) == req_id  # the same request until END
        session.end()
        sent[req_id] = utterance
        await listener.event(Kind.ENDED, req_id)
    assert len(set(sent)) == 2
    for req_id in sent:
        assert listener.kinds(req_id) == [Kind.STARTED, Kind.PLAYING, Kind.ENDED]
    # Each request's playout went into the room, in full.
    await emu.wait_until(
        lambda: len(room.publications) == 2 and all(p.ended for p in room.publications)
    )
    assert room.published_audio() == sent
    # The emulator repeats every end; each was dropped after the first.
    await emu.wait_until(lambda: session.core.duplicates >= 2)
    scraped = samples((await rtc.http.get("/metrics")).text)
    assert scraped[("avatar_relay_rtc_duplicate_signals_total", ())] >= 2
    assert scraped[("avatar_relay_rtc_requests_total", (("outcome", "ended"),))] == 2
    assert scraped[("avatar_relay_rtc_sessions_active", ())] == 1
    # Ending it: the avatar leaves and the room is deleted.
    response = await rtc.delete(created["sessionId"])
    assert response.status_code == 204
    assert room_name in emu.livekit.deleted
    assert room_name not in emu.livekit.rooms
    assert listener.kinds()[-1] is Kind.CLOSED
    assert (await rtc.delete(created["sessionId"])).json()["error"]["code"] == "sessionNotFound"
    await emu.wait_until(lambda: emu.stats.connections_active == 0)
    await listener.aclose()


async def test_only_the_creator_can_end_it(rtc: Rtc) -> None:
    created = await rtc.create()
    other = await rtc.delete(created["sessionId"], key=OTHER_KEY)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "sessionNotFound"
    assert (await rtc.delete(created["sessionId"])).status_code == 204


async def test_a_room_named_by_the_caller_is_used_and_kept(emu: Emulator, rtc: Rtc) -> None:
    created = await rtc.create(roomName="support-42", agentIdentity="agent-7")
    assert created["roomName"] == "support-42"
    assert created["agentIdentity"] == "agent-7"
    participant = emu.livekit.rooms["support-42"].participants["spatialreal-avatar"]
    assert participant.attributes == {"lk.publish_on_behalf": "agent-7"}
    assert (await rtc.delete(created["sessionId"])).status_code == 204
    assert "support-42" in emu.livekit.rooms  # not ours to delete
    assert not emu.livekit.rooms["support-42"].participants  # but the avatar left


async def test_bad_requests_are_refused_with_a_code(rtc: Rtc) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"identity": "spatialreal-avatar"}, "identity"),
        ({"roomName": "a b"}, "roomName"),
        ({"sampleRate": 12345}, "sampleRate"),
    ]
    for body, words in cases:
        response = await rtc.post(**body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == "invalidRequest"
        assert words in error["message"]
    denied = await rtc.post(avatarId="someone-else")
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "avatarNotAllowed")


async def test_without_livekit_settings_rtc_is_not_configured(emu: Emulator) -> None:
    settings = rtc_settings(emu, livekit_url=None, livekit_api_key=None, livekit_api_secret=None)
    async with running_rtc(settings) as rtc:
        created = await rtc.post(withSessionToken=True)
        assert created.status_code == 501
        assert created.json()["error"]["code"] == "rtcNotConfigured"
        assert "LIVEKIT_URL" in created.json()["error"]["message"]
        deleted = await rtc.delete("rtc_anything")
        assert (deleted.status_code, deleted.json()["error"]["code"]) == (501, "rtcNotConfigured")
        token = await rtc.http.post("/v1/rtc/sessions/rtc_anything/tokens", headers=AUTH)
        assert (token.status_code, token.json()["error"]["code"]) == (501, "rtcNotConfigured")
        unauthenticated = await rtc.http.post("/v1/rtc/sessions")
        assert unauthenticated.status_code == 401  # authentication still comes first
    assert emu.stats.tokens_minted == 0  # refused before a session token was spent


async def test_livekit_failures_have_their_codes(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu, livekit_api_secret="w" * 40)) as rtc:
        rejected = await rtc.post()
        assert (rejected.status_code, rejected.json()["error"]["code"]) == (
            502,
            "rtcCredentialsRejected",
        )
    async with running_rtc(rtc_settings(emu)) as rtc:
        emu.livekit.fail_status = 503
        unavailable = await rtc.post()
        assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (
            503,
            "rtcUnavailable",
        )
    assert emu.stats.connections_opened == 0  # no ingress session without a room


async def test_a_refused_ingress_session_leaves_no_room(emu: Emulator) -> None:
    # Allowed here, unknown to SpatialReal: the ingress refuses the upgrade.
    async with running_rtc(rtc_settings(emu, avatar_allowlist=["ghost"])) as rtc:
        response = await rtc.post(avatarId="ghost")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "avatarNotFound"
        assert [name for name, _ in emu.livekit.calls] == ["CreateRoom", "DeleteRoom"]
        assert emu.livekit.rooms == {}
        assert rtc.services.rtc.live_count == 0
        # The refusal released its place: the principal's limit is untouched.
        assert (await rtc.post()).status_code == 201


async def test_shutdown_ends_every_session_and_deletes_its_room(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu)) as rtc:
        first = await rtc.create()
        kept = await rtc.create(roomName="theirs")
        session = rtc.session(first["sessionId"])
        assert emu.livekit.rooms.keys() == {first["roomName"], "theirs"}
    assert session.close_code is ErrorCode.GOING_AWAY
    assert list(emu.livekit.rooms) == [kept["roomName"]]
    assert not emu.livekit.rooms["theirs"].participants
    await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_a_reloaded_page_gets_a_new_token_for_the_same_room(rtc: Rtc) -> None:
    created = await rtc.create(identity="visitor-9")
    path = f"/v1/rtc/sessions/{created['sessionId']}/tokens"
    again = await rtc.http.post(path, headers=AUTH)
    assert again.status_code == 201, again.text
    assert again.headers["cache-control"] == "no-store"
    body = again.json()
    assert (body["roomName"], body["identity"]) == (created["roomName"], "visitor-9")
    claims = VERIFIER.verify(body["token"])
    assert claims.identity == "visitor-9"
    assert claims.video is not None
    assert claims.video.room == created["roomName"]
    assert claims.video.can_publish_sources == ["microphone"]
    second = await rtc.http.post(path, json={"identity": "viewer-2", "name": "Two"}, headers=AUTH)
    assert VERIFIER.verify(second.json()["token"]).identity == "viewer-2"
    avatar = await rtc.http.post(path, json={"identity": "spatialreal-avatar"}, headers=AUTH)
    assert avatar.status_code == 400
    foreign = await rtc.http.post(path, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, "sessionNotFound")
    assert (await rtc.delete(created["sessionId"])).status_code == 204
    gone = await rtc.http.post(path, headers=AUTH)
    assert gone.status_code == 404
