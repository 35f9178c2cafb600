"""Pure pieces of the ingress client: URL building and parsing one upstream frame."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from app.emulator import animation_message
from app.errors import ErrorCode, Phase
from app.proto import message_pb2
from app.spatialreal import ingress_websocket_url, parse_upstream


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h:1/v2/driveningress", "ws://h:1/v2/driveningress/websocket?id=a+b"),
        ("https://h/v2/driveningress/", "wss://h/v2/driveningress/websocket?id=a+b"),
        ("wss://h/v2/driveningress", "wss://h/v2/driveningress/websocket?id=a+b"),
        ("HTTPS://h/x?k=v", "wss://h/x/websocket?k=v&id=a+b"),
    ],
)
def test_ingress_url(base: str, expected: str) -> None:
    assert ingress_websocket_url(base, "a b") == expected


def test_query_auth_parameters() -> None:
    url = ingress_websocket_url("https://h/v2", "av", app_id="app", session_token="t/k+n")
    query = parse_qs(urlsplit(url).query)
    assert query == {"id": ["av"], "appId": ["app"], "sessionKey": ["t/k+n"]}


def test_unsupported_scheme() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ingress_websocket_url("ftp://h/v2", "a")


def test_animation_keeps_raw_bytes_and_reads_header_fields() -> None:
    raw = animation_message("conn_1", "req_1", 4, True, 64)
    message = parse_upstream(raw, "conn_1")
    assert message.raw is raw
    assert message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
    assert message.is_animation
    assert (message.req_id, message.end, message.error) == ("req_1", True, None)


def test_server_error_is_classified() -> None:
    wire = message_pb2.Message(
        type=message_pb2.MESSAGE_SERVER_ERROR,
        server_error=message_pb2.ServerError(
            connection_id="conn_9", req_id="r", code=4002, message="limit"
        ),
    ).SerializeToString()
    message = parse_upstream(wire, "conn_x")
    assert not message.is_animation
    assert message.req_id == "r"
    assert message.error is not None
    assert message.error.code is ErrorCode.SESSION_DURATION_EXCEEDED
    assert message.error.phase is Phase.WEBSOCKET_RUNTIME
    assert message.error.server_code == "4002"
    assert message.error.connection_id == "conn_9"


def test_undecodable_frame_carries_a_protocol_error() -> None:
    message = parse_upstream(b"\xff\xff\xff", "conn_1")
    assert message.raw == b"\xff\xff\xff"
    assert message.error is not None
    assert message.error.code is ErrorCode.PROTOCOL_ERROR
    assert message.error.connection_id == "conn_1"


def test_other_types_pass_through() -> None:
    wire = message_pb2.Message(
        type=message_pb2.MESSAGE_SERVER_CONFIRM_SESSION,
        server_confirm_session=message_pb2.ServerConfirmSession(connection_id="c"),
    ).SerializeToString()
    message = parse_upstream(wire)
    assert message.type == message_pb2.MESSAGE_SERVER_CONFIRM_SESSION
    assert (message.req_id, message.end, message.error) == ("", False, None)
