"""Error answers keep the headers of the exception they stand for, in the one error shape."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from app.api.errors import install_error_handlers
from app.emulator import Emulator
from tests.broker.conftest import CALLER_KEY, broker_settings, error_code, running_broker
from tests.support.servers import running_app


async def test_method_not_allowed_keeps_its_allow_header(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        response = await broker.client.get(
            "/v1/session-tokens", headers={"Authorization": f"Bearer {CALLER_KEY}"}
        )
    assert response.status_code == 405
    assert error_code(response) == "methodNotAllowed"
    assert response.headers["allow"] == "POST"
    assert emu.stats.tokens_minted == 0


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            "{not json",
            "application/json",
            "the request body is not valid JSON"
            " (Expecting property name enclosed in double quotes)",
        ),
        ("[1, 2]", "application/json", "the request body must be a JSON object"),
        (
            "ttlSeconds=900",
            "application/x-www-form-urlencoded",
            "the request body must be a JSON object with Content-Type: application/json",
        ),
        ('{"ttl": 900}', "application/json", "ttl: Extra inputs are not permitted"),
    ],
)
async def test_a_bad_body_is_described_for_a_person(
    emu: Emulator, body: str, content_type: str, message: str
) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        response = await broker.client.post(
            "/v1/session-tokens",
            content=body,
            headers={"Authorization": f"Bearer {CALLER_KEY}", "Content-Type": content_type},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"
    assert response.json()["error"]["message"] == message
    assert emu.stats.tokens_minted == 0


async def test_http_exception_headers_reach_the_caller() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/guarded")
    async def guarded() -> None:
        raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})

    async with running_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/guarded", headers={"X-Request-ID": "req-7"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"] == "req-7"
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "sign in first", "requestId": "req-7"}
    }
