"""The FastAPI application factory: wires settings into services and mounts the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import agent, health, tokens, web
from app.api.deps import build_services
from app.api.errors import install_error_handlers
from app.api.openapi import new_app, refine_openapi
from app.api.ops import install_ops, start_draining
from app.api.relay import install_relay
from app.api.rtc import install_rtc
from app.api.security import add_security_schemes, install_security
from app.loop_lag import LoopLagMonitor
from app.metrics import Metrics
from app.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Services are built here, not at import, so each app (and test) gets its own.
            app.state.services = await build_services(settings, stack, app.state.metrics)
            lag = LoopLagMonitor(app.state.metrics.observe_loop_lag)
            lag.start()
            stack.callback(lag.stop)
            yield
            # Drain while the services are still up; the stack closes them afterwards.
            start_draining(app)

    app = new_app(
        title="avatar-relay",
        version=__version__,
        summary="Session-token broker and Host Mode relay for SpatialReal AvatarKit avatars.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    install_security(app, settings)
    app.include_router(health.router)
    app.include_router(tokens.router)
    app.include_router(web.router)
    install_ops(app)
    install_relay(app)
    app.include_router(agent.router)
    install_rtc(app)
    refine_openapi(app, add_security_schemes, tokens.document_ttl_policy(settings))
    return app
