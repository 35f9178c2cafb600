"""The OpenAPI document says what the server enforces, and schemathesis holds the server to it.

The schemathesis run drives the real app (uvicorn, emulator mode, api-key callers) over a real
socket with generated requests, valid and invalid, and checks every answer against the schema:
status codes declared, bodies of the declared shape, security enforced, invalid input refused.
Bounded: a fixed number of examples per operation (well under a minute in all).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app.api.app import create_app
from app.api.openapi import TAGS
from app.emulator import DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET, Emulator
from app.settings import PCM_SAMPLE_RATES, Settings
from tests.support.relay import relay_test_settings
from tests.support.servers import running_app

CALLER_KEY = "schema-caller-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}
EXAMPLES_PER_OPERATION = 100


def _schema() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def _relay_app() -> AsyncIterator[str]:
    async with Emulator() as emulator:
        # RTC mode on, against the emulator's LiveKit stand-in: its routes answer for real.
        settings = relay_test_settings(
            emulator,
            [CALLER_KEY],
            livekit_url=emulator.livekit_url,
            livekit_api_key=DEFAULT_LIVEKIT_API_KEY,
            livekit_api_secret=DEFAULT_LIVEKIT_API_SECRET,
            # Generated sessions end soon: their ingress connections do not pile up.
            rtc_idle_timeout_seconds=1.0,
        )
        async with running_app(create_app(settings)) as url:
            yield url


@contextlib.contextmanager
def _served_in_a_thread() -> Iterator[str]:
    """The app on its own event loop in a thread: schemathesis' test bodies are synchronous."""
    ready: list[str] = []
    started = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with _relay_app() as url:
            ready.append(url)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the app did not start"
        yield ready[0]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_v1_route_declares_its_security() -> None:
    schema = _schema()
    v1 = [(p, m, op) for p, m, op in _operations(schema) if p.startswith("/v1/")]
    assert {p for p, _, _ in v1} >= {
        "/v1/session-tokens",
        "/v1/relay/sessions",
        "/v1/relay/sessions/{session_id}/tickets",
        "/v1/rtc/sessions",
        "/v1/rtc/sessions/{session_id}",
        "/v1/rtc/sessions/{session_id}/tokens",
    }
    for path, _, operation in v1:
        assert operation.get("security") == [{"bearer": []}, {"apiKey": []}], path
        assert "401" in operation["responses"], path
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_every_operation_has_a_described_tag() -> None:
    schema = _schema()
    declared = {tag["name"] for tag in schema["tags"]}
    assert declared == {tag["name"] for tag in TAGS}
    assert all(tag["description"] for tag in schema["tags"])
    for path, _, operation in _operations(schema):
        (tag,) = operation["tags"]
        assert tag in declared, path


def test_validation_failures_are_declared_as_400_in_the_error_shape() -> None:
    schema = _schema()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, _, operation in _operations(schema):
        responses = operation["responses"]
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in responses, path
            assert "invalidRequest" in responses["400"]["description"], path
            ref = responses["400"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorResponse", path
        for status, response in responses.items():
            content = response.get("content", {}).get("application/json", {})
            assert content.get("schema", {}).get("$ref") != (
                "#/components/schemas/HTTPValidationError"
            ), (path, status)
    # The token route's own 422 (a reused Idempotency-Key) stays.
    assert (
        "idempotencyKeyReused"
        in (schema["paths"]["/v1/session-tokens"]["post"]["responses"]["422"]["description"])
    )


def test_sample_rate_and_idempotency_key_say_what_the_server_accepts() -> None:
    schema = _schema()
    rate = schema["components"]["schemas"]["SessionRequest"]["properties"]["sampleRate"]
    assert {"type": "integer", "enum": list(PCM_SAMPLE_RATES)} in rate["anyOf"]
    (key,) = schema["paths"]["/v1/session-tokens"]["post"]["parameters"]
    assert key["name"] == "Idempotency-Key"
    (string,) = [s for s in key["schema"]["anyOf"] if s.get("type") == "string"]
    assert string["minLength"] == 1
    assert string["maxLength"] == 255
    assert string["pattern"]


@pytest.mark.parametrize(
    ("key", "status"),
    [("k" * 255, 201), ("k" * 256, 400), ("a b", 201), ("a\tb", 400), ("ключ", 400)],
)
async def test_the_idempotency_key_rules_are_the_server_rules(key: str, status: int) -> None:
    async with _relay_app() as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/v1/session-tokens",
            json={},
            headers=[(name.encode(), value.encode()) for name, value in AUTH.items()]
            + [(b"Idempotency-Key", key.encode())],
        )
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["message"].startswith("Idempotency-Key: ")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_everything_from_this_server(page: str) -> None:
    async with _relay_app() as url, httpx.AsyncClient(base_url=url) as client:
        html = (await client.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets
        for asset in assets:
            assert asset.startswith("/"), asset  # no other host, no CDN
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 1000, asset


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with _served_in_a_thread() as url:
        # What schemathesis generates from is what the server publishes.
        assert httpx.get(f"{url}/openapi.json").json() == _schema()
        yield url


# Loaded at collection (schemathesis makes one test per operation); the server comes per module.
# Generated cases reuse Idempotency-Key values with other bodies: the documented answer to that
# is 422 idempotencyKeyReused, so a valid request may get it (the route declares it).
ACCEPTED = ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]
api = schemathesis.openapi.from_dict(
    _schema(),
    config=SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
    ),
)


@api.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_server_answers_as_its_schema_says(case: schemathesis.Case[Any], live_url: str) -> None:
    case.call_and_validate(base_url=live_url, headers=AUTH, timeout=10)
