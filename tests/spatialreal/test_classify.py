"""The spec's error tables, row by row."""

from __future__ import annotations

import pytest

from app.errors import AppError, ErrorCode, Phase, contract_retryable
from app.spatialreal.classify import (
    classify,
    close_code_error,
    console_status_code,
    contract_code,
)

E = ErrorCode


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, E.INVALID_REQUEST),
        # our own API key is wrong: the operator's problem, whatever the SDKs call it
        (401, E.UPSTREAM_CREDENTIALS_REJECTED),
        (402, E.BILLING_REQUIRED),
        (403, E.UPSTREAM_CREDENTIALS_REJECTED),
        (404, E.APP_ID_UNRECOGNIZED),
        (409, E.INVALID_REQUEST),
        (422, E.INVALID_REQUEST),
        (429, E.CONCURRENCY_LIMIT),
        (500, E.SERVER_ERROR),
        (502, E.SERVER_ERROR),
        (503, E.SERVER_ERROR),
        (200, E.UNKNOWN),
    ],
)
def test_console_statuses(status: int, code: ErrorCode) -> None:
    assert console_status_code(status) is code
    assert classify(Phase.SESSION_TOKEN, http_status=status, text="Unauthorized") is code


def test_console_401_is_not_an_egress_error_even_when_the_body_says_unauthorized() -> None:
    # The SDK maps a bare "unauthorized" to invalidEgressConfig; the spec's console table does not.
    assert (
        classify(Phase.SESSION_TOKEN, http_status=401, server_code="UNAUTHENTICATED", text="x")
        is E.UPSTREAM_CREDENTIALS_REJECTED
    )


@pytest.mark.parametrize(
    ("status", "text", "code"),
    [
        (401, "", E.SESSION_TOKEN_EXPIRED),
        (401, "unauthorized", E.SESSION_TOKEN_EXPIRED),
        (400, "", E.SESSION_TOKEN_INVALID),
        (400, "invalid session token", E.SESSION_TOKEN_INVALID),
        (400, "App ID mismatch", E.APP_ID_MISMATCH),
        (402, "", E.BILLING_REQUIRED),
        (404, "", E.APP_ID_UNRECOGNIZED),
        (404, "Avatar not found", E.AVATAR_NOT_FOUND),
        (404, "app id unrecognized", E.APP_ID_UNRECOGNIZED),
        (403, "", E.INVALID_REQUEST),
        (500, "", E.SERVER_ERROR),
        (503, "overloaded", E.SERVER_ERROR),
        (401, "token is expired", E.SESSION_TOKEN_EXPIRED),
    ],
)
def test_rejected_upgrades(status: int, text: str, code: ErrorCode) -> None:
    assert classify(Phase.WEBSOCKET_CONNECT, http_status=status, text=text) is code


@pytest.mark.parametrize(
    ("server_code", "text", "code"),
    [
        (3, "bad request", E.INVALID_REQUEST),
        ("INVALID_ARGUMENT", "", E.INVALID_REQUEST),
        (3, "invalid livekit url", E.INVALID_EGRESS_CONFIG),
        (3, "Agora channel missing", E.INVALID_EGRESS_CONFIG),
        (3, "egress type", E.INVALID_EGRESS_CONFIG),
        (16, "", E.INVALID_EGRESS_CONFIG),
        ("UNAUTHENTICATED", "", E.INVALID_EGRESS_CONFIG),
        (14, "", E.EGRESS_UNAVAILABLE),
        ("UNAVAILABLE", "", E.EGRESS_UNAVAILABLE),
        (4001, "", E.CREDITS_EXHAUSTED),
        (4002, "", E.SESSION_DURATION_EXCEEDED),
        (4003, "", E.CONCURRENCY_LIMIT),
        (4010, "", E.SESSION_TOKEN_INVALID),
        (4503, "", E.UPSTREAM_ERROR),
        ("4003", "", E.CONCURRENCY_LIMIT),
        # a server code wins over the text
        (4001, "unsupported sample rate", E.CREDITS_EXHAUSTED),
        (0, "Credits exhausted", E.CREDITS_EXHAUSTED),
        (0, "session time limit reached", E.SESSION_DURATION_EXCEEDED),
        (0, "maximum session duration", E.SESSION_DURATION_EXCEEDED),
        (0, "session denied", E.BILLING_REQUIRED),
        (0, "invalid session token", E.SESSION_TOKEN_INVALID),
        (0, "empty token", E.SESSION_TOKEN_INVALID),
        (0, "token is expired", E.SESSION_TOKEN_EXPIRED),
        (0, "session token expired", E.SESSION_TOKEN_EXPIRED),
        (0, "app id mismatch", E.APP_ID_MISMATCH),
        (0, "app id unrecognized", E.APP_ID_UNRECOGNIZED),
        (0, "AppIDUnrecognized", E.APP_ID_UNRECOGNIZED),
        (0, "avatar not found", E.AVATAR_NOT_FOUND),
        (0, "unsupported sample rate: 11025", E.UNSUPPORTED_SAMPLE_RATE),
        (0, "no audio input for 30s", E.IDLE_TIMEOUT),
        (0, "livekit silence timeout", E.IDLE_TIMEOUT),
        (0, "missing livekit_egress config", E.INVALID_EGRESS_CONFIG),
        (0, "failed to create egress connection", E.EGRESS_UNAVAILABLE),
        (0, "driven server returned non-200 status code", E.UPSTREAM_ERROR),
        (0, "driven server request failed", E.UPSTREAM_ERROR),
        (0, "expected ClientConfigureSession message", E.PROTOCOL_ERROR),
        (0, "unexpected message type", E.PROTOCOL_ERROR),
        (0, "failed to unmarshal initial message", E.PROTOCOL_ERROR),
        (0, "something odd", E.SERVER_ERROR),
        (None, None, E.SERVER_ERROR),
    ],
)
def test_server_errors(server_code: int | str | None, text: str | None, code: ErrorCode) -> None:
    for phase in (Phase.WEBSOCKET_HANDSHAKE, Phase.WEBSOCKET_RUNTIME):
        assert classify(phase, server_code=server_code, text=text) is code


def test_unknown_outside_server_phases() -> None:
    assert classify(Phase.WEBSOCKET_SEND, text="whatever") is E.UNKNOWN
    assert classify(Phase.SESSION_TOKEN) is E.UNKNOWN


# --- the close-code contract (spatialreal 0.2.2 errors.py) ---

CONTRACT = {
    4001: (E.CREDITS_EXHAUSTED, False),
    4002: (E.SESSION_DURATION_EXCEEDED, True),
    4003: (E.CONCURRENCY_LIMIT, False),
    4010: (E.SESSION_TOKEN_INVALID, False),
    4503: (E.UPSTREAM_ERROR, True),
}


@pytest.mark.parametrize(("close", "expected"), CONTRACT.items())
def test_each_contract_close_code_has_its_own_code_and_retry_rule(
    close: int, expected: tuple[ErrorCode, bool]
) -> None:
    code, retryable = expected
    assert close_code_error(close) is code
    assert contract_retryable(close) is retryable
    error = AppError(code, phase=Phase.WEBSOCKET_RUNTIME, close_code=close)
    assert error.retryable is retryable


def test_the_contract_codes_are_distinct() -> None:
    codes = [code for code, _ in CONTRACT.values()]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("close", "retryable"),
    [(4000, False), (4004, False), (4499, False), (4500, True), (4599, True), (4999, True)],
)
def test_other_contract_codes_follow_the_ranges(close: int, retryable: bool) -> None:
    assert close_code_error(close) is E.CONNECTION_CLOSED
    assert contract_retryable(close) is retryable


def test_codes_outside_the_contract_are_not_close_codes() -> None:
    assert close_code_error(None) is E.CONNECTION_CLOSED
    assert close_code_error(1006) is E.CONNECTION_CLOSED
    for outside in (None, 0, 3, 14, 1011, 3999, 5000, "UNAVAILABLE", ""):
        assert contract_code(outside) is None
    assert contract_code("4503") == 4503
    # no close code: transport trouble is worth a retry, a protocol fault is not
    assert AppError(E.CONNECTION_CLOSED).retryable
    assert not AppError(E.PROTOCOL_ERROR).retryable
