"""The token pool: pre-minted tokens, each handed out once, never too close to expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from app.emulator import Emulator
from app.emulator.state import TokenCheck
from app.settings import ConfigError
from app.spatialreal.console import ConsoleClient, MintedToken
from app.store import MemoryStore, RedisStore, Store
from app.tokens import TokenService
from tests.broker.conftest import broker_settings, error_code, running_broker


class WallClock:
    """A wall clock that starts at real time and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Store]:
    made: Store = (
        MemoryStore()
        if request.param == "memory"
        else RedisStore.from_url(redis_url, prefix=f"pool-{uuid.uuid4().hex}:")
    )
    yield made
    await made.aclose()


@pytest.fixture
async def console(emu: Emulator) -> AsyncIterator[ConsoleClient]:
    async with ConsoleClient.from_settings(broker_settings(emu)) as client:
        yield client


def service(emu: Emulator, store: Store, console: ConsoleClient, clock: WallClock) -> TokenService:
    settings = broker_settings(
        emu,
        token_pool_size=3,
        token_ttl_default_seconds=3600,
        token_pool_min_remaining_seconds=300,
    )
    return TokenService(settings, store, console, clock=clock)


async def test_refill_then_each_pooled_token_is_handed_out_once(
    emu: Emulator, store: Store, console: ConsoleClient
) -> None:
    tokens = service(emu, store, console, WallClock())
    assert await tokens.refill_pool() == 3
    assert await store.length(tokens.pool_key) == 3
    assert emu.stats.tokens_minted == 3

    issued = [await tokens.issue("p") for _ in range(3)]
    assert all(i.pooled for i in issued)
    assert len({i.token.session_token for i in issued}) == 3
    assert all(emu.tokens.check(i.token.session_token, emu.app_id) is TokenCheck.OK for i in issued)
    assert emu.stats.tokens_minted == 3  # served without a console round trip

    empty = await tokens.issue("p")
    assert not empty.pooled  # pool empty: minted on the spot
    assert await tokens.refill_pool() == 3
    assert await tokens.refill_pool() == 0  # already full: no overfill


async def test_other_ttls_are_minted_directly(
    emu: Emulator, store: Store, console: ConsoleClient
) -> None:
    tokens = service(emu, store, console, WallClock())
    await tokens.refill_pool()
    direct = await tokens.issue("p", 600)
    assert not direct.pooled
    assert await store.length(tokens.pool_key) == 3
    assert (await tokens.issue("p", 3600)).pooled


async def test_tokens_near_expiry_are_discarded_not_handed_out(
    emu: Emulator, store: Store, console: ConsoleClient
) -> None:
    clock = WallClock()
    tokens = service(emu, store, console, clock)
    await tokens.refill_pool()
    clock.now += 3600 - 300 + 1  # every pooled token now has less than 300 s left

    issued = await tokens.issue("p")
    assert not issued.pooled
    assert issued.token.expire_at >= int(clock.now) + 3600
    assert await store.length(tokens.pool_key) == 0
    assert emu.stats.tokens_minted == 4


async def test_trim_drops_stale_tokens_so_refill_replaces_them(
    emu: Emulator, store: Store, console: ConsoleClient
) -> None:
    clock = WallClock()
    tokens = service(emu, store, console, clock)
    await tokens.refill_pool()
    assert await tokens.trim_pool() == 0
    clock.now += 3301
    assert await tokens.trim_pool() == 3
    assert await tokens.refill_pool() == 3
    fresh = await tokens.issue("p")
    assert fresh.pooled
    assert fresh.token.expire_at - clock.now > 3000


async def test_instances_sharing_a_pool_do_not_overfill(emu: Emulator, redis_url: str) -> None:
    prefix = f"shared-pool-{uuid.uuid4().hex}:"
    stores = [RedisStore.from_url(redis_url, prefix=prefix) for _ in range(3)]
    async with ConsoleClient.from_settings(broker_settings(emu)) as console:
        services = [service(emu, s, console, WallClock()) for s in stores]
        added = await asyncio.gather(*(s.refill_pool() for s in services))
        assert sum(added) == 3
        assert await stores[0].length(services[0].pool_key) == 3
        assert emu.stats.tokens_minted == 3
    for s in stores:
        await s.aclose()


async def test_pool_serves_while_the_console_is_down(emu: Emulator, redis_url: str) -> None:
    settings = broker_settings(emu, redis_url=redis_url, token_pool_size=3)
    async with running_broker(settings) as a, running_broker(settings) as b:
        filled = [asyncio.create_task(x.services.tokens.pool_filled.wait()) for x in (a, b)]
        await asyncio.wait_for(asyncio.wait(filled, return_when=asyncio.FIRST_COMPLETED), 10)
        for task in filled:
            task.cancel()
        assert await a.services.store.length(a.services.tokens.pool_key) == 3

        emu.faults.console_status = 503
        responses = await asyncio.gather(*(x.mint() for x in (a, b, a, b, a, b)))
    served = [r for r in responses if r.status_code == 201]
    failed = [r for r in responses if r.status_code != 201]
    assert len(served) == 3
    assert len({r.json()["sessionToken"] for r in served}) == 3
    assert all(r.status_code == 502 and error_code(r) == "serverError" for r in failed)
    assert emu.stats.tokens_minted == 3


async def test_a_pool_of_tokens_stale_at_birth_is_refused(emu: Emulator) -> None:
    settings = broker_settings(
        emu,
        token_pool_size=2,
        token_ttl_default_seconds=300,
        token_pool_min_remaining_seconds=300,
    )
    with pytest.raises(ConfigError, match="TOKEN_POOL_MIN_REMAINING_SECONDS"):
        TokenService(settings, MemoryStore(), NeverMint())


class NeverMint:
    async def mint(self, expire_at: int) -> MintedToken:
        raise AssertionError("not expected to mint")
