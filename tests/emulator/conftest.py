from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.emulator import Emulator


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(speed=100, record=True, frame_bytes=256) as emulator:
        yield emulator
