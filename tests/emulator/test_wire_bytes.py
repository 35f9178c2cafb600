"""The animation messages' exact bytes, pinned: the frame builder may get faster, never different
(a relay's byte-exact forwarding tests and recorded sessions rely on them)."""

from __future__ import annotations

import hashlib

import pytest

from app.emulator import wire

# sha256 of wire.animation_message(connection_id, req_id, index, end, frame_bytes, avatar_id),
# recorded with the builder before it was made faster.
PINNED = [
    (
        ("conn_abc", "req_1", 0, False, 1024, "avatar_demo"),
        1068,
        "48b8b4b3e1d16f91c968864a4e94bb06",
    ),
    (
        ("conn_abc", "req_1", 41, True, 1024, "avatar_demo"),
        1070,
        "27fb6321a3e255555bbe2d3c8d448599",
    ),
    (("c", "r", 3, False, 0, "a"), 21, "6d1c3ecbdead67b0899007df67e47a08"),
    (("c", "r", 3, True, 100, "a"), 123, "3afe2c34114ce6e96df4eafc062fb920"),
]


@pytest.mark.parametrize(("args", "size", "digest"), PINNED)
def test_animation_message_bytes_are_pinned(
    args: tuple[str, str, int, bool, int, str], size: int, digest: str
) -> None:
    connection_id, req_id, index, end, frame_bytes, avatar_id = args
    message = wire.animation_message(
        connection_id, req_id, index, end, frame_bytes, avatar_id=avatar_id
    )
    assert len(message) == size
    assert hashlib.sha256(message).hexdigest()[:32] == digest


def test_a_small_frame_field_by_field() -> None:
    # 6 {4: payload, 15: marker, 5: avatar, 3: end, 2: req_id, 1: connection_id}, then 1: type.
    payload = hashlib.blake2b(b"r\x00" + (3).to_bytes(8, "big") + bytes(4), digest_size=64)
    expected = (
        b"\x32\x18"
        + b"\x22\x05"
        + payload.digest()[:5]
        + b"\x7a\x04\x00\x00\x00\x03"
        + b"\x2a\x01a"
        + b"\x18\x01"
        + b"\x12\x01r"
        + b"\x0a\x01c"
        + b"\x08\x05"
    )
    assert wire.animation_message("c", "r", 3, True, 5, avatar_id="a") == expected


def test_the_same_request_builds_each_frame_apart() -> None:
    # Parts are shared per request: frames of one request still differ where they must.
    first = wire.animation_message("c", "r", 0, False, 64, avatar_id="a")
    last = wire.animation_message("c", "r", 1, True, 64, avatar_id="a")
    other = wire.animation_message("c", "q", 0, False, 64, avatar_id="a")
    assert first != last != other
    assert last.endswith(b"\x18\x01\x12\x01r\x0a\x01c\x08\x05")
    assert wire.frame_payload("r", 0, 64) in first
    assert wire.frame_payload("q", 0, 64) in other
