"""Running the API server: starts the in-process emulator when no credentials are configured."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

import uvicorn

from app.api.app import create_app
from app.emulator import Emulator
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


def uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        # Relay sessions are long-lived; give them time to drain on shutdown.
        timeout_graceful_shutdown=30,
        ws_max_size=settings.max_message_bytes + 64,
    )


async def serve(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        if settings.emulator_mode:
            emulator = Emulator(
                host=settings.emulator_host,
                port=settings.emulator_port,
                speed=settings.emulator_speed,
            )
            await stack.enter_async_context(emulator)
            settings = emulator_settings(settings, emulator)
            print(
                "*** EMULATOR MODE: no SPATIALREAL_API_KEY set; talking to the built-in"
                f" SpatialReal emulator at {emulator.base_url} (not the real service) ***",
                file=sys.stderr,
                flush=True,
            )
        server = uvicorn.Server(uvicorn_config(settings, create_app(settings)))
        await server.serve()
