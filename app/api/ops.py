"""Operations endpoints and plumbing: `/metrics`, `/readyz`, request ids, HTTP metrics, draining.

`/metrics` is unauthenticated, as Prometheus scrapers expect: keep it off the public internet (the
nginx configuration in deploy/ refuses it from outside; Kubernetes scrapes the pod directly).

`/readyz` answers 200 only when this instance should receive new traffic:
- the store answers (`app.state.services.store.ping()`, or Redis at REDIS_URL directly while no
  services are wired); an in-process store always does;
- some upstream console answers at all (any HTTP status: the point is that the network path and
  the service are up), checked at most every few seconds so probes cannot hammer upstream; the
  detail also shows each region's circuit-breaker state as the token broker sees it;
- the instance is not draining (`app.state.draining`, set as soon as shutdown begins).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import bind
from app.metrics import Metrics
from app.settings import Settings
from app.spatialreal.regions import RegionBreakers

log = logging.getLogger("avatar_relay.ops")

router = APIRouter(tags=["operations"])

# Probes are frequent and must answer fast; a check that needs longer than this has failed.
CHECK_TIMEOUT_SECONDS: Final = 2.0
# Several probes (kubelet, load balancer, compose) may ask each second; upstream sees one request.
UPSTREAM_CHECK_TTL_SECONDS: Final = 5.0


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, Check]


@dataclass(slots=True)
class UpstreamCache:
    """The last console probe; `ttl` seconds old at most when reused."""

    ttl: float = UPSTREAM_CHECK_TTL_SECONDS
    checked_at: float = -1e18
    result: Check | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def install_ops(app: FastAPI) -> None:
    """Mount the ops routes and the request-id/metrics middleware; start not draining."""
    app.state.draining = False
    app.state.drain_hooks = []
    app.state.ops_last_ready = None
    app.state.ops_upstream_cache = UpstreamCache()
    app.include_router(router)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)


DrainHook = Callable[[], Awaitable[None]]


def start_draining(app: FastAPI) -> None:
    """From now on `/readyz` says 503, so load balancers stop sending new work here."""
    app.state.draining = True


def add_drain_hook(app: FastAPI, hook: DrainHook) -> None:
    """Run `hook` when shutdown begins, before the server closes its sockets (the relay uses
    this to tell clients "going away" so they reconnect elsewhere)."""
    app.state.drain_hooks.append(hook)


async def drain(app: FastAPI, within: float) -> None:
    """Mark the app draining and run every drain hook, together, for at most `within` seconds."""
    start_draining(app)
    hooks: list[DrainHook] = list(getattr(app.state, "drain_hooks", []))
    log.info("draining: readiness off, %d drain hook(s) to run", len(hooks))
    if not hooks:
        return
    tasks = [asyncio.ensure_future(hook()) for hook in hooks]
    done, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("drain hook failed", exc_info=task.exception())


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(content=body, media_type=content_type)


@router.get(
    "/readyz",
    summary="Readiness: store, upstream console, not draining",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready; see `checks`"}},
)
async def readyz(request: Request) -> JSONResponse:
    app = request.app
    settings: Settings = app.state.settings
    store_check, upstream_check = await asyncio.gather(
        _check_store(app, settings), _check_upstream(app, settings)
    )
    draining = bool(getattr(app.state, "draining", False))
    checks = {
        "store": store_check,
        "upstream": upstream_check,
        "draining": Check(ok=not draining, detail="draining" if draining else "serving"),
    }
    ready = all(check.ok for check in checks.values())
    if app.state.ops_last_ready is not ready:
        # Log transitions only: probes run every few seconds and would drown the log otherwise.
        app.state.ops_last_ready = ready
        failing = {name: check.detail for name, check in checks.items() if not check.ok}
        log.log(
            logging.INFO if ready else logging.WARNING,
            "readiness: %s",
            "ready" if ready else "unready",
            extra={"checks": failing} if failing else None,
        )
    body = Readiness(status="ready" if ready else "unready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _check_store(app: FastAPI, settings: Settings) -> Check:
    services = getattr(app.state, "services", None)
    store = getattr(services, "store", None)
    try:
        if store is not None:
            ok = bool(await asyncio.wait_for(store.ping(), CHECK_TIMEOUT_SECONDS))
            kind = "redis" if settings.redis_url else "memory"
            return Check(ok=ok, detail=f"{kind}: {'reachable' if ok else 'unreachable'}")
        if not settings.redis_url:
            return Check(ok=True, detail="memory: in-process")
        return await asyncio.wait_for(_ping_redis(settings.redis_url), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return Check(ok=False, detail="store: no answer in time")


async def _ping_redis(url: str) -> Check:
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        # The URL may carry a password: report the failure's type, never the URL or message.
        return Check(ok=False, detail=f"redis: unreachable ({type(error).__name__})")
    finally:
        await client.aclose()
    return Check(ok=True, detail="redis: reachable")


async def _check_upstream(app: FastAPI, settings: Settings) -> Check:
    cache: UpstreamCache = app.state.ops_upstream_cache
    async with cache.lock:
        now = time.monotonic()
        if cache.result is None or now - cache.checked_at >= cache.ttl:
            breakers = getattr(getattr(app.state, "services", None), "breakers", None)
            cache.result = await _probe_consoles(settings, breakers)
            cache.checked_at = time.monotonic()
        return cache.result


async def _probe_consoles(settings: Settings, breakers: RegionBreakers | None) -> Check:
    endpoints = settings.endpoints()
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_SECONDS) as client:
        answers = await asyncio.gather(
            *(_answers(client, endpoint.console_url) for endpoint in endpoints)
        )
    now = time.monotonic()
    states: list[str] = []
    for endpoint, ok in zip(endpoints, answers, strict=True):
        state = f"{endpoint.region}={'reachable' if ok else 'unreachable'}"
        if breakers is not None:
            # What the token broker currently thinks of the region (same clock as its client).
            state += f" (breaker {breakers.state(endpoint.region, now).value})"
        states.append(state)
    return Check(ok=any(answers), detail="console: " + ", ".join(states))


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        await client.get(url)
    except httpx.HTTPError:
        return False
    return True


class RequestContextMiddleware:
    """Gives every HTTP request and WebSocket a request id (the caller's X-Request-ID when sane)
    bound to its logs and stored where `app.api.errors.request_id` finds it, records HTTP
    request count and latency per route template (bounded labels: unmatched paths share one),
    and adds the rate-limit headers the request's charge left (`require_principal`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Label children resolved once per label set, not per request (`labels()` takes a lock
        # and builds keys each time). Bounded like the series themselves: methods x routes x
        # statuses.
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        with bind(request_id=rid):
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                quota = scope["state"].get("rate_limit_headers")
                if quota:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((name.encode(), value.encode()) for name, value in quota),
                    ]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = _method(scope)
            count = self._counts.get((method, route, status))
            if count is None:
                count = self.metrics.http_requests_total.labels(method, route, str(status))
                self._counts[(method, route, status)] = count
            count.inc()
            duration = self._durations.get((method, route))
            if duration is None:
                duration = self.metrics.http_request_duration_seconds.labels(method, route)
                self._durations[(method, route)] = duration
            duration.observe(elapsed)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            supplied = bytes(value).decode("latin-1")
            if 0 < len(supplied) <= 64 and supplied.isprintable():
                return supplied
            break
    return uuid.uuid4().hex


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(scope: Scope) -> str:
    # Any token is a valid HTTP method; callers must not be able to mint new label values.
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "OTHER"


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"
