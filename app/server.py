"""Running the API server: starts the in-process emulator when no credentials are configured."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from contextlib import AsyncExitStack

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from app.api.app import create_app
from app.api.ops import drain
from app.api.websocket import RelayWebSocketProtocol
from app.emulator import Emulator
from app.logs import configure_logging
from app.sessions import HANDOVER_SECONDS
from app.settings import Settings


def emulator_settings(settings: Settings, emulator: Emulator) -> Settings:
    """The same settings, pointed at a running emulator (one region: there is only one emulator)."""
    return settings.model_copy(
        update={
            "spatialreal_console_url": emulator.console_url,
            "spatialreal_ingress_url": emulator.ingress_url,
            "spatialreal_fallback_regions": [],
        }
    )


def emulator_livekit_settings(settings: Settings, emulator: Emulator) -> Settings:
    """The same settings with RTC pointed at the emulator's LiveKit stand-in, so that RTC
    sessions work offline with no configuration, as relay sessions do."""
    livekit = emulator.livekit
    return settings.model_copy(
        update={
            "livekit_url": emulator.livekit_url,
            "livekit_api_key": livekit.api_key,
            "livekit_api_secret": SecretStr(livekit.api_secret),
        }
    )


def uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        # Relay sessions are long-lived; give them time to drain on shutdown.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Larger messages are refused by their frame header, with ERROR{messageTooLarge} first,
        # and a begun message must complete in time (app.api.websocket).
        ws=RelayWebSocketProtocol,
        ws_max_size=settings.max_message_bytes,
        # permessage-deflate only when RELAY_COMPRESSION asks for it (bench/README.md).
        ws_per_message_deflate=settings.relay_compression,
        # Logging is ours (app.logs: JSON lines); uvicorn's loggers propagate to it.
        log_config=None,
    )


# Shutdown, from SIGTERM to exit: the drain (readiness 503 at once; conversations in flight get
# up to DRAIN_TIMEOUT_SECONDS to finish), the handover (sessions told to reconnect elsewhere,
# HANDOVER_SECONDS at most), then uvicorn's graceful shutdown of whatever is still open. The
# grace period (Kubernetes: terminationGracePeriodSeconds after preStop; compose:
# stop_grace_period) must exceed `shutdown_budget` (deploy/README.md).
GRACEFUL_SHUTDOWN_SECONDS = 15
# (young generation, middle, old): net container allocations before a young collection, and
# collections of each generation before the next one up. CPython's default is (700, 10, 10).
GC_THRESHOLDS = (20_000, 10, 10)


def drain_budget(settings: Settings) -> float:
    """How long the drain hooks may run: conversations finishing, then the handover."""
    return settings.drain_timeout_seconds + HANDOVER_SECONDS


def shutdown_budget(settings: Settings) -> float:
    """The longest a SIGTERM'd server takes to exit."""
    return drain_budget(settings) + GRACEFUL_SHUTDOWN_SECONDS


class DrainingServer(uvicorn.Server):
    """uvicorn, but shutdown first drains the app (readiness 503, drain hooks: relay
    conversations in flight finish, then their sessions are moved or ended) before uvicorn
    closes the listening sockets and connections.

    With `freeze_heap`, everything alive once the app has started (modules, routes, schemas,
    services: ~100k objects) is moved out of the garbage collector's sight (`gc.freeze`). Those
    objects live as long as the process anyway, and without this every full collection walks
    them all: a ~30 ms pause for every request in flight (measured under bench/tokens.py).

    It also raises the young generation's threshold (GC_THRESHOLDS): at the default 700 a relay
    under 100 sessions ran ~4 young collections a second each pausing every session (123 gen0
    and 11 gen1 collections, 280 ms in all, pauses up to 35 ms, in one 12 s playback); almost all
    per-message objects die by reference count, so collecting less often finds the same few
    cycles and the pauses go (bench/README.md).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        *,
        freeze_heap: bool = False,
        banner: bool = False,
    ) -> None:
        super().__init__(config)
        self._app = app
        self._freeze_heap = freeze_heap
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self._banner:
            settings: Settings = self._app.state.settings
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(banner(settings, host, port), file=sys.stderr, flush=True)
        if self._freeze_heap:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain(self._app, drain_budget(self._app.state.settings))
        await super().shutdown(sockets)


def banner(settings: Settings, host: str, port: int) -> str:
    """Where to point a browser: the demo page and the API docs (PUBLIC_URL when set, else the
    address the server is bound to; a wildcard address is shown as the loopback one)."""
    if settings.public_url:
        base = settings.public_url.rstrip("/")
    else:
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        base = f"http://{shown}:{port}"
    return f"avatar-relay is serving: demo page {base}/  ·  API docs {base}/docs"


def run(settings: Settings) -> None:
    """Run `serve` until stopped, on uvloop when it is installed (uvicorn's own runner would pick
    it; `asyncio.run(serve(...))` does not: uvicorn's `loop` setting only applies when uvicorn
    creates the loop). uvloop takes ~5% off the token endpoint's CPU per request."""
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] installs it; plain asyncio still works
        asyncio.run(serve(settings))
        return
    uvloop.run(serve(settings))


async def serve(settings: Settings) -> None:
    configure_logging(settings)
    async with AsyncExitStack() as stack:
        if settings.emulator_mode:
            emulator = Emulator(
                host=settings.emulator_host,
                port=settings.emulator_port,
                speed=settings.emulator_speed,
            )
            await stack.enter_async_context(emulator)
            settings = emulator_settings(settings, emulator)
            livekit_stand_in = not settings.rtc_configured
            if livekit_stand_in:
                settings = emulator_livekit_settings(settings, emulator)
            print(
                "*** EMULATOR MODE: no SPATIALREAL_API_KEY set; talking to the built-in"
                f" SpatialReal emulator at {emulator.base_url} (not the real service) ***",
                file=sys.stderr,
                flush=True,
            )
            if livekit_stand_in:
                print(
                    "    no LIVEKIT_URL set: RTC sessions use the emulator's LiveKit stand-in at"
                    f" {emulator.livekit_url} (no real room)",
                    file=sys.stderr,
                    flush=True,
                )
            # The emulator's own uvicorn installs uvicorn's default log handlers: take them back.
            configure_logging(settings)
        app = create_app(settings)
        server = DrainingServer(uvicorn_config(settings, app), app, freeze_heap=True, banner=True)
        await server.serve()
