"""POST /v1/session-tokens has a fast path in front of the FastAPI route: whichever serves a
request, the caller sees the same answer."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.api.tokens import _simple_ttl
from app.emulator import Emulator
from tests.broker.conftest import CALLER_KEY, broker_settings, error_code, running_broker

JSON = "application/json"
# Served by the FastAPI route (the fast path takes only a bare `application/json`).
JSON_WITH_CHARSET = "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (None, b"", (True, None)),
        (JSON, b"", (True, None)),
        (JSON, b"{}", (True, None)),
        (JSON, b'{"ttlSeconds": 900}', (True, 900)),
        (JSON, b'{"ttlSeconds": null}', (True, None)),
        ("Application/JSON", b'{"ttlSeconds": 60}', (True, 60)),
        # Everything below is left to FastAPI: coercions, errors, unusual shapes.
        (JSON, b'{"ttlSeconds": "900"}', (False, None)),
        (JSON, b'{"ttlSeconds": 900.0}', (False, None)),
        (JSON, b'{"ttlSeconds": true}', (False, None)),
        (JSON, b'{"ttlSeconds": 99999999999999999999}', (False, None)),
        (JSON, b'{"ttlSeconds": 900, "expireAt": 1}', (False, None)),
        (JSON, b"null", (False, None)),
        (JSON, b"[]", (False, None)),
        (JSON, b"{nope", (False, None)),
        (JSON, b" ", (False, None)),
        (JSON_WITH_CHARSET, b"{}", (False, None)),
        ("text/plain", b"{}", (False, None)),
        (None, b"{}", (False, None)),
    ],
)
def test_only_plain_well_formed_bodies_take_the_fast_path(
    content_type: str | None, body: bytes, expected: tuple[bool, int | None]
) -> None:
    assert _simple_ttl(content_type, body) == expected


async def post(
    client: httpx.AsyncClient, body: bytes, content_type: str | None, **headers: str
) -> httpx.Response:
    sent = {"Authorization": f"Bearer {CALLER_KEY}", **headers}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return await client.post("/v1/session-tokens", content=body, headers=sent)


async def test_both_paths_answer_alike(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        fast = await post(broker.client, b'{"ttlSeconds": 900}', JSON, **{"X-Request-ID": "r-1"})
        slow = await post(
            broker.client, b'{"ttlSeconds": 900}', JSON_WITH_CHARSET, **{"X-Request-ID": "r-2"}
        )
        metrics = await broker.client.get("/metrics")
    assert fast.status_code == slow.status_code == 201
    assert set(fast.json()) == set(slow.json()) == {"sessionToken", "expireAt", "appId", "region"}
    assert abs(fast.json()["expireAt"] - slow.json()["expireAt"]) <= 2
    assert fast.json()["sessionToken"] != slow.json()["sessionToken"]
    assert fast.headers["x-request-id"] == "r-1"
    assert slow.headers["x-request-id"] == "r-2"
    different = {"x-request-id", "date", "content-length"}
    assert {k: v for k, v in fast.headers.items() if k not in different} == {
        k: v for k, v in slow.headers.items() if k not in different
    }
    assert emu.stats.tokens_minted == 2
    assert 'route="/v1/session-tokens",status="201"} 2.0' in metrics.text


async def test_requests_left_to_fastapi_keep_its_coercions_and_errors(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        coerced = await post(broker.client, b'{"ttlSeconds": "900"}', JSON)
        null_body = await post(broker.client, b"null", JSON)
        bad_json = await post(broker.client, b"{nope", JSON)
        unknown_field_bad_key = await broker.client.post(
            "/v1/session-tokens",
            content=b'{"expireAt": 1}',
            headers={"Authorization": "Bearer wrong-key-0123456789", "Content-Type": JSON},
        )
        wrong_method = await broker.client.get(
            "/v1/session-tokens", headers={"Authorization": f"Bearer {CALLER_KEY}"}
        )
    now = int(time.time())
    assert coerced.status_code == 201
    assert abs(coerced.json()["expireAt"] - (now + 900)) <= 5
    assert null_body.status_code == 201
    assert bad_json.status_code == 400
    assert error_code(bad_json) == "invalidRequest"
    # FastAPI judges credentials before the body's fields.
    assert unknown_field_bad_key.status_code == 401
    assert wrong_method.status_code == 405
    assert error_code(wrong_method) == "invalidRequest"
    assert emu.stats.tokens_minted == 2


async def test_fast_path_errors_use_the_one_error_shape(emu: Emulator) -> None:
    settings = broker_settings(
        emu, token_ttl_min_seconds=120, token_ttl_default_seconds=600, token_ttl_max_seconds=900
    )
    async with running_broker(settings) as broker:
        too_long = await post(broker.client, json.dumps({"ttlSeconds": 901}).encode(), JSON)
        no_key = await broker.client.post("/v1/session-tokens", content=b"{}")
        empty_idem = await post(broker.client, b"{}", JSON, **{"Idempotency-Key": ""})
    assert too_long.status_code == 400
    assert "between 120 and 900" in too_long.json()["error"]["message"]
    assert no_key.status_code == 401
    assert error_code(no_key) == "unauthorized"
    assert no_key.headers["www-authenticate"] == 'Bearer realm="avatar-relay"'
    assert empty_idem.status_code == 400
    assert error_code(empty_idem) == "invalidRequest"
    assert emu.stats.tokens_minted == 0
