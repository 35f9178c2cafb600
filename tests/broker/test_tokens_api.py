"""POST /v1/session-tokens over real sockets, against emulated SpatialReal regions."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.emulator import Emulator
from app.emulator.state import TokenCheck
from app.errors import ErrorCode
from tests.broker.conftest import (
    CALLER_KEY,
    broker_settings,
    error_code,
    running_broker,
    unique,
)
from tests.support.servers import free_port, running_app


async def test_mints_a_real_single_use_token(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        before = int(time.time())
        response = await broker.mint()
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"sessionToken", "expireAt", "appId", "region"}
    assert body["appId"] == emu.app_id
    assert body["region"] == "ap-northeast"
    assert before + 3600 <= body["expireAt"] <= int(time.time()) + 3600
    assert emu.tokens.check(body["sessionToken"], emu.app_id) is TokenCheck.OK
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]


async def test_every_call_gets_its_own_token(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        responses = await asyncio.gather(*(broker.mint() for _ in range(20)))
    tokens = {r.json()["sessionToken"] for r in responses}
    assert all(r.status_code == 201 for r in responses)
    assert len(tokens) == 20


async def test_ttl_policy_bounds(emu: Emulator) -> None:
    settings = broker_settings(
        emu, token_ttl_min_seconds=120, token_ttl_default_seconds=600, token_ttl_max_seconds=900
    )
    async with running_broker(settings) as broker:
        at_min = await broker.mint({"ttlSeconds": 120})
        at_max = await broker.mint({"ttlSeconds": 900})
        default = await broker.mint({})
        too_short = await broker.mint({"ttlSeconds": 119})
        too_long = await broker.mint({"ttlSeconds": 901})
        not_int = await broker.mint({"ttlSeconds": "soon"})
        unknown_field = await broker.mint({"ttlSeconds": 300, "expireAt": 1})
        not_json = await broker.client.post(
            "/v1/session-tokens",
            content=b"{nope",
            headers={"Authorization": f"Bearer {CALLER_KEY}", "Content-Type": "application/json"},
        )
    now = int(time.time())
    assert at_min.status_code == at_max.status_code == default.status_code == 201
    assert abs(at_min.json()["expireAt"] - (now + 120)) <= 5
    assert abs(at_max.json()["expireAt"] - (now + 900)) <= 5
    assert abs(default.json()["expireAt"] - (now + 600)) <= 5
    for bad in (too_short, too_long, not_int, unknown_field, not_json):
        assert bad.status_code == 400
        assert error_code(bad) == "invalidRequest"
    assert "between 120 and 900" in too_short.json()["error"]["message"]
    assert emu.stats.tokens_minted == 3


async def test_idempotent_retry_returns_the_same_answer(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        key = {"Idempotency-Key": unique("idem")}
        first = await broker.mint({"ttlSeconds": 300}, headers=key)
        again = await broker.mint({"ttlSeconds": 300}, headers=key)
        other = await broker.mint({"ttlSeconds": 300}, headers={"Idempotency-Key": unique("i")})
        changed = await broker.mint({"ttlSeconds": 400}, headers=key)
        bad_key = await broker.mint(headers={"Idempotency-Key": "x" * 256})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.json()["sessionToken"] != first.json()["sessionToken"]
    assert changed.status_code == 422
    assert error_code(changed) == "idempotencyKeyReused"
    assert bad_key.status_code == 400
    assert emu.stats.tokens_minted == 2


async def test_idempotency_is_scoped_to_the_caller(emu: Emulator) -> None:
    second_key = "second-caller-key-abcdefghijklmnop"
    settings = broker_settings(emu, auth_api_keys=[SecretStr(CALLER_KEY), SecretStr(second_key)])
    async with running_broker(settings) as broker:
        key = {"Idempotency-Key": "shared-key"}
        mine = await broker.mint(headers=key)
        theirs = await broker.mint(key=second_key, headers=key)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["sessionToken"] != theirs.json()["sessionToken"]


async def test_concurrent_duplicates_never_mint_twice(emu: Emulator, redis_url: str) -> None:
    emu.faults.console_latency = 1.0  # keeps the first request in flight while the others arrive
    settings = broker_settings(emu, redis_url=redis_url)
    async with running_broker(settings) as a, running_broker(settings) as b:
        key = {"Idempotency-Key": unique("dup")}
        first = asyncio.create_task(a.mint(headers=key))
        while emu.stats.console_requests == 0:  # the first request has reached the console
            await asyncio.sleep(0.01)
        duplicates = await asyncio.gather(*(x.mint(headers=key) for x in (a, b, a, b)))
        winner = await first
        emu.faults.console_latency = 0
        settled = await b.mint(headers=key)
    assert winner.status_code == 201
    for conflict in duplicates:
        assert conflict.status_code == 409
        assert error_code(conflict) == "requestInProgress"
        assert conflict.headers["retry-after"] == "1"
    assert settled.status_code == 201
    assert settled.json() == winner.json()
    assert emu.stats.tokens_minted == 1


async def test_failed_mint_is_not_remembered(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        key = {"Idempotency-Key": unique("retry")}
        emu.faults.console_fail_next = 1
        failed = await broker.mint(headers=key)
        retried = await broker.mint(headers=key)
    assert failed.status_code == 502
    assert retried.status_code == 201


# --- regional fallback and circuit breakers ---


async def test_falls_back_when_primary_answers_5xx(emu: Emulator, emu2: Emulator) -> None:
    emu.faults.console_status = 503
    async with running_broker(broker_settings(emu, emu2)) as broker:
        response = await broker.mint()
    assert response.status_code == 201
    assert response.json()["region"] == "us-west"
    assert emu2.tokens.check(response.json()["sessionToken"], emu.app_id) is TokenCheck.OK
    assert emu.stats.console_requests == 1


async def test_falls_back_when_primary_hangs(emu: Emulator, emu2: Emulator) -> None:
    emu.faults.console_hang = True
    async with running_broker(broker_settings(emu, emu2, upstream_request_timeout=0.5)) as broker:
        response = await broker.mint()
    assert response.status_code == 201
    assert response.json()["region"] == "us-west"


async def test_falls_back_when_primary_is_unreachable(emu: Emulator) -> None:
    settings = broker_settings(emu, emu)
    dead = f"http://127.0.0.1:{free_port()}/v1/console"
    settings = settings.model_copy(
        update={
            "spatialreal_console_urls": {**settings.spatialreal_console_urls, "ap-northeast": dead}
        }
    )
    async with running_broker(settings) as broker:
        response = await broker.mint()
    assert response.status_code == 201
    assert response.json()["region"] == "us-west"


async def test_a_4xx_is_not_retried_elsewhere(emu: Emulator, emu2: Emulator) -> None:
    emu.faults.console_status = 402
    async with running_broker(broker_settings(emu, emu2)) as broker:
        response = await broker.mint()
    assert response.status_code == 502
    assert error_code(response) == "billingRequired"
    assert emu2.stats.console_requests == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_then_probes_half_open(emu: Emulator, emu2: Emulator) -> None:
    emu.faults.console_status = 500
    settings = broker_settings(emu, emu2, breaker_failure_threshold=2, breaker_cooldown_seconds=30)
    async with running_broker(settings) as broker:
        clock = FakeClock()
        broker.services.console.clock = clock
        regions = [(await broker.mint()).json()["region"] for _ in range(4)]
        # Two failures opened the primary's breaker: the last two calls skipped it.
        assert regions == ["us-west"] * 4
        assert emu.stats.console_requests == 2

        clock.now += 31  # cool-down over: half-open, one probe goes to the primary
        probe = await broker.mint()
        assert probe.json()["region"] == "us-west"
        assert emu.stats.console_requests == 3  # the probe failed: open again

        clock.now += 10
        assert (await broker.mint()).json()["region"] == "us-west"
        assert emu.stats.console_requests == 3

        emu.faults.console_status = None  # the primary recovers
        clock.now += 31
        recovered = await broker.mint()
        assert recovered.json()["region"] == "ap-northeast"
        assert (await broker.mint()).json()["region"] == "ap-northeast"


async def test_every_region_open_is_503_with_retry_after(emu: Emulator, emu2: Emulator) -> None:
    emu.faults.console_status = 503
    emu2.faults.console_status = 503
    settings = broker_settings(emu, emu2, breaker_failure_threshold=1, breaker_cooldown_seconds=30)
    async with running_broker(settings) as broker:
        broker.services.console.clock = FakeClock()
        first = await broker.mint()
        second = await broker.mint()
    assert first.status_code == 502
    assert error_code(first) == "serverError"
    assert second.status_code == 503
    assert error_code(second) == "upstreamUnavailable"
    assert second.headers["retry-after"] == "30"
    assert emu.stats.console_requests == emu2.stats.console_requests == 1


# --- every upstream failure keeps its stable code ---


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        (400, "upstreamError", 502),
        # our own SpatialReal key is wrong: the operator's problem, not the caller's
        (401, "upstreamCredentialsRejected", 502),
        (403, "upstreamCredentialsRejected", 502),
        (402, "billingRequired", 502),
        (404, "appIDUnrecognized", 502),
        (429, "concurrencyLimit", 503),
        (500, "serverError", 502),
        (503, "serverError", 502),
    ],
)
async def test_upstream_errors_are_mapped(emu: Emulator, status: int, code: str, http: int) -> None:
    emu.faults.console_status = status
    async with running_broker(broker_settings(emu)) as broker:
        response = await broker.mint()
    assert response.status_code == http
    assert error_code(response) == code
    assert f"HTTP {status}" in response.json()["error"]["message"]


async def test_hang_and_unreachable_are_connection_failed(emu: Emulator) -> None:
    emu.faults.console_hang = True
    async with running_broker(broker_settings(emu, upstream_request_timeout=0.3)) as broker:
        hung = await broker.mint()
    assert hung.status_code == 503
    assert error_code(hung) == "connectionFailed"

    settings = broker_settings(emu).model_copy(
        update={"spatialreal_console_urls": {"ap-northeast": f"http://127.0.0.1:{free_port()}"}}
    )
    async with running_broker(settings) as broker:
        refused = await broker.mint()
    assert refused.status_code == 503
    assert error_code(refused) == "connectionFailed"


async def test_wrong_upstream_key_is_the_operators_problem(emu: Emulator) -> None:
    settings = broker_settings(emu, spatialreal_api_key=SecretStr("not-the-upstream-key"))
    async with running_broker(settings) as broker:
        response = await broker.mint()
    assert response.status_code == 502
    assert error_code(response) == "upstreamCredentialsRejected"
    assert "not-the-upstream-key" not in response.text


async def test_console_answering_without_a_token_is_a_protocol_error(emu: Emulator) -> None:
    fake = FastAPI()

    @fake.post("/v1/console/session-tokens")
    async def empty() -> dict[str, str]:
        return {"sessionToken": ""}

    @fake.post("/v1/auth/session-token")
    async def empty_too() -> dict[str, str]:
        return {"session_token": ""}

    async with running_app(fake) as console:
        settings = broker_settings(emu).model_copy(
            update={"spatialreal_console_urls": {"ap-northeast": console + "/v1/console"}}
        )
        async with running_broker(settings) as broker:
            response = await broker.mint()
    assert response.status_code == 502
    assert error_code(response) == "protocolError"


# --- the HTTP surface ---


async def test_openapi_lists_the_error_responses(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        schema = (await broker.client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/session-tokens"]["post"]
    for status in ("201", "400", "401", "409", "422", "429", "500", "502", "503"):
        assert status in operation["responses"], status
    assert operation["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "rateLimited" in operation["responses"]["429"]["description"]
    assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"]["name"] == "X-API-Key"


async def test_security_headers_and_cors(emu: Emulator) -> None:
    origin = "https://app.example.com"
    settings = broker_settings(emu, cors_origins=[origin])
    async with running_broker(settings) as broker:
        minted = await broker.mint(headers={"Origin": origin})
        preflight = await broker.client.options(
            "/v1/session-tokens",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            },
        )
        foreign = await broker.client.options(
            "/v1/session-tokens",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        denied = await broker.mint(key=None, headers={"Origin": origin})
        health = await broker.client.get("/healthz")
    assert minted.headers["access-control-allow-origin"] == origin
    assert minted.headers["access-control-allow-credentials"] == "true"
    assert minted.headers["x-content-type-options"] == "nosniff"
    assert minted.headers["x-frame-options"] == "DENY"
    assert minted.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in minted.headers["content-security-policy"]
    assert minted.headers["cache-control"] == "no-store"
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers
    # Errors carry CORS headers too, so the page can read the error code.
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == origin
    assert denied.headers["www-authenticate"].startswith("Bearer")
    assert health.headers["x-content-type-options"] == "nosniff"


async def test_no_cors_without_configured_origins(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        response = await broker.mint(headers={"Origin": "https://app.example.com"})
    assert response.status_code == 201
    assert "access-control-allow-origin" not in response.headers


async def test_responses_use_the_one_error_shape(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        response = await broker.mint(key="wrong", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": ErrorCode.UNAUTHORIZED.value,
            "message": "invalid API key",
            "requestId": "trace-me-1",
        }
    }
