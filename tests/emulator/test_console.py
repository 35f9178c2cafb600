"""The emulated token routes over real HTTP: POST /v1/auth/session-token (the October 2026
route) and POST /v1/console/session-tokens (its older alias), with the same rules on both."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.emulator import Emulator, Faults
from tests.emulator.helpers import TOKEN_ROUTES, mint, open_ws, post_mint, token_url

DAY = 24 * 3600


@pytest.fixture(params=sorted(TOKEN_ROUTES))
def route(request: pytest.FixtureRequest) -> str:
    name = request.param
    assert isinstance(name, str)
    return name


def only_error(response: httpx.Response) -> dict[str, object]:
    errors = response.json()["errors"]
    assert isinstance(errors, list)
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, dict)
    assert error["status"] == response.status_code
    assert set(error) == {"id", "status", "code", "title", "detail"}
    return error


async def test_mint_returns_an_opaque_token(emu: Emulator, route: str) -> None:
    response = await post_mint(emu, {"expireAt": int(time.time()) + 600}, route=route)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # Each route answers with its own key, and only that one.
    (key,) = response.json()
    assert key == TOKEN_ROUTES[route][1]
    token = response.json()[key]
    assert isinstance(token, str)
    assert len(token) >= 32
    assert token != await mint(emu, route=route)
    assert emu.stats.tokens_minted == 2
    assert emu.stats.auth_route_requests == (2 if route == "auth" else 0)
    # A token from either route opens an ingress session.
    ws = await open_ws(emu, token)
    await ws.close()


@pytest.mark.parametrize("key", ["", "wrong-key", "emulator-api-key-but-longer"])
async def test_bad_api_key_is_401(emu: Emulator, key: str, route: str) -> None:
    response = await post_mint(emu, {"expireAt": int(time.time()) + 600}, key=key, route=route)
    assert response.status_code == 401
    error = only_error(response)
    assert error["detail"] == "invalid api key"
    assert error["title"] == "Unauthenticated"
    assert emu.stats.tokens_minted == 0


async def test_missing_api_key_header_is_401(emu: Emulator, route: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            token_url(emu, route), json={"expireAt": int(time.time()) + 60}
        )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("offset", "detail"),
    [
        (-10, "expire_at must be in the future"),
        (0, "expire_at must be in the future"),
        (DAY + 5, "expire_at must be within 24 hours"),
    ],
)
async def test_expire_at_window(offset: int, detail: str, route: str) -> None:
    now = 1_700_000_000.0
    async with Emulator(clock=lambda: now) as emu:
        response = await post_mint(emu, {"expireAt": int(now) + offset}, route=route)
        assert response.status_code == 400
        error = only_error(response)
        assert error["code"] == "INVALID_ARGUMENT"
        assert error["detail"] == detail
        # The edges of the window: just inside it on both sides is accepted.
        inside = (int(now) + 1, int(now) + DAY - 1)
        for expire_at in inside:
            assert (await post_mint(emu, {"expireAt": expire_at}, route=route)).status_code == 200


@pytest.mark.parametrize(
    "body", [None, [], "x", {}, {"expireAt": "soon"}, {"expireAt": 1.5e9}, {"expireAt": True}]
)
async def test_malformed_body_is_400(emu: Emulator, body: object, route: str) -> None:
    response = await post_mint(emu, body, route=route)
    assert response.status_code == 400
    assert only_error(response)["code"] == "INVALID_ARGUMENT"


async def test_non_json_and_oversized_bodies_are_400(emu: Emulator, route: str) -> None:
    async with httpx.AsyncClient() as client:
        url = token_url(emu, route)
        headers = {"X-Api-Key": emu.api_keys[0]}
        assert (await client.post(url, content=b"{not json", headers=headers)).status_code == 400
        huge = b'{"expireAt": 1, "pad": "' + b"x" * 100_000 + b'"}'
        assert (await client.post(url, content=huge, headers=headers)).status_code == 400


async def test_other_paths_and_methods(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(emu.console_url + "/session-tokens")).status_code == 405
        assert (await client.get(emu.api_url + "/v1/auth/session-token")).status_code == 405
        assert (await client.post(emu.api_url + "/v1/auth/other")).status_code == 404
        assert (await client.post(emu.console_url + "/other")).status_code == 404
        assert (await client.get(emu.base_url + "/healthz")).json()["emulator"] is True
        plain = await client.get(emu.websocket_url.replace("ws://", "http://"))
        assert plain.status_code == 426


async def test_console_latency_delays_the_answer(emu: Emulator) -> None:
    emu.faults.console_latency = 5.0
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(timeout=0.3) as client:
            await client.post(
                emu.console_url + "/session-tokens",
                json={"expireAt": int(time.time()) + 60},
                headers={"X-Api-Key": emu.api_keys[0]},
            )
    emu.faults.console_latency = 0.05
    assert await mint(emu)


@pytest.mark.parametrize(
    ("status", "code"), [(500, "INTERNAL"), (502, "BAD_GATEWAY"), (503, "SERVICE_UNAVAILABLE")]
)
async def test_console_status_fault(emu: Emulator, status: int, code: str, route: str) -> None:
    emu.faults.console_status = status
    for _ in range(2):
        response = await post_mint(emu, {"expireAt": int(time.time()) + 60}, route=route)
        assert response.status_code == status
        assert only_error(response)["code"] == code
    emu.faults.console_status = None
    assert await mint(emu, route=route)
    assert emu.stats.console_failures == 2


async def test_console_fail_next_recovers(emu: Emulator) -> None:
    emu.faults.console_fail_next = 2
    statuses = [
        (await post_mint(emu, {"expireAt": int(time.time()) + 60})).status_code for _ in range(4)
    ]
    assert statuses == [503, 503, 200, 200]
    assert emu.faults.console_fail_next == 0


async def test_console_fail_next_uses_console_status(emu: Emulator) -> None:
    emu.faults = Faults(console_fail_next=1, console_status=500)
    first = await post_mint(emu, {"expireAt": int(time.time()) + 60})
    assert first.status_code == 500
    # console_status still set: every later request fails with it too.
    assert (await post_mint(emu, {"expireAt": int(time.time()) + 60})).status_code == 500


async def test_console_hang_never_answers(emu: Emulator, route: str) -> None:
    emu.faults.console_hang = True
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(timeout=0.3) as client:
            await client.post(
                token_url(emu, route),
                json={"expireAt": int(time.time()) + 60},
                headers={"X-Api-Key": emu.api_keys[0]},
            )
    emu.faults.console_hang = False
    assert await mint(emu, route=route)


async def test_stop_releases_a_hanging_request() -> None:
    emu = Emulator(faults=Faults(console_hang=True))
    await emu.start()
    pending = asyncio.create_task(post_mint(emu, {"expireAt": int(time.time()) + 60}))
    await emu.wait_until(lambda: emu.stats.console_requests == 1)
    await emu.stop()
    # Either the hang is answered with a 503 or the connection is closed; never a token.
    try:
        response = await pending
    except httpx.HTTPError:
        return
    assert response.status_code == 503


async def test_console_token_fault_hands_out_the_given_token(emu: Emulator, route: str) -> None:
    used = await mint(emu)
    ws = await open_ws(emu, used)
    await ws.close()
    emu.faults.console_token = used
    assert await mint(emu, route=route) == used
    # Key and body rules still apply before it.
    assert (await post_mint(emu, {"expireAt": 1}, route=route)).status_code == 400
    emu.faults.console_token = None
    assert await mint(emu, route=route) != used
