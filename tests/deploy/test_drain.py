"""Shutdown drains: readiness turns 503 and drain hooks run while the server still answers."""

from __future__ import annotations

import asyncio
import gc

import httpx
from fastapi import FastAPI

from app.api.app import create_app
from app.api.ops import add_drain_hook, drain
from app.server import GC_THRESHOLDS, DrainingServer, uvicorn_config
from app.settings import Settings


def make_app() -> FastAPI:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        spatialreal_console_url="http://127.0.0.1:9/v1/console",
        spatialreal_fallback_regions=[],
        port=0,
    )
    return create_app(settings)


async def test_hooks_run_together_and_a_stuck_or_failing_hook_does_not_block() -> None:
    app = make_app()
    ran: list[str] = []
    never = asyncio.Event()

    async def quick() -> None:
        ran.append("quick")

    async def stuck() -> None:
        await never.wait()

    async def broken() -> None:
        raise RuntimeError("hook failed")

    for hook in (stuck, broken, quick):
        add_drain_hook(app, hook)
    await drain(app, within=0.2)
    assert ran == ["quick"]
    assert app.state.draining is True


async def test_server_drains_before_it_closes_its_sockets() -> None:
    app = make_app()
    seen: list[tuple[int, str]] = []
    server = DrainingServer(uvicorn_config(app.state.settings, app), app)

    async def hook() -> None:
        # Still listening: the hook can tell clients to go away over open connections.
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
        seen.append((response.status_code, response.json()["checks"]["draining"]["detail"]))

    add_drain_hook(app, hook)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    server.should_exit = True
    await asyncio.wait_for(task, timeout=30)
    assert seen == [(503, "draining")]


async def test_a_frozen_heap_server_collects_its_young_objects_less_often() -> None:
    app = make_app()
    before = gc.get_threshold()
    server = DrainingServer(uvicorn_config(app.state.settings, app), app, freeze_heap=True)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        gc.set_threshold(*before)  # this test process must not keep the server's settings
        gc.unfreeze()
