"""The browser wire protocol `avatar-relay.v1`: binary messages, one per WebSocket frame.

docs/protocol.md is the contract; this module is its reference implementation for both directions
(the relay decodes client messages and encodes server ones; the Python reference client does the
opposite). Golden vectors in docs/protocol-vectors.json pin the bytes.

Layout: byte 0 is the message type, byte 1 the flags, then fixed little-endian fields, then
length-prefixed strings, then (for media) the payload up to the end of the frame. Sequenced
messages carry their u32 sequence number at bytes 2..6, so a reader can find it without knowing
the type. Decoding is strict: every violation raises `RelayError` with a stable code, never a bare
exception, so bad input cannot crash the caller.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from avatar_relay_client import framing
from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.framing import (
    allowed_flags,
    check_seq,
    check_size,
    check_u32,
    invalid,
    no_trailing,
    read_short,
    read_text,
    short_string,
    u32_at,
)

SUBPROTOCOL: Final = "avatar-relay.v1"

# The framing shared with the other relay protocol (framing.py).
MAX_ID_BYTES: Final = framing.MAX_ID_BYTES
MAX_SEQ: Final = framing.MAX_SEQ
EMPTY_TAG: Final = framing.EMPTY_TAG

MAX_CODE_BYTES: Final = 64


class ClientType(IntEnum):
    HELLO = 0x01
    AUDIO = 0x02
    INTERRUPT = 0x03
    ACK = 0x04
    PING = 0x05
    PONG = 0x06
    BYE = 0x07


class ServerType(IntEnum):
    WELCOME = 0x81
    AUDIO = 0x82
    FRAME = 0x83
    CONVERSATION_ABORTED = 0x84
    INTERRUPTED = 0x85
    ACK = 0x86
    PING = 0x87
    PONG = 0x88
    ERROR = 0x89
    RESUME_FAILED = 0x8A
    CONVERSATION_STARTED = 0x8B


# Flag bits. Bits a type does not define must be zero.
FLAG_END: Final = 0x01  # client AUDIO: last chunk of the utterance; server AUDIO/FRAME: last one
FLAG_FIRST: Final = 0x02  # server AUDIO: first chunk of its conversation
FLAG_RESUMED: Final = 0x01  # WELCOME: this connection continues an earlier one
# WELCOME: the session does not echo the browser's audio (`audioEcho: false`); its conversations
# start with CONVERSATION_STARTED and the client yields the audio it sent itself.
FLAG_NO_ECHO: Final = 0x02

_HEAD = struct.Struct("<BB")  # type, flags
_HEAD_U32 = struct.Struct("<BBI")  # type, flags, seq or nonce
_WELCOME = struct.Struct("<BBIIII")  # type, flags, client_ack, server_seq, rate, window_ms
_RESUME_FAILED = struct.Struct("<BBII")  # type, flags, last_seq, available_from
_STARTED = struct.Struct("<BBIII")  # type, flags, seq, input_seq, until_seq


# --- client -> server messages ---


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on every connection. `last_seq`: highest server seq received (0 = none)."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class ClientAudio:
    seq: int
    pcm: bytes
    end: bool = False


@dataclass(frozen=True, slots=True)
class ClientInterrupt:
    seq: int


@dataclass(frozen=True, slots=True)
class ClientAck:
    seq: int


@dataclass(frozen=True, slots=True)
class ClientPing:
    nonce: int


@dataclass(frozen=True, slots=True)
class ClientPong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Bye:
    pass


ClientMessage = Hello | ClientAudio | ClientInterrupt | ClientAck | ClientPing | ClientPong | Bye


# --- server -> client messages ---


@dataclass(frozen=True, slots=True)
class Welcome:
    session_id: str
    client_ack: int
    server_seq: int
    sample_rate: int
    resume_window_ms: int
    resumed: bool = False
    no_echo: bool = False


@dataclass(frozen=True, slots=True)
class ServerAudio:
    seq: int
    conversation_id: str
    pcm: bytes
    first: bool = False
    end: bool = False


@dataclass(frozen=True, slots=True)
class ServerFrame:
    seq: int
    conversation_id: str
    payload: bytes
    end: bool = False


@dataclass(frozen=True, slots=True)
class ConversationAborted:
    seq: int
    conversation_id: str
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    """An echo-off session's conversation of the browser's audio takes the stream: the place of
    its first AUDIO echo. `input_seq` is the client seq of the chunk that started it;
    `until_seq` that of its last chunk when its input was already over as the marker went out
    (0: it still takes input; it ends at the utterance's END, the client's INTERRUPT or the
    conversation's end, whichever comes first)."""

    seq: int
    conversation_id: str
    input_seq: int
    until_seq: int = 0


@dataclass(frozen=True, slots=True)
class Interrupted:
    seq: int
    conversation_id: str  # empty when nothing was being delivered


@dataclass(frozen=True, slots=True)
class ServerAck:
    seq: int


@dataclass(frozen=True, slots=True)
class ServerPing:
    nonce: int


@dataclass(frozen=True, slots=True)
class ServerPong:
    nonce: int


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ResumeFailed:
    last_seq: int
    available_from: int
    code: str


ServerMessage = (
    Welcome
    | ServerAudio
    | ServerFrame
    | ConversationAborted
    | Interrupted
    | ServerAck
    | ServerPing
    | ServerPong
    | ServerError
    | ResumeFailed
    | ConversationStarted
)

SequencedServerMessage = (
    ServerAudio | ServerFrame | ConversationAborted | Interrupted | ConversationStarted
)


# --- strings ---


def conversation_tag(conversation_id: str) -> bytes:
    """The length-prefixed id as it appears on the wire; the relay caches it per conversation."""
    return short_string(conversation_id, "conversation id")


# --- encoding, client -> server ---


def encode_client(message: ClientMessage) -> bytes:
    match message:
        case Hello(last_seq):
            check_u32(last_seq, "last_seq")
            return _HEAD_U32.pack(ClientType.HELLO, 0, last_seq)
        case ClientAudio(seq, pcm, end):
            check_u32(seq, "seq")
            if len(pcm) % 2:
                raise ValueError("PCM s16le needs an even number of bytes")
            return _HEAD_U32.pack(ClientType.AUDIO, FLAG_END if end else 0, seq) + pcm
        case ClientInterrupt(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ClientType.INTERRUPT, 0, seq)
        case ClientAck(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ClientType.ACK, 0, seq)
        case ClientPing(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ClientType.PING, 0, nonce)
        case ClientPong(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ClientType.PONG, 0, nonce)
        case Bye():
            return _HEAD.pack(ClientType.BYE, 0)
    raise TypeError(f"not a client message: {message!r}")  # pragma: no cover


# --- decoding, client -> server (the relay's side: strict, every violation has a code) ---

_U32_TYPES: Final = frozenset(
    {
        ClientType.HELLO,
        ClientType.INTERRUPT,
        ClientType.ACK,
        ClientType.PING,
        ClientType.PONG,
    }
)


def decode_client(data: bytes, max_bytes: int | None = None) -> ClientMessage:
    """Parse one client frame. Raises RelayError: messageTooLarge, unknownMessageType,
    invalidRequest (truncated, trailing bytes, reserved flags), badAudio (odd or empty PCM)."""
    check_size(data, max_bytes)
    size = len(data)
    kind, flags = data[0], data[1]
    if kind == ClientType.AUDIO:
        if flags & ~FLAG_END:
            raise invalid("reserved flag bits set")
        if size < 6:
            raise invalid("truncated AUDIO header")
        (seq,) = struct.unpack_from("<I", data, 2)
        pcm = data[6:]
        if len(pcm) % 2:
            raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
        end = bool(flags & FLAG_END)
        if not pcm and not end:
            raise RelayError(ErrorCode.BAD_AUDIO, "empty AUDIO without the end flag")
        check_seq(seq)
        return ClientAudio(seq, bytes(pcm), end)
    if kind in _U32_TYPES:
        if flags:
            raise invalid("reserved flag bits set")
        if size != 6:
            raise invalid(f"{ClientType(kind).name} must be 6 bytes, got {size}")
        (value,) = struct.unpack_from("<I", data, 2)
        if kind == ClientType.HELLO:
            return Hello(value)
        if kind == ClientType.INTERRUPT:
            check_seq(value)
            return ClientInterrupt(value)
        if kind == ClientType.ACK:
            return ClientAck(value)
        if kind == ClientType.PING:
            return ClientPing(value)
        return ClientPong(value)
    if kind == ClientType.BYE:
        if flags:
            raise invalid("reserved flag bits set")
        if size != 2:
            raise invalid(f"BYE must be 2 bytes, got {size}")
        return Bye()
    raise RelayError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown client message type 0x{kind:02x}")


# --- encoding, server -> client (hot path: a small header, then the payload untouched) ---


def encode_audio(seq: int, tag: bytes, pcm: bytes, *, first: bool, end: bool) -> bytes:
    flags = (FLAG_FIRST if first else 0) | (FLAG_END if end else 0)
    return b"".join((_HEAD_U32.pack(ServerType.AUDIO, flags, seq), tag, pcm))


def encode_frame(seq: int, tag: bytes, payload: bytes, *, end: bool) -> bytes:
    """A FRAME: 6-byte header, the conversation tag, then the upstream bytes verbatim."""
    return b"".join((_HEAD_U32.pack(ServerType.FRAME, FLAG_END if end else 0, seq), tag, payload))


def encode_aborted(seq: int, tag: bytes, code: str, message: str) -> bytes:
    return b"".join(
        (
            _HEAD_U32.pack(ServerType.CONVERSATION_ABORTED, 0, seq),
            tag,
            short_string(code, "code"),
            message.encode("utf-8"),
        )
    )


def encode_started(seq: int, tag: bytes, input_seq: int, until_seq: int) -> bytes:
    return _STARTED.pack(ServerType.CONVERSATION_STARTED, 0, seq, input_seq, until_seq) + tag


def encode_interrupted(seq: int, tag: bytes) -> bytes:
    """`tag` may be b"\\x00" (empty id) when no conversation was being delivered."""
    return _HEAD_U32.pack(ServerType.INTERRUPTED, 0, seq) + tag


def encode_server(message: ServerMessage) -> bytes:
    match message:
        case Welcome(session_id, client_ack, server_seq, rate, window_ms, resumed, no_echo):
            for value, name in (
                (client_ack, "client_ack"),
                (server_seq, "server_seq"),
                (rate, "sample_rate"),
                (window_ms, "resume_window_ms"),
            ):
                check_u32(value, name)
            head = _WELCOME.pack(
                ServerType.WELCOME,
                (FLAG_RESUMED if resumed else 0) | (FLAG_NO_ECHO if no_echo else 0),
                client_ack,
                server_seq,
                rate,
                window_ms,
            )
            return head + short_string(session_id, "session id")
        case ServerAudio(seq, conversation_id, pcm, first, end):
            check_u32(seq, "seq")
            return encode_audio(seq, conversation_tag(conversation_id), pcm, first=first, end=end)
        case ServerFrame(seq, conversation_id, payload, end):
            check_u32(seq, "seq")
            return encode_frame(seq, conversation_tag(conversation_id), payload, end=end)
        case ConversationAborted(seq, conversation_id, code, text):
            check_u32(seq, "seq")
            return encode_aborted(seq, conversation_tag(conversation_id), code, text)
        case ConversationStarted(seq, conversation_id, input_seq, until_seq):
            for value, name in ((seq, "seq"), (input_seq, "input_seq"), (until_seq, "until_seq")):
                check_u32(value, name)
            return encode_started(seq, conversation_tag(conversation_id), input_seq, until_seq)
        case Interrupted(seq, conversation_id):
            check_u32(seq, "seq")
            tag = short_string(conversation_id, "conversation id", allow_empty=True)
            return encode_interrupted(seq, tag)
        case ServerAck(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ServerType.ACK, 0, seq)
        case ServerPing(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ServerType.PING, 0, nonce)
        case ServerPong(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ServerType.PONG, 0, nonce)
        case ServerError(code, text):
            return _HEAD.pack(ServerType.ERROR, 0) + short_string(code, "code") + text.encode()
        case ResumeFailed(last_seq, available_from, code):
            check_u32(last_seq, "last_seq")
            check_u32(available_from, "available_from")
            head = _RESUME_FAILED.pack(ServerType.RESUME_FAILED, 0, last_seq, available_from)
            return head + short_string(code, "code")
    raise TypeError(f"not a server message: {message!r}")  # pragma: no cover


# --- decoding, server -> client (the reference client's side; same strictness) ---


def decode_server(data: bytes, max_bytes: int | None = None) -> ServerMessage:
    check_size(data, max_bytes)
    size = len(data)
    kind, flags = data[0], data[1]
    if kind == ServerType.AUDIO:
        allowed_flags(flags, FLAG_FIRST | FLAG_END)
        seq = u32_at(data, 2)
        conversation_id, offset = read_short(data, 6, "conversation id")
        pcm = data[offset:]
        if len(pcm) % 2:
            raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
        return ServerAudio(
            seq, conversation_id, bytes(pcm), bool(flags & FLAG_FIRST), bool(flags & FLAG_END)
        )
    if kind == ServerType.FRAME:
        allowed_flags(flags, FLAG_END)
        seq = u32_at(data, 2)
        conversation_id, offset = read_short(data, 6, "conversation id")
        return ServerFrame(seq, conversation_id, bytes(data[offset:]), bool(flags & FLAG_END))
    if kind == ServerType.CONVERSATION_ABORTED:
        allowed_flags(flags, 0)
        seq = u32_at(data, 2)
        conversation_id, offset = read_short(data, 6, "conversation id")
        code, offset = read_short(data, offset, "code")
        return ConversationAborted(seq, conversation_id, code, read_text(data, offset))
    if kind == ServerType.INTERRUPTED:
        allowed_flags(flags, 0)
        seq = u32_at(data, 2)
        conversation_id, offset = read_short(data, 6, "conversation id", allow_empty=True)
        no_trailing(data, offset)
        return Interrupted(seq, conversation_id)
    if kind == ServerType.CONVERSATION_STARTED:
        allowed_flags(flags, 0)
        if size < _STARTED.size:
            raise invalid("truncated CONVERSATION_STARTED")
        _, _, seq, input_seq, until_seq = _STARTED.unpack_from(data)
        conversation_id, offset = read_short(data, _STARTED.size, "conversation id")
        no_trailing(data, offset)
        return ConversationStarted(seq, conversation_id, input_seq, until_seq)
    if kind in (ServerType.ACK, ServerType.PING, ServerType.PONG):
        allowed_flags(flags, 0)
        if size != 6:
            raise invalid(f"{ServerType(kind).name} must be 6 bytes, got {size}")
        value = u32_at(data, 2)
        if kind == ServerType.ACK:
            return ServerAck(value)
        return ServerPing(value) if kind == ServerType.PING else ServerPong(value)
    if kind == ServerType.WELCOME:
        allowed_flags(flags, FLAG_RESUMED | FLAG_NO_ECHO)
        if size < _WELCOME.size:
            raise invalid("truncated WELCOME")
        _, _, client_ack, server_seq, rate, window_ms = _WELCOME.unpack_from(data)
        session_id, offset = read_short(data, _WELCOME.size, "session id")
        no_trailing(data, offset)
        return Welcome(
            session_id,
            client_ack,
            server_seq,
            rate,
            window_ms,
            bool(flags & FLAG_RESUMED),
            bool(flags & FLAG_NO_ECHO),
        )
    if kind == ServerType.ERROR:
        allowed_flags(flags, 0)
        code, offset = read_short(data, 2, "code")
        return ServerError(code, read_text(data, offset))
    if kind == ServerType.RESUME_FAILED:
        allowed_flags(flags, 0)
        if size < _RESUME_FAILED.size:
            raise invalid("truncated RESUME_FAILED")
        _, _, last_seq, available_from = _RESUME_FAILED.unpack_from(data)
        code, offset = read_short(data, _RESUME_FAILED.size, "code")
        no_trailing(data, offset)
        return ResumeFailed(last_seq, available_from, code)
    raise RelayError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown server message type 0x{kind:02x}")
