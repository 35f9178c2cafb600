"""Secrets stay secret: captured logs (every logger, DEBUG) and responses never show them."""

from __future__ import annotations

import logging

import jwt
import pytest
from pydantic import SecretStr

from app.emulator import Emulator
from tests.broker.conftest import (
    CALLER_KEY,
    UPSTREAM_KEY,
    broker_settings,
    running_broker,
    unique,
)

NOISY = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore")


def _record_text(record: logging.LogRecord) -> str:
    # Message, arguments and every `extra` field: a secret could hide in any of them.
    return f"{record.getMessage()} {record.__dict__!r}"


async def test_keys_and_tokens_never_leak(
    emu: Emulator, emu2: Emulator, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in NOISY:
        logger = logging.getLogger(name)
        logger.addHandler(caplog.handler)
    settings = broker_settings(
        emu, emu2, redis_url=redis_url, token_pool_size=2, rate_limit_principal_per_minute=100
    )
    responses = []
    try:
        async with running_broker(settings) as broker:
            for name in NOISY:
                logging.getLogger(name).setLevel(logging.DEBUG)
            await broker.services.tokens.refill_pool()
            idem = {"Idempotency-Key": unique("leak")}
            responses += [
                await broker.mint(),  # from the pool
                await broker.mint({"ttlSeconds": 900}),  # minted directly
                await broker.mint(headers=idem),
                await broker.mint(headers=idem),  # replayed
                await broker.mint(key=CALLER_KEY[:-1] + "X"),  # near miss
                await broker.mint(key=None, headers={"X-API-Key": CALLER_KEY + " extra"}),
                await broker.mint(key=jwt.encode({"sub": CALLER_KEY}, "k" * 32)),
            ]
            emu.faults.console_status = 500  # primary fails, fallback serves
            responses.append(await broker.mint({"ttlSeconds": 901}))
            emu2.faults.console_status = 401  # both fail
            responses.append(await broker.mint({"ttlSeconds": 902}))
            emu.faults.console_status = emu2.faults.console_status = None
        # The upstream key itself is wrong: the console's refusal must not echo it.
        wrong = broker_settings(emu, spatialreal_api_key=SecretStr(UPSTREAM_KEY + "-old"))
        async with running_broker(wrong) as broker:
            responses.append(await broker.mint())
    finally:
        for name in NOISY:
            logging.getLogger(name).removeHandler(caplog.handler)

    tokens = [r.json()["sessionToken"] for r in responses if r.status_code == 201]
    assert len(tokens) >= 5
    assert [r.status_code for r in responses].count(401) == 3

    logged = "\n".join(_record_text(record) for record in caplog.records)
    assert caplog.records, "nothing was captured: the scan would prove nothing"
    for secret in (CALLER_KEY, UPSTREAM_KEY, *tokens):
        assert secret not in logged
    for response in responses:
        seen = response.text + repr(dict(response.headers))
        assert CALLER_KEY not in seen
        assert UPSTREAM_KEY not in seen
        mine = response.json().get("sessionToken") if response.status_code == 201 else None
        assert all(token not in seen for token in tokens if token != mine)

    # One audit line per issued token, naming who, where and which request; never the token.
    audits = [r for r in caplog.records if r.name == "avatar_relay.audit"]
    assert len(audits) == len(tokens)
    for line in audits:
        assert line.__dict__["principal"].startswith("apikey:")
        assert line.__dict__["region"] in ("ap-northeast", "us-west")
        assert line.__dict__["request_id"]
