"""POST /v1/relay/sessions and /tickets: shapes, auth, validation, ownership, limits, tickets."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from app.emulator import Emulator
from app.emulator.state import TokenCheck
from app.errors import AppError, ErrorCode
from app.store import MemoryStore
from app.tickets import TicketService
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    CALLER_KEY,
    OTHER_KEY,
    Peer,
    Relay,
    relay_settings,
    running_relay,
)


async def test_create_answers_the_documented_shape(relay: Relay) -> None:
    response = await relay.http.post(
        "/v1/relay/sessions",
        json={"avatarId": "emulator-avatar", "sampleRate": 24000},
        headers={"Authorization": f"Bearer {CALLER_KEY}"},
    )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "sessionId",
        "ticket",
        "url",
        "sampleRate",
        "avatarId",
        "resumeWindowSeconds",
        "ticketTtlSeconds",
        "appId",
        "audioSource",
        "forwardMicrophone",
        "allowProducer",
        "audioEcho",
    }
    # a browser-fed session, accepting no producer: no producer credential; its audio echoed
    assert (
        body["audioSource"],
        body["forwardMicrophone"],
        body["allowProducer"],
        body["audioEcho"],
    ) == ("browser", False, False, True)
    assert body["appId"] == "emulator-app"
    assert body["sampleRate"] == 24000
    assert body["avatarId"] == "emulator-avatar"
    assert body["resumeWindowSeconds"] == 30
    url = urlsplit(body["url"])
    assert url.scheme == "ws"
    assert url.netloc == urlsplit(relay.url).netloc
    assert url.path == "/v1/relay"
    assert parse_qs(url.query) == {"session": [body["sessionId"]], "ticket": [body["ticket"]]}
    assert len(body["ticket"]) >= 43


async def test_a_session_can_come_with_a_session_token(relay: Relay, emu: Emulator) -> None:
    # One call hands the page both the relay session and the web SDK's credential: a real,
    # unused token of this app, minted by the console (the emulator checks it as SpatialReal).
    body = await relay.create(withSessionToken=True)
    assert emu.tokens.check(body["sessionToken"], body["appId"]) is TokenCheck.OK
    assert body["appId"] == "emulator-app"
    assert abs(body["sessionTokenExpireAt"] - (time.time() + 3600)) < 30
    plain = await relay.create()
    assert "sessionToken" not in plain
    assert "sessionTokenExpireAt" not in plain
    # The session itself works as usual (its upstream connection mints its own token).
    async with Peer.open(body["url"]) as peer:
        welcome = await peer.hello()
    assert welcome.session_id == body["sessionId"]


async def test_no_session_is_left_behind_when_the_token_cannot_be_had(
    relay: Relay, emu: Emulator
) -> None:
    emu.faults.console_status = 503
    response = await relay.http.post(
        "/v1/relay/sessions",
        json={"withSessionToken": True},
        headers={"Authorization": f"Bearer {CALLER_KEY}"},
    )
    assert response.status_code in (502, 503), response.text
    assert response.json()["error"]["code"] in ("serverError", "upstreamUnavailable")
    assert relay.services.sessions.live_count == 0


async def test_defaults_come_from_settings(relay: Relay) -> None:
    body = await relay.create()
    assert body["sampleRate"] == 16000
    assert body["avatarId"] == "emulator-avatar"


async def test_public_url_sets_the_socket_url(emu: Emulator) -> None:
    settings = relay_settings(emu, public_url="https://relay.example.com/base/")
    async with running_relay(settings) as relay:
        body = await relay.create()
    assert body["url"].startswith("wss://relay.example.com/base/v1/relay?session=")


async def test_needs_authentication(relay: Relay) -> None:
    response = await relay.http.post("/v1/relay/sessions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    response = await relay.http.post("/v1/relay/sessions/rs_x/tickets")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"avatarId": "someone-else"}, 403, "avatarNotAllowed"),
        ({"sampleRate": 12345}, 400, "invalidRequest"),
        ({"sampleRate": "fast"}, 400, "invalidRequest"),
        ({"unexpected": 1}, 400, "invalidRequest"),
    ],
)
async def test_rejects_bad_requests(
    relay: Relay, body: dict[str, object], status: int, code: str
) -> None:
    response = await relay.http.post(
        "/v1/relay/sessions", json=body, headers={"Authorization": f"Bearer {CALLER_KEY}"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert relay.services.sessions.live_count == 0


async def test_tickets_only_for_the_sessions_owner(relay: Relay) -> None:
    body = await relay.create()
    mine = await relay.ticket(body["sessionId"])
    assert mine.status_code == 201
    assert mine.headers["cache-control"] == "no-store"
    assert mine.json()["sessionId"] == body["sessionId"]
    assert mine.json()["ticket"] != body["ticket"]
    theirs = await relay.ticket(body["sessionId"], key=OTHER_KEY)
    unknown = await relay.ticket("rs_doesnotexist")
    # Someone else's session and a session that never existed look the same.
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "sessionNotFound"


async def test_no_tickets_for_an_ended_session(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.send(p.Bye())
        assert await peer.closed() == (1000, "bye")
    response = await relay.ticket(body["sessionId"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "sessionClosed"


async def test_per_principal_session_limit(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu, max_sessions_per_principal=2)) as relay:
        first = await relay.create()
        await relay.create()
        refused = await relay.http.post(
            "/v1/relay/sessions", headers={"Authorization": f"Bearer {CALLER_KEY}"}
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "sessionLimit"
        # Another principal has its own budget.
        await relay.create(key=OTHER_KEY)
        # Ending a session frees its slot.
        async with Peer.open(first["url"]) as peer:
            await peer.hello()
            await peer.send(p.Bye())
            await peer.closed()
        await relay.services.sessions.settled()
        await relay.create()


async def test_global_session_limit(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu, max_sessions_global=2)) as relay:
        await relay.create()
        await relay.create(key=OTHER_KEY)
        refused = await relay.http.post(
            "/v1/relay/sessions", headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "sessionLimit"


# --- the ticket service on its own (time is the store's clock) ---


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_tickets_are_single_use_bound_short_lived_and_stored_hashed() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    tickets = TicketService(store, ttl_seconds=60)
    ticket = await tickets.issue("rs_a", "alice")
    # Stored under its digest; the ticket itself is nowhere in the store.
    assert await store.get("relay:ticket:" + hashlib.sha256(ticket.encode()).hexdigest())
    assert ticket not in repr(store.__dict__)
    grant = await tickets.redeem("rs_a", ticket)
    assert (grant.session_id, grant.principal_id) == ("rs_a", "alice")
    with pytest.raises(AppError) as used:
        await tickets.redeem("rs_a", ticket)
    assert used.value.code is ErrorCode.TICKET_INVALID

    other = await tickets.issue("rs_a", "alice")
    with pytest.raises(AppError) as wrong_session:
        await tickets.redeem("rs_b", other)
    assert wrong_session.value.code is ErrorCode.TICKET_INVALID
    assert ticket not in str(wrong_session.value)
    with pytest.raises(AppError):  # consumed by the wrong-session attempt
        await tickets.redeem("rs_a", other)

    late = await tickets.issue("rs_a", "alice")
    clock.now += 61
    with pytest.raises(AppError) as expired:
        await tickets.redeem("rs_a", late)
    assert expired.value.code is ErrorCode.TICKET_INVALID

    for junk in ("", "x" * 500, "tické"):
        with pytest.raises(AppError):
            await tickets.redeem("rs_a", junk)
