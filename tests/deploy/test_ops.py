"""/readyz and /metrics on a real server: Redis up or down, upstream up or down, draining."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.api.ops import start_draining
from app.logs import JsonFormatter
from app.settings import Settings
from tests.support.servers import free_port, running_app


def settings(console_url: str, **overrides: Any) -> Settings:
    # One region only: nothing here may reach the real SpatialReal endpoints.
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        spatialreal_console_url=console_url,
        spatialreal_fallback_regions=[],
        **overrides,
    )


@pytest.fixture
async def console_url() -> AsyncIterator[str]:
    """Something that answers HTTP (with 404s): all the readiness check asks of the console."""
    async with running_app(FastAPI()) as url:
        yield f"{url}/v1/console"


def dead_url(scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


async def get(base: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return await client.get(path, **kwargs)


async def test_ready_without_redis_when_the_console_answers(console_url: str) -> None:
    async with running_app(create_app(settings(console_url))) as base:
        response = await get(base, "/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["upstream"] == {
        "ok": True,
        "detail": "console: us-west=reachable (breaker closed)",
    }
    assert body["checks"]["draining"]["ok"] is True


async def test_ready_with_a_reachable_redis(console_url: str, redis_url: str) -> None:
    async with running_app(create_app(settings(console_url, redis_url=redis_url))) as base:
        response = await get(base, "/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["store"] == {"ok": True, "detail": "redis: reachable"}


async def test_unready_when_redis_is_down(console_url: str) -> None:
    redis_url = f"{dead_url('redis')}/0"
    async with running_app(create_app(settings(console_url, redis_url=redis_url))) as base:
        response = await get(base, "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unready"
    assert body["checks"]["store"]["ok"] is False
    assert body["checks"]["upstream"]["ok"] is True
    assert redis_url not in response.text


async def test_unready_when_no_console_answers_with_the_breaker_state() -> None:
    app = create_app(settings(dead_url()))
    async with running_app(app) as base:
        response = await get(base, "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["upstream"] == {
            "ok": False,
            "detail": "console: us-west=unreachable (breaker closed)",
        }
        # Failed mints open the region's breaker, and readiness shows it.
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for _ in range(app.state.settings.breaker_failure_threshold):
                minted = await client.post("/v1/session-tokens", json={})
                assert minted.status_code == 503
        app.state.ops_upstream_cache.ttl = 0
        response = await get(base, "/readyz")
    assert response.json()["checks"]["upstream"]["detail"] == (
        "console: us-west=unreachable (breaker open)"
    )


async def test_probes_reach_the_console_at_most_once_per_cache_period() -> None:
    console = FastAPI()
    hits: list[str] = []

    @console.get("/v1/console")
    async def root() -> dict[str, str]:
        hits.append("x")
        return {}

    async with running_app(console) as console_base:
        app = create_app(settings(f"{console_base}/v1/console"))
        async with running_app(app) as base:
            for _ in range(5):
                assert (await get(base, "/readyz")).status_code == 200
            assert len(hits) == 1
            app.state.ops_upstream_cache.ttl = 0
            assert (await get(base, "/readyz")).status_code == 200
            assert len(hits) == 2


async def test_unready_while_draining_and_after_shutdown(console_url: str) -> None:
    app = create_app(settings(console_url))
    async with running_app(app) as base:
        assert (await get(base, "/readyz")).status_code == 200
        start_draining(app)
        response = await get(base, "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["draining"] == {"ok": False, "detail": "draining"}
    fresh = create_app(settings(console_url))
    async with running_app(fresh):
        assert fresh.state.draining is False
    # The lifespan's shutdown path marks the app as draining.
    assert fresh.state.draining is True


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("avatar_relay.ops")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


async def test_readiness_changes_are_logged_once_with_the_request_id(
    json_log: io.StringIO,
) -> None:
    async with running_app(create_app(settings(dead_url()))) as base:
        for _ in range(3):
            response = await get(base, "/readyz", headers={"X-Request-ID": "probe-1"})
            assert response.status_code == 503
    (line,) = [json.loads(text) for text in json_log.getvalue().splitlines()]
    assert line["msg"] == "readiness: unready"
    assert line["level"] == "warning"
    assert line["request_id"] == "probe-1"
    assert line["checks"] == {"upstream": "console: us-west=unreachable (breaker closed)"}


def http_samples(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "avatar_relay_http_requests_total":
                labels = sample.labels
                out[(labels["method"], labels["route"], labels["status"])] = sample.value
    return out


async def test_metrics_count_http_requests_by_route_template(console_url: str) -> None:
    async with running_app(create_app(settings(console_url))) as base:
        assert (await get(base, "/healthz")).status_code == 200
        assert (await get(base, "/healthz")).status_code == 200
        assert (await get(base, "/no/such/path/123")).status_code == 404
        response = await get(base, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    counted = http_samples(response.text)
    assert counted[("GET", "/healthz", "200")] == 2
    assert counted[("GET", "unmatched", "404")] == 1
    assert not any("/no/such" in route for _, route, _ in counted)
    assert "avatar_relay_sessions_active 0.0" in response.text


async def test_error_answers_carry_the_callers_request_id(console_url: str) -> None:
    async with running_app(create_app(settings(console_url))) as base:
        response = await get(base, "/nope", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 404
    assert response.json()["error"]["requestId"] == "abc-123"
