"""Who a failure counts against (issue 13, items 11-12), against the emulator over loopback.

The console's breakers see token mints only; the ingress judges its region's host (no answer at
all) apart from each avatar in the region (failures the ingress answered). A half-open breaker
lets callers wait for its probe's verdict instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from app.emulator import Emulator, Faults
from app.errors import AppError, ErrorCode
from app.settings import Endpoint
from app.spatialreal import ConsoleClient, IngressClient, RegionBreakers
from app.spatialreal.fallback import Gate
from app.spatialreal.regions import BreakerState
from tests.spatialreal.conftest import AVATAR, OTHER_AVATAR, FakeClock, endpoint
from tests.support.servers import free_port

REGION = "us-west"


def expire_in(seconds: int = 600) -> int:
    return int(time.time()) + seconds


@pytest.fixture
async def console(emu: Emulator, clock: FakeClock) -> AsyncIterator[ConsoleClient]:
    """One region, breakers opening after two failures, waiting up to 2 s for a probe."""
    async with ConsoleClient(
        [endpoint(REGION, emu)],
        SecretStr(emu.api_keys[0]),
        timeout=2.0,
        breakers=RegionBreakers(failure_threshold=2, cooldown=10),
        clock=clock,
        probe_wait=2.0,
    ) as client:
        yield client


async def refused(ingress: IngressClient, avatar: str) -> AppError:
    with pytest.raises(AppError) as caught:
        await ingress.connect(avatar, 16000)
    return caught.value


# --- scope ---


async def test_one_avatars_failures_leave_the_region_and_minting_alone(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=503))
    ingress = IngressClient(console, emu.app_id, connect_timeout=2.0)
    for _ in range(2):
        assert (await refused(ingress, AVATAR)).code is ErrorCode.SERVER_ERROR
    assert emu.stats.tokens_minted == 2
    # That avatar is now skipped in its region: no token is wasted on it for the cool-down ...
    skipped = await refused(ingress, AVATAR)
    assert skipped.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert skipped.retry_after == pytest.approx(10)
    assert emu.stats.tokens_minted == 2
    # ... while everything else in the region carries on.
    async with await ingress.connect(OTHER_AVATAR, 16000) as conn:
        assert conn.region == REGION
    assert (await console.mint(expire_in())).region == REGION
    assert console.breakers.state(REGION, clock()) is BreakerState.CLOSED
    assert ingress.breakers.hosts.state(REGION, clock()) is BreakerState.CLOSED
    assert ingress.breakers.avatars.state(f"{REGION}/{AVATAR}", clock()) is BreakerState.OPEN


async def test_an_unreachable_ingress_host_skips_the_region_but_minting_goes_on(
    emu: Emulator, clock: FakeClock
) -> None:
    dead = Endpoint(REGION, emu.console_url, f"http://127.0.0.1:{free_port()}/v2/driveningress")
    breakers = RegionBreakers(failure_threshold=2, cooldown=10)
    async with ConsoleClient(
        [dead], SecretStr(emu.api_keys[0]), breakers=breakers, clock=clock
    ) as console:
        ingress = IngressClient(console, emu.app_id, connect_timeout=1.0)
        for _ in range(2):
            assert (await refused(ingress, AVATAR)).code is ErrorCode.CONNECTION_FAILED
        assert ingress.breakers.hosts.state(REGION, clock()) is BreakerState.OPEN
        # Every avatar skips the host now, without minting ...
        minted = emu.stats.tokens_minted
        assert (await refused(ingress, OTHER_AVATAR)).code is ErrorCode.UPSTREAM_UNAVAILABLE
        assert emu.stats.tokens_minted == minted
        # ... and the console, which answers, keeps minting.
        assert (await console.mint(expire_in())).region == REGION
        assert breakers.state(REGION, clock()) is BreakerState.CLOSED


async def test_a_refusing_answer_counts_for_no_breaker(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(close_at_handshake=4001))
    ingress = IngressClient(console, emu.app_id)
    for _ in range(3):
        assert (await refused(ingress, AVATAR)).code is ErrorCode.CREDITS_EXHAUSTED
    assert ingress.breakers.avatars.state(f"{REGION}/{AVATAR}", clock()) is BreakerState.CLOSED


async def test_ingress_4503_at_the_handshake_is_the_avatars_not_the_hosts(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(close_at_handshake=4503))
    ingress = IngressClient(console, emu.app_id)
    for _ in range(2):
        error = await refused(ingress, AVATAR)
        assert (error.code, error.close_code) == (ErrorCode.UPSTREAM_ERROR, 4503)
    assert ingress.breakers.avatars.state(f"{REGION}/{AVATAR}", clock()) is BreakerState.OPEN
    assert ingress.breakers.hosts.state(REGION, clock()) is BreakerState.CLOSED


# --- half-open: wait for the probe ---


async def open_console_breaker(console: ConsoleClient, emu: Emulator, clock: FakeClock) -> None:
    emu.faults.console_fail_next = 2
    for _ in range(2):
        with pytest.raises(AppError):
            await console.mint(expire_in())
    assert console.breakers.state(REGION, clock()) is BreakerState.OPEN
    clock.advance(10)
    assert console.breakers.state(REGION, clock()) is BreakerState.HALF_OPEN


async def test_half_open_callers_wait_for_the_probe_and_then_all_succeed(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    await open_console_breaker(console, emu, clock)
    emu.faults.console_latency = 0.3  # the probe takes a while; the others arrive meanwhile
    asked = emu.stats.console_requests
    results = await asyncio.gather(
        *(console.mint(expire_in()) for _ in range(5)), return_exceptions=True
    )
    assert all(not isinstance(r, BaseException) for r in results), results
    assert emu.stats.console_requests - asked == 5  # the probe, then the four that waited
    assert console.breakers.state(REGION, clock()) is BreakerState.CLOSED


async def test_half_open_waiters_give_up_with_the_probe(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    await open_console_breaker(console, emu, clock)
    emu.faults.console_latency = 0.3
    emu.faults.console_status = 503
    asked = emu.stats.console_requests
    started = asyncio.get_running_loop().time()
    results = await asyncio.gather(
        *(console.mint(expire_in()) for _ in range(4)), return_exceptions=True
    )
    waited = asyncio.get_running_loop().time() - started
    codes = sorted(r.code.value for r in results if isinstance(r, AppError))
    assert codes == ["serverError"] + ["upstreamUnavailable"] * 3
    assert emu.stats.console_requests - asked == 1  # only the probe reached the console
    assert waited < 1.5  # told as soon as the probe failed, not after the whole wait


async def test_half_open_waiters_stop_waiting_after_probe_wait(
    emu: Emulator, clock: FakeClock
) -> None:
    async with ConsoleClient(
        [endpoint(REGION, emu)],
        SecretStr(emu.api_keys[0]),
        timeout=5.0,
        breakers=RegionBreakers(failure_threshold=2, cooldown=10),
        clock=clock,
        probe_wait=0.3,
    ) as console:
        await open_console_breaker(console, emu, clock)
        emu.faults.console_latency = 2.0
        probe = asyncio.create_task(console.mint(expire_in()))
        await emu.wait_until(lambda: emu.stats.console_requests == 3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(AppError) as caught:
            await console.mint(expire_in())
        assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
        assert 0.25 <= asyncio.get_running_loop().time() - started < 1.5
        assert (await probe).region == REGION


async def test_an_avatars_half_open_probe_is_waited_for_too(
    console: ConsoleClient, emu: Emulator, clock: FakeClock
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(upgrade_status=503))
    ingress = IngressClient(console, emu.app_id)
    for _ in range(2):
        await refused(ingress, AVATAR)
    clock.advance(10)
    emu.set_avatar_faults(AVATAR, Faults(frame_delay=0.0))
    emu.faults.console_latency = 0.2  # the probe's mint is slow: the others arrive meanwhile
    conns = await asyncio.gather(*(ingress.connect(AVATAR, 16000) for _ in range(4)))
    for conn in conns:
        await conn.close()
    assert ingress.breakers.avatars.state(f"{REGION}/{AVATAR}", clock()) is BreakerState.CLOSED


# --- the pieces ---


def test_a_gate_blames_one_part_credits_the_outer_and_frees_the_inner() -> None:
    hosts, avatars = RegionBreakers(1, 10), RegionBreakers(1, 10)
    gate = Gate(((hosts, "r"), (avatars, "r/a")))
    assert gate.begin(0)
    gate.blame(1, 0)  # the avatar failed: the host answered
    assert hosts.state("r", 0) is BreakerState.CLOSED
    assert avatars.state("r/a", 0) is BreakerState.OPEN
    assert not gate.begin(1)
    assert not gate.probing(1)  # open, not probing: nothing to wait for
    assert gate.retry_after(1) == pytest.approx(9)
    assert gate.begin(10)  # half-open: this is the probe
    assert gate.probing(10)
    assert not gate.begin(10)
    gate.blame(0, 11)  # the host failed: nothing is known about the avatar
    assert hosts.state("r", 11) is BreakerState.OPEN
    assert not avatars.probing("r/a", 11)


def test_verdict_listeners_are_called_once_per_verdict_and_can_leave() -> None:
    breakers = RegionBreakers(1, 10)
    calls: list[str] = []
    leave = breakers.on_verdict("r", lambda: calls.append("a"))
    breakers.on_verdict("r", lambda: calls.append("b"))
    breakers.success("r", 0)
    leave()
    breakers.failure("r", 1)
    breakers.release("other", 1)
    assert calls == ["a", "b", "b"]


def test_breakers_per_avatar_are_bounded() -> None:
    breakers = RegionBreakers(1, 10, max_keys=8)
    leave = breakers.on_verdict("kept", lambda: None)
    for n in range(100):
        breakers.failure(f"r/avatar-{n}", 0)
    assert len(breakers) == 8
    assert breakers.state("r/avatar-99", 0) is BreakerState.OPEN
    assert "kept" in repr(breakers)  # one with a listener is never forgotten
    leave()
