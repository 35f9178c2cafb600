"""Producer -> server: encoding (the producer's side) and strict decoding (the relay's side)."""

from __future__ import annotations

import struct
from typing import Final

from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.framing import (
    allowed_flags,
    check_seq,
    check_size,
    check_u32,
    invalid,
)
from avatar_relay_client.producer_protocol.messages import (
    FLAG_END,
    HEAD,
    HEAD_U32,
    Ack,
    Audio,
    Bye,
    Hello,
    Interrupt,
    Pause,
    Ping,
    Pong,
    ProducerMessage,
    ProducerType,
    Resume,
    need,
    pcm_after,
)

# --- producer -> server: encoding (the producer's side) ---


def encode_producer(message: ProducerMessage) -> bytes:
    match message:
        case Hello(last_seq):
            check_u32(last_seq, "last_seq")
            return HEAD_U32.pack(ProducerType.HELLO, 0, last_seq)
        case Audio(seq, pcm, end):
            check_u32(seq, "seq")
            if len(pcm) % 2:
                raise ValueError("PCM s16le needs an even number of bytes")
            return HEAD_U32.pack(ProducerType.AUDIO, FLAG_END if end else 0, seq) + pcm
        case Interrupt(seq):
            check_u32(seq, "seq")
            return HEAD_U32.pack(ProducerType.INTERRUPT, 0, seq)
        case Ack(seq):
            check_u32(seq, "seq")
            return HEAD_U32.pack(ProducerType.ACK, 0, seq)
        case Ping(nonce):
            check_u32(nonce, "nonce")
            return HEAD_U32.pack(ProducerType.PING, 0, nonce)
        case Pong(nonce):
            check_u32(nonce, "nonce")
            return HEAD_U32.pack(ProducerType.PONG, 0, nonce)
        case Bye():
            return HEAD.pack(ProducerType.BYE, 0)
        case Pause(seq):
            check_u32(seq, "seq")
            return HEAD_U32.pack(ProducerType.PAUSE, 0, seq)
        case Resume(seq):
            check_u32(seq, "seq")
            return HEAD_U32.pack(ProducerType.RESUME, 0, seq)
    raise TypeError(f"not a producer message: {message!r}")  # pragma: no cover


# --- producer -> server: decoding (the relay's side: strict) ---


def decode_producer(data: bytes, max_bytes: int | None = None) -> ProducerMessage:
    """Parse one producer frame. Raises RelayError: messageTooLarge, unknownMessageType,
    invalidRequest (truncated, trailing bytes, reserved flags), badAudio, badSequence (seq 0)."""
    check_size(data, max_bytes)
    size = len(data)
    kind, flags = data[0], data[1]
    if kind == ProducerType.AUDIO:
        allowed_flags(flags, FLAG_END)
        need(data, 6, "AUDIO header")
        (seq,) = struct.unpack_from("<I", data, 2)
        end = bool(flags & FLAG_END)
        pcm = pcm_after(data, 6, end)
        check_seq(seq)
        return Audio(seq, pcm, end)
    if kind in _U32_TYPES:
        allowed_flags(flags, 0)
        if size != 6:
            raise invalid(f"{ProducerType(kind).name} must be 6 bytes, got {size}")
        (value,) = struct.unpack_from("<I", data, 2)
        if kind == ProducerType.HELLO:
            return Hello(value)
        if kind in _SEQUENCED_CONTROL:
            check_seq(value)
            return _SEQUENCED_CONTROL[kind](value)
        if kind == ProducerType.ACK:
            return Ack(value)
        return Ping(value) if kind == ProducerType.PING else Pong(value)
    if kind == ProducerType.BYE:
        allowed_flags(flags, 0)
        if size != 2:
            raise invalid(f"BYE must be 2 bytes, got {size}")
        return Bye()
    raise RelayError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown producer message type 0x{kind:02x}")


_SEQUENCED_CONTROL: Final[dict[int, type[Interrupt | Pause | Resume]]] = {
    ProducerType.INTERRUPT: Interrupt,
    ProducerType.PAUSE: Pause,
    ProducerType.RESUME: Resume,
}
_U32_TYPES: Final = frozenset(
    {
        ProducerType.HELLO,
        ProducerType.ACK,
        ProducerType.PING,
        ProducerType.PONG,
        *_SEQUENCED_CONTROL,
    }
)
