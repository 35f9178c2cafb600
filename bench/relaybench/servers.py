"""The processes a run starts: the emulator, the relay (as `avatar-relay serve` runs it) and the
floor, a bare pass-through forwarder served the same way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi import FastAPI, Response, WebSocket, WebSocketDisconnect

from bench.relaybench.loadclient import FLOOR_PATH, SAMPLE_RATE, TAG_AUDIO, TAG_FRAME, TAG_FRAME_END

FLOOR_STATS_PATH: Final = "/floor-stats"


async def run_emulator(port: int) -> None:
    from app.emulator import Emulator

    # Frames carry their send time: transit is measured from the emulator's send.
    async with Emulator(port=port, speed=1.0, idle_timeout=60.0, stamp_frames=True):
        await asyncio.Event().wait()


def server_settings(
    emulator_url: str, port: int, pool: int, *, compression: bool = False, redis_url: str = ""
) -> Any:
    from pydantic import SecretStr

    from app.settings import EMULATOR_API_KEY, EMULATOR_APP_ID, EMULATOR_AVATAR_ID, Settings

    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        # Credentials set (the emulator's own), so app.server talks to the emulator process
        # given here instead of starting one in-process.
        spatialreal_api_key=SecretStr(EMULATOR_API_KEY),
        spatialreal_app_id=EMULATOR_APP_ID,
        default_avatar_id=EMULATOR_AVATAR_ID,
        app_env="test",
        host="127.0.0.1",
        port=port,
        log_level="warning",
        auth_mode="none",
        redis_url=redis_url or None,
        rate_limit_principal_per_minute=0,
        rate_limit_ip_per_minute=0,
        spatialreal_console_url=emulator_url + "/v1/console",
        spatialreal_ingress_url=emulator_url + "/v2/driveningress",
        spatialreal_fallback_regions=[],
        max_sessions_per_principal=2000,
        max_sessions_global=2000,
        upstream_pool_size=pool,
        relay_compression=compression,
    )


def trace_gc() -> None:
    """Record every garbage collection's pause (per generation: count, total, max) and print
    them when the process exits: a full collection stops the loop for every session at once."""
    import atexit
    import gc
    import json
    import sys

    clock = time.perf_counter
    started = [0.0]
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            pause = clock() - started[0]
            pauses[info["generation"]].append(pause)
            if info["generation"] == 2 or sum(len(p) for p in pauses.values()) % 500 == 0:
                report()
            if pause > 0.005:  # the exit report may never come (a killed server): say it now
                print(
                    f"gc pause gen{info['generation']} {pause * 1000:.1f} ms"
                    f" collected={info['collected']}",
                    file=sys.stderr,
                    flush=True,
                )

    def report() -> None:
        summary = {
            f"gen{g}": {
                "count": len(p),
                "total_ms": round(sum(p) * 1000, 1),
                "max_ms": round(max(p, default=0.0) * 1000, 2),
            }
            for g, p in pauses.items()
        }
        print("gc pauses: " + json.dumps(summary), file=sys.stderr, flush=True)

    gc.callbacks.append(callback)
    atexit.register(report)


def run_server(kind: str, settings: Any) -> None:
    """The relay runs exactly as `avatar-relay serve` runs it (app.server.run: JSON logging,
    uvicorn settings from app.server, heap frozen after startup, uvloop + httptools, imported
    here so the figures never silently come from the slower fallbacks); the floor gets the same
    server, loop and settings around its own app."""
    import httptools  # noqa: F401
    import uvloop

    from app.logs import configure_logging
    from app.server import DrainingServer, run, uvicorn_config

    if os.environ.get("BENCH_GC_TRACE"):
        trace_gc()
    if os.environ.get("BENCH_GC_THRESHOLD"):  # an experiment: the collector's thresholds
        import gc

        gc.set_threshold(*(int(x) for x in os.environ["BENCH_GC_THRESHOLD"].split(",")))
    if kind == "relay":
        run(settings)
        return
    configure_logging(settings)
    app = floor_app(settings, settings.upstream_pool_size)
    uvloop.run(DrainingServer(uvicorn_config(settings, app), app, freeze_heap=True).serve())


def floor_app(settings: Any, pool_size: int) -> Any:
    """The floor: browser socket <-> one ingress connection, bytes forwarded as they come, with a
    one-byte tag; no sequence numbers, acks, replay buffer or conversations. It exports the same
    event-loop lag histogram as the relay (its own Metrics and monitor) and its exact hops."""
    from datetime import UTC, datetime

    from app.loop_lag import LoopLagMonitor
    from app.metrics import Metrics
    from app.spatialreal import ConsoleClient, IngressClient, IngressConnection, new_request_id

    hops: list[float] = []
    pool: list[IngressConnection] = []
    holder: dict[str, Any] = {}
    clock = time.perf_counter
    metrics = Metrics()

    async def refill() -> None:
        while len(pool) < pool_size:
            pool.append(await holder["ingress"].connect(settings.avatar_id, SAMPLE_RATE))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lag = LoopLagMonitor(metrics.observe_loop_lag)
        lag.start()
        async with ConsoleClient.from_settings(settings) as console:
            holder["ingress"] = IngressClient.from_settings(settings, console)
            await refill()
            yield
        lag.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get(FLOOR_STATS_PATH)
    async def _stats() -> dict[str, Any]:
        taken = list(hops)
        hops.clear()
        return {"hops": taken}

    @app.get("/metrics")
    async def _metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.websocket(FLOOR_PATH)
    async def _floor(websocket: WebSocket) -> None:
        await websocket.accept()
        if pool:
            upstream = pool.pop()
            refilling = asyncio.create_task(refill())
            holder.setdefault("tasks", set()).add(refilling)
            refilling.add_done_callback(holder["tasks"].discard)
        else:
            upstream = await holder["ingress"].connect(settings.avatar_id, SAMPLE_RATE)

        async def down() -> None:
            async for message in upstream:
                received = clock()
                tag = TAG_FRAME_END if message.end else TAG_FRAME
                await websocket.send_bytes(tag + message.raw)
                hops.append(clock() - received)

        pump = asyncio.create_task(down())
        req_id = ""
        try:
            while True:
                data = await websocket.receive_bytes()
                if not req_id:
                    req_id = new_request_id(datetime.now(UTC))
                end = data[0] == 1
                await upstream.send_audio(req_id, data[1:], end=end)
                await websocket.send_bytes(TAG_AUDIO + data[1:])
                if end:
                    req_id = ""
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            await upstream.close()

    return app
