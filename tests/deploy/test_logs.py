"""JSON log lines: shape, context fields, and secrets that never reach the output."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from pydantic import SecretStr

from app.logs import CONTEXT_FIELDS, REDACTED, bind, configure_logging, register_secret
from app.settings import Settings

API_KEY = "sk-live-0123456789abcdef"
CALLER_KEY = "caller-key-aaaabbbbcccc"
JWT_SECRET = "jwt-secret-zzzzyyyyxxxx"


@pytest.fixture
def captured() -> io.StringIO:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        spatialreal_api_key=SecretStr(API_KEY),
        spatialreal_app_id="app-1",
        default_avatar_id="avatar-1",
        auth_mode="api-key",
        auth_api_keys=[SecretStr(CALLER_KEY)],
        jwt_secret=SecretStr(JWT_SECRET),
        log_level="debug",
    )
    stream = io.StringIO()
    configure_logging(settings, stream)
    # Any uvicorn started earlier in this process set its loggers' levels; these tests log
    # through them at the configured level. (The conftest restores all logging state after.)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_record_with_the_basic_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")
    log.info("hello %s", "world")
    log.warning("second\nline")
    first, second = lines(captured)
    assert first["msg"] == "hello world"
    assert first["level"] == "info"
    assert first["logger"] == "avatar_relay.test"
    assert isinstance(first["ts"], str)
    assert first["ts"].endswith("+00:00")
    assert second["msg"] == "second\nline"
    assert second["level"] == "warning"
    assert len(captured.getvalue().splitlines()) == 2


def test_bound_context_and_extra_fields_appear(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")
    with bind(request_id="r-1", principal="alice", region=None):
        with bind(session_id="s-1", connection_id="c-1"):
            log.info("relay", extra={"conversation_id": "conv-9", "error_code": "connectionFailed"})
        log.info("after")
    log.info("outside")
    inner, after, outside = lines(captured)
    assert inner["request_id"] == "r-1"
    assert inner["principal"] == "alice"
    assert inner["session_id"] == "s-1"
    assert inner["connection_id"] == "c-1"
    assert inner["conversation_id"] == "conv-9"
    assert inner["error_code"] == "connectionFailed"
    assert "region" not in inner
    assert after["request_id"] == "r-1"
    assert "session_id" not in after
    assert not set(CONTEXT_FIELDS) & set(outside)


async def test_context_follows_into_tasks(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")

    async def worker() -> None:
        log.info("in task")

    with bind(session_id="s-task"):
        task = asyncio.create_task(worker())
    await task
    assert lines(captured)[0]["session_id"] == "s-task"


def test_secret_named_fields_are_redacted_at_any_depth(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")
    log.info(
        "minted",
        extra={
            "sessionToken": "tok-abcdef",
            "api_key": "whatever-1234",
            "ticket": "tkt-123456",
            "headers": {"Authorization": "Bearer abc.def", "X-Api-Key": "k-999999"},
            "upstream": [{"session_token": "tok-zzzzzz"}],
            "token_ttl_seconds_used": 60,
        },
    )
    (line,) = lines(captured)
    assert line["sessionToken"] == REDACTED
    assert line["api_key"] == REDACTED
    assert line["ticket"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "X-Api-Key": REDACTED}
    assert line["upstream"] == [{"session_token": REDACTED}]
    assert line["token_ttl_seconds_used"] == 60
    for value in ("tok-abcdef", "whatever-1234", "tkt-123456", "abc.def", "k-999999", "tok-zzzzzz"):
        assert value not in captured.getvalue()


def test_configured_and_registered_secrets_are_scrubbed_everywhere(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")
    register_secret("runtime-secret-value")
    log.info("key is %s and caller %s", API_KEY, CALLER_KEY, extra={"note": f"jwt={JWT_SECRET}"})
    log.error("with %s", "runtime-secret-value")
    try:
        raise RuntimeError(f"upstream said {API_KEY}")
    except RuntimeError:
        log.exception("failed")
    text = captured.getvalue()
    for secret in (API_KEY, CALLER_KEY, JWT_SECRET, "runtime-secret-value"):
        assert secret not in text
    first, second, third = lines(captured)
    assert first["msg"] == f"key is {REDACTED} and caller {REDACTED}"
    assert second["msg"] == f"with {REDACTED}"
    assert isinstance(third["exc"], str)
    assert "RuntimeError: upstream said" in third["exc"]


def test_query_tickets_and_bearer_credentials_are_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("avatar_relay.test")
    log.info("GET /v1/relay?session=s-42&ticket=t-secret-1 and token=abc123&x=1")
    log.info("Authorization: Bearer eyJhbGciOi.payload.sig")
    first, second = lines(captured)
    assert first["msg"] == f"GET /v1/relay?session=s-42&ticket={REDACTED} and token={REDACTED}&x=1"
    assert "eyJhbGciOi" not in json.dumps(second)


def test_uvicorn_access_lines_are_structured_and_masked(captured: io.StringIO) -> None:
    access = logging.getLogger("uvicorn.access")
    access.info(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.1:5555",
        "GET",
        "/v1/relay?session=s-1&ticket=t-abcdefgh",
        "1.1",
        101,
    )
    (line,) = lines(captured)
    assert line["method"] == "GET"
    assert line["status"] == 101
    assert line["path"] == f"/v1/relay?session=s-1&ticket={REDACTED}"
    assert "t-abcdefgh" not in captured.getvalue()


def test_uvicorn_websocket_lines_do_not_carry_the_ticket(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "10.0.0.1:5555", "/v1/relay?session=s-1&ticket=t-zzzz99"
    )
    (line,) = lines(captured)
    assert (
        line["msg"]
        == f'10.0.0.1:5555 - "WebSocket /v1/relay?session=s-1&ticket={REDACTED}" [accepted]'
    )
    assert "t-zzzz99" not in captured.getvalue()
