"""Event-loop lag: the monitor reports how late its timer ran, and every app exports it."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.loop_lag import LoopLagMonitor
from app.settings import Settings
from tests.support.servers import running_app


async def test_a_blocked_loop_shows_as_lag() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, interval=0.01)
    monitor.start()
    try:
        while len(lags) < 3:
            await asyncio.sleep(0.005)
        quiet = max(lags)
        time.sleep(0.15)  # the loop's thread is busy: the due timer waits
        count = len(lags)
        while len(lags) == count:
            await asyncio.sleep(0.005)
    finally:
        monitor.stop()
    assert lags[count] >= 0.12, lags
    assert quiet < 0.12
    assert not monitor.running
    stopped = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == stopped


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopLagMonitor(lambda _: None, interval=0)


async def test_the_app_exports_its_loop_lag() -> None:
    async with running_app(FastAPI()) as console:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            spatialreal_console_url=f"{console}/v1/console",
            spatialreal_fallback_regions=[],
        )
        async with (
            running_app(create_app(settings)) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as client,
        ):
            count = 0.0
            for _ in range(100):
                text = (await client.get("/metrics")).text
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "avatar_relay_event_loop_lag_seconds_count":
                            count = sample.value
                if count >= 2:
                    break
                await asyncio.sleep(0.05)
    assert count >= 2
