"""Fixtures: real emulators on loopback standing in for SpatialReal regions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from app.emulator import Emulator
from app.settings import Endpoint
from app.spatialreal import ConsoleClient, IngressClient, RegionBreakers

AVATAR = "emulator-avatar"
OTHER_AVATAR = "second-avatar"


class FakeClock:
    """A monotonic clock the test moves by hand, for the circuit breakers."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def endpoint(region: str, emu: Emulator) -> Endpoint:
    return Endpoint(region, emu.console_url, emu.ingress_url)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(port=0, speed=50, record=True, avatars=(AVATAR, OTHER_AVATAR)) as emulator:
        yield emulator


@pytest.fixture
async def emu2() -> AsyncIterator[Emulator]:
    async with Emulator(port=0, speed=50, record=True, avatars=(AVATAR, OTHER_AVATAR)) as emulator:
        yield emulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def console(emu: Emulator, clock: FakeClock) -> AsyncIterator[ConsoleClient]:
    async with ConsoleClient(
        [endpoint("ap-northeast", emu)],
        SecretStr(emu.api_keys[0]),
        timeout=2.0,
        breakers=RegionBreakers(failure_threshold=2, cooldown=10),
        clock=clock,
    ) as client:
        yield client


@pytest.fixture
async def two_regions(
    emu: Emulator, emu2: Emulator, clock: FakeClock
) -> AsyncIterator[ConsoleClient]:
    """ap-northeast is `emu`, us-west is `emu2`; short timeouts so a hang fails fast."""
    async with ConsoleClient(
        [endpoint("ap-northeast", emu), endpoint("us-west", emu2)],
        SecretStr(emu.api_keys[0]),
        timeout=0.5,
        breakers=RegionBreakers(failure_threshold=2, cooldown=10),
        clock=clock,
    ) as client:
        yield client


@pytest.fixture
def ingress(console: ConsoleClient, emu: Emulator) -> IngressClient:
    return IngressClient(console, emu.app_id, connect_timeout=2.0)
