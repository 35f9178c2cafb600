"""ConsoleClient against the emulator's console over loopback: success, every failure, fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from app.emulator import Emulator
from app.errors import AppError, ErrorCode, Phase
from app.settings import Endpoint, load_settings
from app.spatialreal import ConsoleClient, RegionBreakers
from app.spatialreal.regions import BreakerState
from tests.spatialreal.conftest import FakeClock, endpoint
from tests.support.servers import free_port, running_app


def expire_in(seconds: int = 600) -> int:
    return int(time.time()) + seconds


async def test_mint_returns_a_fresh_token_and_hides_it_in_repr(
    console: ConsoleClient, emu: Emulator
) -> None:
    expire_at = expire_in()
    first = await console.mint(expire_at)
    second = await console.mint(expire_at)
    assert first.session_token
    assert second.session_token
    assert first.session_token != second.session_token
    assert first.expire_at == expire_at
    assert first.region == "ap-northeast"
    assert first.endpoint.console_url == emu.console_url
    assert first.session_token not in repr(first)
    assert emu.stats.tokens_minted == 2
    assert emu.api_keys[0] not in repr(console)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_REQUEST),
        (401, ErrorCode.UPSTREAM_CREDENTIALS_REJECTED),
        (402, ErrorCode.BILLING_REQUIRED),
        (403, ErrorCode.UPSTREAM_CREDENTIALS_REJECTED),
        (404, ErrorCode.APP_ID_UNRECOGNIZED),
        (429, ErrorCode.CONCURRENCY_LIMIT),
        (500, ErrorCode.SERVER_ERROR),
        (503, ErrorCode.SERVER_ERROR),
    ],
)
async def test_console_failures_are_classified(
    console: ConsoleClient, emu: Emulator, status: int, code: ErrorCode
) -> None:
    emu.faults.console_status = status
    with pytest.raises(AppError) as caught:
        await console.mint(expire_in())
    error = caught.value
    assert error.code is code
    assert error.phase is Phase.SESSION_TOKEN
    assert error.upstream_http_status == status
    assert f"HTTP {status}" in error.message
    assert emu.api_keys[0] not in str(error)


async def test_wrong_api_key_is_an_operator_error_logged_once_and_never_echoed(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-do-not-print-me"
    caplog.set_level(logging.ERROR, logger="avatar_relay.spatialreal")
    async with ConsoleClient(
        [endpoint("ap-northeast", emu)], SecretStr(secret), timeout=2
    ) as console:
        for _ in range(3):
            with pytest.raises(AppError) as caught:
                await console.mint(expire_in())
    error = caught.value
    assert error.code is ErrorCode.UPSTREAM_CREDENTIALS_REJECTED
    assert error.spec.http_status == 502
    assert error.upstream_http_status == 401
    # The caller is not told the upstream's words, only that the operator must act.
    assert "operator" in error.message
    assert "invalid api key" not in error.message
    # One line for the operator, however many mints failed, naming what to fix.
    lines = [r for r in caplog.records if r.name == "avatar_relay.spatialreal"]
    assert len(lines) == 1
    line = lines[0].getMessage()
    for part in ("SPATIALREAL_API_KEY", "HTTP 401", "invalid api key"):
        assert part in line
    assert lines[0].__dict__["error_code"] == "upstreamCredentialsRejected"
    for text in (str(error), repr(error), repr(console), str(error.log_fields()), line):
        assert secret not in text


async def test_expiry_in_the_past_is_an_invalid_request(console: ConsoleClient) -> None:
    with pytest.raises(AppError) as caught:
        await console.mint(int(time.time()) - 10)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert "expire_at must be in the future" in caught.value.message


async def test_hanging_console_times_out_as_connection_failed(emu: Emulator) -> None:
    emu.faults.console_hang = True
    async with ConsoleClient(
        [endpoint("ap-northeast", emu)], SecretStr(emu.api_keys[0]), timeout=0.3
    ) as console:
        with pytest.raises(AppError) as caught:
            await console.mint(expire_in())
    assert caught.value.code is ErrorCode.CONNECTION_FAILED
    assert caught.value.phase is Phase.SESSION_TOKEN
    assert "timed out" in caught.value.message


async def test_unreachable_console_is_connection_failed() -> None:
    port = free_port()
    dead = Endpoint("ap-northeast", f"http://127.0.0.1:{port}/v1/console", "http://x")
    async with ConsoleClient([dead], SecretStr("k"), timeout=2) as console:
        with pytest.raises(AppError) as caught:
            await console.mint(expire_in())
    assert caught.value.code is ErrorCode.CONNECTION_FAILED
    assert caught.value.phase is Phase.SESSION_TOKEN
    assert caught.value.upstream_http_status is None


@pytest.fixture
async def odd_console() -> AsyncIterator[str]:
    """A console that answers 200 in ways the SDK treats as failures."""
    app = FastAPI()

    @app.post("/errors/session-tokens")
    async def errors_in_200() -> JSONResponse:
        body = {"errors": [{"status": 402, "code": "BILLING", "detail": "session denied"}]}
        return JSONResponse(body)

    @app.post("/empty/session-tokens")
    async def empty_token() -> JSONResponse:
        return JSONResponse({"sessionToken": ""})

    @app.post("/notjson/session-tokens")
    async def not_json() -> str:
        return "hello"

    async with running_app(app) as base:
        yield base


@pytest.mark.parametrize(
    ("path", "code", "status"),
    [
        ("errors", ErrorCode.BILLING_REQUIRED, 402),
        ("empty", ErrorCode.PROTOCOL_ERROR, 200),
        ("notjson", ErrorCode.PROTOCOL_ERROR, 200),
    ],
)
async def test_200_answers_without_a_token_are_failures(
    odd_console: str, path: str, code: ErrorCode, status: int
) -> None:
    odd = Endpoint("ap-northeast", f"{odd_console}/{path}", "http://x")
    async with ConsoleClient([odd], SecretStr("k"), timeout=2) as console:
        with pytest.raises(AppError) as caught:
            await console.mint(expire_in())
    assert caught.value.code is code
    assert caught.value.phase is Phase.SESSION_TOKEN
    assert caught.value.upstream_http_status == status


# --- regional fallback and breakers ---


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_falls_back_to_the_next_region(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator, status: int
) -> None:
    emu.faults.console_status = status
    minted = await two_regions.mint(expire_in())
    assert minted.region == "us-west"
    assert minted.endpoint.console_url == emu2.console_url
    assert emu.stats.console_requests == 1
    assert emu2.stats.tokens_minted == 1


async def test_hang_falls_back_to_the_next_region(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator
) -> None:
    emu.faults.console_hang = True
    minted = await two_regions.mint(expire_in())
    assert minted.region == "us-west"
    assert emu2.stats.tokens_minted == 1


async def test_unreachable_primary_falls_back(emu2: Emulator) -> None:
    dead = Endpoint("ap-northeast", f"http://127.0.0.1:{free_port()}/v1/console", "http://x")
    async with ConsoleClient(
        [dead, endpoint("us-west", emu2)], SecretStr(emu2.api_keys[0]), timeout=2
    ) as console:
        assert (await console.mint(expire_in())).region == "us-west"


@pytest.mark.parametrize("status", [400, 401, 402, 404])
async def test_4xx_never_falls_back(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator, status: int
) -> None:
    emu.faults.console_status = status
    with pytest.raises(AppError) as caught:
        await two_regions.mint(expire_in())
    assert caught.value.upstream_http_status == status
    assert emu2.stats.console_requests == 0
    # The region answered: a 4xx says nothing against its health.
    assert two_regions.breakers.state("ap-northeast", 0) is BreakerState.CLOSED


async def test_every_region_failing_raises_the_last_error(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator
) -> None:
    emu.faults.console_status = 503
    emu2.faults.console_status = 502
    with pytest.raises(AppError) as caught:
        await two_regions.mint(expire_in())
    assert caught.value.code is ErrorCode.SERVER_ERROR
    assert caught.value.upstream_http_status == 502


async def test_breaker_skips_a_failing_region_then_probes_it_after_cooldown(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator, clock: FakeClock
) -> None:
    emu.faults.console_status = 503
    for _ in range(2):  # failure_threshold = 2
        assert (await two_regions.mint(expire_in())).region == "us-west"
    assert emu.stats.console_requests == 2
    assert two_regions.breakers.state("ap-northeast", clock()) is BreakerState.OPEN

    # Open: the primary is not even asked.
    clock.advance(9)
    assert (await two_regions.mint(expire_in())).region == "us-west"
    assert emu.stats.console_requests == 2

    # Half-open, still failing: one probe, then open again for a fresh cool-down.
    clock.advance(1)
    assert (await two_regions.mint(expire_in())).region == "us-west"
    assert emu.stats.console_requests == 3
    assert two_regions.breakers.state("ap-northeast", clock()) is BreakerState.OPEN

    # Recovered: the next probe succeeds and the primary is used again.
    emu.faults.console_status = None
    clock.advance(10)
    assert (await two_regions.mint(expire_in())).region == "ap-northeast"
    assert two_regions.breakers.state("ap-northeast", clock()) is BreakerState.CLOSED
    assert (await two_regions.mint(expire_in())).region == "ap-northeast"


async def test_all_regions_open_is_upstream_unavailable_with_retry_after(
    two_regions: ConsoleClient, emu: Emulator, emu2: Emulator, clock: FakeClock
) -> None:
    emu.faults.console_status = 503
    emu2.faults.console_status = 503
    for _ in range(2):
        with pytest.raises(AppError):
            await two_regions.mint(expire_in())
    asked = emu.stats.console_requests + emu2.stats.console_requests
    clock.advance(4)
    with pytest.raises(AppError) as caught:
        await two_regions.mint(expire_in())
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert caught.value.retry_after == pytest.approx(6)
    assert emu.stats.console_requests + emu2.stats.console_requests == asked


async def test_from_settings_uses_endpoints_key_timeout_and_breaker_settings(
    emu: Emulator,
) -> None:
    settings = load_settings(
        spatialreal_provider="spatialwalk",
        spatialreal_console_url=emu.console_url,
        spatialreal_ingress_url=emu.ingress_url,
        spatialreal_fallback_regions=[],
        breaker_failure_threshold=4,
        breaker_cooldown_seconds=7,
        upstream_request_timeout=3,
    )
    async with ConsoleClient.from_settings(settings) as console:
        assert [ep.region for ep in console.endpoints] == ["ap-northeast"]
        assert console.breakers.failure_threshold == 4
        assert console.breakers.cooldown == 7
        minted = await console.mint(expire_in())
    assert minted.region == "ap-northeast"


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        ConsoleClient([], SecretStr("k"))
    with pytest.raises(ValueError, match="timeout"):
        ConsoleClient([Endpoint("r", "http://c", "http://i")], SecretStr("k"), timeout=0)


async def test_shared_breakers_are_used_as_given() -> None:
    shared = RegionBreakers(5, 60)
    only = [Endpoint("r", "http://c", "http://i")]
    async with ConsoleClient(only, SecretStr("k"), breakers=shared) as client:
        assert client.breakers is shared
