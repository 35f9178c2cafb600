"""Error answers keep the headers of the exception they stand for, in the one error shape."""

from __future__ import annotations

import httpx
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
    assert error_code(response) == "invalidRequest"
    assert response.headers["allow"] == "POST"
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
