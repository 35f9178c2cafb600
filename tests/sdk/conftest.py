"""One run per official SDK for the whole test session: the three probes play concurrently (the
slowest, spatius, waits 10 s on its own handshake timeout), then the tests read what they saw."""

from __future__ import annotations

import asyncio

import pytest

from tests.sdk.stage import Run, run_sdk
from tests.sdk.venvs import SDKS


async def _run_all() -> dict[str, Run]:
    runs = await asyncio.gather(*(run_sdk(sdk) for sdk in SDKS))
    return dict(zip(SDKS, runs, strict=True))


@pytest.fixture(scope="session")
def sdk_runs() -> dict[str, Run]:
    return asyncio.run(_run_all())
