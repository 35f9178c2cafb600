"""The framing both relay protocols share (docs/protocol.md section 2), for their codecs.

Every message is one binary WebSocket frame: a type byte, a flags byte (bits a type does not
define must be zero), fixed little-endian fields, `str8` short strings (a length byte, then 1 to
64 bytes of printable ASCII), then PCM, a payload or UTF-8 text to the end of the frame.
Sequenced messages carry their u32 seq at offset 2. Reading is strict: every violation raises
`RelayError` with a stable code; writing refuses values the wire cannot carry (`ValueError`).
"""

from __future__ import annotations

import struct
from typing import Final

from avatar_relay_client.errors import ErrorCode, RelayError

MAX_ID_BYTES: Final = 64
MAX_SEQ: Final = 0xFFFF_FFFF
EMPTY_TAG: Final = b"\x00"  # an empty short string


def invalid(message: str) -> RelayError:
    return RelayError(ErrorCode.INVALID_REQUEST, message)


def check_u32(value: int, name: str) -> None:
    if not 0 <= value <= MAX_SEQ:
        raise ValueError(f"{name} must fit in u32: {value}")


def printable(raw: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in raw)


def short_string(value: str, name: str, *, allow_empty: bool = False) -> bytes:
    """Ids and codes: printable ASCII without spaces, 1..64 bytes, u8 length prefix."""
    raw = value.encode("ascii")
    if len(raw) > MAX_ID_BYTES or (not raw and not allow_empty) or not printable(raw):
        raise ValueError(f"{name} must be 1..64 printable ASCII characters: {value!r}")
    return bytes((len(raw),)) + raw


def check_size(data: bytes, max_bytes: int | None) -> None:
    """Within the size limit, and at least the 2-byte header."""
    size = len(data)
    if max_bytes is not None and size > max_bytes:
        raise RelayError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message of {size} bytes exceeds {max_bytes}"
        )
    if size < 2:
        raise invalid("message shorter than its 2-byte header")


def read_short(
    data: bytes, offset: int, name: str, *, allow_empty: bool = False
) -> tuple[str, int]:
    """The short string at `offset`, and the offset after it."""
    if offset >= len(data):
        raise invalid(f"truncated {name}")
    size = data[offset]
    end = offset + 1 + size
    if end > len(data):
        raise invalid(f"truncated {name}")
    raw = data[offset + 1 : end]
    if size > MAX_ID_BYTES or (size == 0 and not allow_empty) or not printable(raw):
        raise invalid(f"{name} must be 1..64 printable ASCII characters")
    return raw.decode("ascii"), end


def read_text(data: bytes, offset: int) -> str:
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("message text is not UTF-8") from None


def allowed_flags(flags: int, allowed: int) -> None:
    if flags & ~allowed:
        raise invalid("reserved flag bits set")


def u32_at(data: bytes, offset: int) -> int:
    if len(data) < offset + 4:
        raise invalid("truncated header")
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def no_trailing(data: bytes, offset: int) -> None:
    if offset != len(data):
        raise invalid("unexpected bytes after the message")


def check_seq(seq: int) -> None:
    if seq == 0:
        raise RelayError(ErrorCode.BAD_SEQUENCE, "sequence numbers start at 1")
