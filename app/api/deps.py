"""The services one app instance runs on, and the FastAPI dependencies that hand them out.

`build_services` makes everything from settings once, in the lifespan, and registers the clean-up
on an exit stack; routes reach the result with `Depends(get_services)`. Every `/v1` route (REST or
WebSocket) is guarded by `require_principal`: client-address rate limit, authentication, then the
per-principal rate limit.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path
from redis import asyncio as aioredis
from starlette.requests import HTTPConnection

from app.agent.demo_agent import DemoAgent
from app.auth import Authenticator, Principal, authenticator_from_settings
from app.errors import AppError
from app.metrics import Metrics
from app.ratelimit import Network, RateLimiter, client_ip, parse_networks
from app.relay.pool import UpstreamPool
from app.relay.reconnect import ReconnectPolicy
from app.rtc.service import RtcService
from app.sessions import SessionService
from app.settings import Settings
from app.spatialreal.client import IngressClient
from app.spatialreal.console import ConsoleClient
from app.spatialreal.regions import RegionBreakers
from app.store import RedisStore, Store, store_from_settings
from app.store.relay_state import RESUME_MARGIN_SECONDS, RelayStateStore
from app.tickets import TicketService
from app.tokens import TokenService

# Connections to the console (all regions): mints beyond this many in flight wait for one.
CONSOLE_MAX_CONNECTIONS = 64


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    auth: Authenticator
    limiter: RateLimiter
    trusted_proxies: tuple[Network, ...]
    # Shared by every client of the upstream regions, so they judge region health together.
    breakers: RegionBreakers
    console: ConsoleClient
    tokens: TokenService
    # Host Mode relay: WebSocket tickets and the live relay sessions of this instance.
    tickets: TicketService
    sessions: SessionService
    # The built-in demo agent: speaks callers' texts in their relay sessions, as a producer.
    agent: DemoAgent
    # RTC mode: LiveKit rooms with the avatar published into them.
    rtc: RtcService


async def build_services(
    settings: Settings, stack: AsyncExitStack, metrics: Metrics | None = None
) -> Services:
    """Everything an instance needs, from settings; closed in reverse order by `stack`."""
    auth = authenticator_from_settings(settings)
    trusted = parse_networks(settings.trusted_proxies)
    store = store_from_settings(settings)
    stack.push_async_callback(store.aclose)
    breakers = RegionBreakers(settings.breaker_failure_threshold, settings.breaker_cooldown_seconds)
    console = ConsoleClient.from_settings(
        settings, breakers=breakers, max_connections=CONSOLE_MAX_CONNECTIONS
    )
    stack.push_async_callback(console.aclose)
    tokens = TokenService(settings, store, console, metrics=metrics)
    await tokens.start()
    stack.push_async_callback(tokens.aclose)
    tickets = TicketService(store, settings.ticket_ttl_seconds, metrics)
    pool = UpstreamPool(
        IngressClient.from_settings(settings, console),
        size=settings.upstream_pool_size,
        metrics=metrics,
        default_key=(settings.avatar_id, settings.default_sample_rate),
        policy=ReconnectPolicy.from_settings(settings),
    )
    pool.start()
    state_store = None
    if isinstance(store, RedisStore) and settings.redis_url:
        # Relay sessions outlive this instance: their state is kept where others find it. Its
        # own connections, so that heartbeats and saves never queue behind other traffic.
        state_client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.upstream_connect_timeout,
            socket_connect_timeout=settings.upstream_connect_timeout,
            health_check_interval=30,
        )
        stack.push_async_callback(state_client.aclose)
        state_store = RelayStateStore(
            state_client,
            prefix=store.prefix,
            instance_id=settings.instance_id,
            ttl=settings.resume_window_seconds + RESUME_MARGIN_SECONDS,
            max_messages=settings.replay_buffer_messages,
        )
        await state_store.start()
        stack.push_async_callback(state_store.aclose)
    sessions = SessionService(
        settings, store, tickets, pool, metrics=metrics, state_store=state_store
    )
    stack.push_async_callback(sessions.aclose)
    agent = DemoAgent(settings, sessions)
    stack.push_async_callback(agent.aclose)  # closed before the sessions
    rtc = RtcService(
        settings, IngressClient.from_settings(settings, console), metrics=metrics, tickets=tickets
    )
    stack.push_async_callback(rtc.aclose)
    return Services(
        settings=settings,
        store=store,
        auth=auth,
        limiter=RateLimiter.from_settings(settings, store, metrics),
        trusted_proxies=trusted,
        breakers=breakers,
        console=console,
        tokens=tokens,
        tickets=tickets,
        sessions=sessions,
        agent=agent,
        rtc=rtc,
    )


async def get_services(conn: HTTPConnection) -> Services:
    # `async` on purpose: FastAPI runs plain `def` dependencies in a worker thread.
    services: Services = conn.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def connection_ip(conn: HTTPConnection, services: Services) -> str:
    peer = conn.client.host if conn.client else None
    return client_ip(peer, conn.headers.getlist("x-forwarded-for"), services.trusted_proxies)


async def require_principal(conn: HTTPConnection) -> Principal:
    """Authenticate the caller and charge its rate limits; raises unauthorized / rateLimited.

    A failed authentication still charges the client address (and an address over its limit
    gets 429 before 401), so guessing keys costs the guesser its own budget. On success the
    address and the principal are charged in one atomic store call.
    """
    # Read directly rather than through `ServicesDep`: one dependency less to solve per request.
    services: Services = conn.app.state.services
    address = connection_ip(conn, services)
    conn.state.client_ip = address
    try:
        principal = services.auth.authenticate(conn.headers)
    except AppError:
        charged = await services.limiter.charge(address)
        conn.state.rate_limit_headers = charged.headers
        if charged.refusal is not None:
            raise charged.refusal from None
        raise
    charged = await services.limiter.charge(address, principal.id)
    # Answered on success and refusal alike (RequestContextMiddleware adds them).
    conn.state.rate_limit_headers = charged.headers
    if charged.refusal is not None:
        raise charged.refusal
    conn.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]
# A session id in a route's path: ids are short, so anything longer is refused before a lookup.
SessionIdPath = Annotated[str, Path(max_length=64)]
