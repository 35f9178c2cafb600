"""The producer wire protocol `avatar-relay.producer.v1`: binary messages, one per WebSocket frame.

A producer is a server-side program (a voice agent) that speaks through a relay session's avatar:
it sends the avatar's audio, and hears back what happened to it (docs/protocol.md, part II). The
framing is the browser protocol's: byte 0 the type, byte 1 the flags, fixed little-endian fields,
length-prefixed short strings, then PCM or text to the end of the frame; sequenced messages carry
their u32 sequence number at bytes 2..6. Type numbers differ from the browser protocol's (0x1_
up, 0x9_ down), so a message sent on the wrong socket is an unknown type, never a misreading.

Decoding is strict: every violation raises `RelayError` with a stable code.
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
)

SUBPROTOCOL: Final = "avatar-relay.producer.v1"

# The framing shared with the other relay protocol (framing.py).
MAX_ID_BYTES: Final = framing.MAX_ID_BYTES
MAX_SEQ: Final = framing.MAX_SEQ
EMPTY_TAG: Final = framing.EMPTY_TAG


class ProducerType(IntEnum):
    HELLO = 0x11
    AUDIO = 0x12
    INTERRUPT = 0x13
    ACK = 0x14
    PING = 0x15
    PONG = 0x16
    BYE = 0x17
    # Revision 2 (RTC sessions; docs/protocol.md section 17): additions only.
    PAUSE = 0x18
    RESUME = 0x19


class EventType(IntEnum):
    WELCOME = 0x91
    CONVERSATION_STARTED = 0x92
    FIRST_FRAME = 0x93
    CONVERSATION_COMPLETED = 0x94
    CONVERSATION_INTERRUPTED = 0x95
    CONVERSATION_ABORTED = 0x96
    BROWSER = 0x97
    BARGE_IN = 0x98
    MICROPHONE = 0x99
    ACK = 0x9A
    PING = 0x9B
    PONG = 0x9C
    ERROR = 0x9D
    RESUME_FAILED = 0x9E
    # Revision 2 (RTC sessions): sent only where the WELCOME says so.
    PLAYBACK_STATE = 0x9F


class PlaybackStateKind(IntEnum):
    """SERVER_PLAYBACK_STATE's states, as the avatar service reports a request's playout."""

    PLAYING = 1
    PAUSED = 2
    ENDED = 3
    INTERRUPTED = 4


class BrowserState(IntEnum):
    CONNECTED = 1  # the browser's first connection was welcomed
    DISCONNECTED = 2  # a welcomed browser connection went away (it may resume)
    RESUMED = 3  # the browser came back and resumed


# Flag bits. Bits a type does not define must be zero.
FLAG_END: Final = 0x01  # AUDIO (up) and MICROPHONE (down): last chunk of the utterance
FLAG_RESUMED: Final = 0x01  # WELCOME: this connection continues an earlier one
FLAG_MICROPHONE: Final = 0x02  # WELCOME: the browser's audio is forwarded as MICROPHONE
FLAG_BROWSER_SPEAKS: Final = 0x04  # WELCOME: the browser's audio is avatar speech too
FLAG_PLAYBACK_CONTROL: Final = 0x08  # WELCOME (revision 2): PAUSE and RESUME are available
FLAG_RTC: Final = 0x10  # WELCOME (revision 2): an RTC session (the avatar is in a LiveKit room)
FLAG_BY_BROWSER: Final = 0x01  # STARTED: by the browser's audio; INTERRUPTED: by its INTERRUPT

_WELCOME_FLAGS: Final = (
    FLAG_RESUMED | FLAG_MICROPHONE | FLAG_BROWSER_SPEAKS | FLAG_PLAYBACK_CONTROL | FLAG_RTC
)

_HEAD = struct.Struct("<BB")
_HEAD_U32 = struct.Struct("<BBI")
_HEAD_U32_U32 = struct.Struct("<BBII")  # STARTED: seq, input seq; RESUME_FAILED
_OUTCOME = struct.Struct("<BBIII")  # seq, audio ms, frames
_WELCOME = struct.Struct("<BBIIII")  # producer ack, server seq, rate, window ms
_PLAYBACK = struct.Struct("<BBIBI")  # seq, state, played ms


# --- producer -> server ---


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on every connection. `last_seq`: highest event seq received (0 = none)."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class Audio:
    """One chunk of an utterance of avatar speech; `end` marks its last chunk."""

    seq: int
    pcm: bytes
    end: bool = False


@dataclass(frozen=True, slots=True)
class Interrupt:
    seq: int


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Bye:
    pass


@dataclass(frozen=True, slots=True)
class Pause:
    """Hold the latest request's playout (RTC sessions whose WELCOME has PLAYBACK_CONTROL)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Resume:
    seq: int


ProducerMessage = Hello | Audio | Interrupt | Ack | Ping | Pong | Bye | Pause | Resume


# --- server -> producer ---


@dataclass(frozen=True, slots=True)
class Welcome:
    session_id: str
    producer_ack: int
    server_seq: int
    sample_rate: int
    resume_window_ms: int
    resumed: bool = False
    microphone: bool = False
    browser_speaks: bool = False
    playback_control: bool = False
    rtc: bool = False


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    """`input_seq`: the seq of the AUDIO chunk that started it (the producer's own, or the
    browser's when `by_browser`)."""

    seq: int
    conversation_id: str
    input_seq: int
    by_browser: bool = False


@dataclass(frozen=True, slots=True)
class FirstFrame:
    """The conversation's first animation frame went out on the browser's stream."""

    seq: int
    conversation_id: str


@dataclass(frozen=True, slots=True)
class ConversationCompleted:
    seq: int
    conversation_id: str
    audio_ms: int  # its audio given to the browser
    frames: int  # its frames given to the browser


@dataclass(frozen=True, slots=True)
class ConversationInterrupted:
    seq: int
    conversation_id: str
    audio_ms: int  # how much of its audio the browser had been given when it stopped
    frames: int
    by_browser: bool = False  # barge-in: the browser's INTERRUPT, else the producer's


@dataclass(frozen=True, slots=True)
class ConversationAborted:
    seq: int
    conversation_id: str
    audio_ms: int
    frames: int
    code: str  # a stable error code, e.g. upstreamError, creditsExhausted
    message: str = ""


@dataclass(frozen=True, slots=True)
class Browser:
    seq: int
    state: BrowserState


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The browser sent INTERRUPT. `conversation_id`: the one it was being given, or empty."""

    seq: int
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Microphone:
    """One chunk of the browser's audio (the user's microphone), when forwarding is on."""

    seq: int
    pcm: bytes
    end: bool = False


@dataclass(frozen=True, slots=True)
class PlaybackState:
    """SERVER_PLAYBACK_STATE of the avatar service, passed on (RTC sessions): the request's
    playout is `state` after `played_ms` of it; `reason` e.g. `pause_timeout`."""

    seq: int
    conversation_id: str
    state: PlaybackStateKind
    played_ms: int
    reason: str = ""


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


Event = (
    ConversationStarted
    | FirstFrame
    | ConversationCompleted
    | ConversationInterrupted
    | ConversationAborted
    | Browser
    | BargeIn
    | Microphone
    | PlaybackState
)
SEQUENCED: Final = (
    ConversationStarted,
    FirstFrame,
    ConversationCompleted,
    ConversationInterrupted,
    ConversationAborted,
    Browser,
    BargeIn,
    Microphone,
    PlaybackState,
)
ServerMessage = Welcome | Event | ServerAck | ServerPing | ServerPong | ServerError | ResumeFailed


# --- helpers ---


def _need(data: bytes, size: int, name: str) -> None:
    if len(data) < size:
        raise invalid(f"truncated {name}")


def _pcm(data: bytes, offset: int, end: bool) -> bytes:
    pcm = data[offset:]
    if len(pcm) % 2:
        raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
    if not pcm and not end:
        raise RelayError(ErrorCode.BAD_AUDIO, "empty audio without the end flag")
    return bytes(pcm)


# --- producer -> server: encoding (the producer's side) ---


def encode_producer(message: ProducerMessage) -> bytes:
    match message:
        case Hello(last_seq):
            check_u32(last_seq, "last_seq")
            return _HEAD_U32.pack(ProducerType.HELLO, 0, last_seq)
        case Audio(seq, pcm, end):
            check_u32(seq, "seq")
            if len(pcm) % 2:
                raise ValueError("PCM s16le needs an even number of bytes")
            return _HEAD_U32.pack(ProducerType.AUDIO, FLAG_END if end else 0, seq) + pcm
        case Interrupt(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ProducerType.INTERRUPT, 0, seq)
        case Ack(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ProducerType.ACK, 0, seq)
        case Ping(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ProducerType.PING, 0, nonce)
        case Pong(nonce):
            check_u32(nonce, "nonce")
            return _HEAD_U32.pack(ProducerType.PONG, 0, nonce)
        case Bye():
            return _HEAD.pack(ProducerType.BYE, 0)
        case Pause(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ProducerType.PAUSE, 0, seq)
        case Resume(seq):
            check_u32(seq, "seq")
            return _HEAD_U32.pack(ProducerType.RESUME, 0, seq)
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
        _need(data, 6, "AUDIO header")
        (seq,) = struct.unpack_from("<I", data, 2)
        end = bool(flags & FLAG_END)
        pcm = _pcm(data, 6, end)
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


# --- server -> producer: encoding (the relay's side) ---


def encode_welcome(message: Welcome) -> bytes:
    for value, name in (
        (message.producer_ack, "producer_ack"),
        (message.server_seq, "server_seq"),
        (message.sample_rate, "sample_rate"),
        (message.resume_window_ms, "resume_window_ms"),
    ):
        check_u32(value, name)
    flags = (
        (FLAG_RESUMED if message.resumed else 0)
        | (FLAG_MICROPHONE if message.microphone else 0)
        | (FLAG_BROWSER_SPEAKS if message.browser_speaks else 0)
        | (FLAG_PLAYBACK_CONTROL if message.playback_control else 0)
        | (FLAG_RTC if message.rtc else 0)
    )
    head = _WELCOME.pack(
        EventType.WELCOME,
        flags,
        message.producer_ack,
        message.server_seq,
        message.sample_rate,
        message.resume_window_ms,
    )
    return head + short_string(message.session_id, "session id")


def encode_started(seq: int, tag: bytes, input_seq: int, *, by_browser: bool) -> bytes:
    """`tag`: the conversation id as a short string (the relay encodes it once)."""
    flags = FLAG_BY_BROWSER if by_browser else 0
    return _HEAD_U32_U32.pack(EventType.CONVERSATION_STARTED, flags, seq, input_seq) + tag


def encode_first_frame(seq: int, tag: bytes) -> bytes:
    return _HEAD_U32.pack(EventType.FIRST_FRAME, 0, seq) + tag


def encode_completed(seq: int, tag: bytes, audio_ms: int, frames: int) -> bytes:
    return _OUTCOME.pack(EventType.CONVERSATION_COMPLETED, 0, seq, audio_ms, frames) + tag


def encode_interrupted(
    seq: int, tag: bytes, audio_ms: int, frames: int, *, by_browser: bool
) -> bytes:
    flags = FLAG_BY_BROWSER if by_browser else 0
    return _OUTCOME.pack(EventType.CONVERSATION_INTERRUPTED, flags, seq, audio_ms, frames) + tag


def encode_aborted(
    seq: int, tag: bytes, audio_ms: int, frames: int, code: str, message: str
) -> bytes:
    return b"".join(
        (
            _OUTCOME.pack(EventType.CONVERSATION_ABORTED, 0, seq, audio_ms, frames),
            tag,
            short_string(code, "code"),
            message.encode("utf-8"),
        )
    )


def encode_browser(seq: int, state: BrowserState) -> bytes:
    return _HEAD_U32.pack(EventType.BROWSER, 0, seq) + bytes((state,))


def encode_barge_in(seq: int, tag: bytes) -> bytes:
    """`tag` may be b"\\x00": nothing was being given to the browser."""
    return _HEAD_U32.pack(EventType.BARGE_IN, 0, seq) + tag


def encode_microphone(seq: int, pcm: bytes, *, end: bool) -> bytes:
    return _HEAD_U32.pack(EventType.MICROPHONE, FLAG_END if end else 0, seq) + pcm


def encode_playback_state(
    seq: int, tag: bytes, state: PlaybackStateKind, played_ms: int, reason: str
) -> bytes:
    head = _PLAYBACK.pack(EventType.PLAYBACK_STATE, 0, seq, state, played_ms)
    return head + tag + reason.encode("utf-8")


def encode_ack(seq: int) -> bytes:
    return _HEAD_U32.pack(EventType.ACK, 0, seq)


def encode_ping(nonce: int) -> bytes:
    return _HEAD_U32.pack(EventType.PING, 0, nonce)


def encode_pong(nonce: int) -> bytes:
    return _HEAD_U32.pack(EventType.PONG, 0, nonce)


def encode_error(code: str, message: str) -> bytes:
    return _HEAD.pack(EventType.ERROR, 0) + short_string(code, "code") + message.encode("utf-8")


def encode_resume_failed(last_seq: int, available_from: int, code: str) -> bytes:
    head = _HEAD_U32_U32.pack(EventType.RESUME_FAILED, 0, last_seq, available_from)
    return head + short_string(code, "code")


def encode_server(message: ServerMessage) -> bytes:
    """Any server message from its fields (tests, vectors; the relay uses the functions above)."""
    match message:
        case Welcome():
            return encode_welcome(message)
        case ConversationStarted(seq, cid, input_seq, by_browser):
            check_u32(seq, "seq")
            check_u32(input_seq, "input_seq")
            return encode_started(seq, short_string(cid, "id"), input_seq, by_browser=by_browser)
        case FirstFrame(seq, cid):
            check_u32(seq, "seq")
            return encode_first_frame(seq, short_string(cid, "id"))
        case ConversationCompleted(seq, cid, audio_ms, frames):
            _check_outcome(seq, audio_ms, frames)
            return encode_completed(seq, short_string(cid, "id"), audio_ms, frames)
        case ConversationInterrupted(seq, cid, audio_ms, frames, by_browser):
            _check_outcome(seq, audio_ms, frames)
            tag = short_string(cid, "id")
            return encode_interrupted(seq, tag, audio_ms, frames, by_browser=by_browser)
        case ConversationAborted(seq, cid, audio_ms, frames, code, text):
            _check_outcome(seq, audio_ms, frames)
            return encode_aborted(seq, short_string(cid, "id"), audio_ms, frames, code, text)
        case Browser(seq, state):
            check_u32(seq, "seq")
            return encode_browser(seq, BrowserState(state))
        case BargeIn(seq, cid):
            check_u32(seq, "seq")
            return encode_barge_in(seq, short_string(cid, "id", allow_empty=True))
        case Microphone(seq, pcm, end):
            check_u32(seq, "seq")
            if len(pcm) % 2:
                raise ValueError("PCM s16le needs an even number of bytes")
            return encode_microphone(seq, pcm, end=end)
        case PlaybackState(seq, cid, state, played_ms, reason):
            check_u32(seq, "seq")
            check_u32(played_ms, "played_ms")
            tag = short_string(cid, "id")
            return encode_playback_state(seq, tag, PlaybackStateKind(state), played_ms, reason)
        case ServerAck(seq):
            check_u32(seq, "seq")
            return encode_ack(seq)
        case ServerPing(nonce):
            check_u32(nonce, "nonce")
            return encode_ping(nonce)
        case ServerPong(nonce):
            check_u32(nonce, "nonce")
            return encode_pong(nonce)
        case ServerError(code, text):
            return encode_error(code, text)
        case ResumeFailed(last_seq, available_from, code):
            check_u32(last_seq, "last_seq")
            check_u32(available_from, "available_from")
            return encode_resume_failed(last_seq, available_from, code)
    raise TypeError(f"not a server message: {message!r}")  # pragma: no cover


def _check_outcome(seq: int, audio_ms: int, frames: int) -> None:
    check_u32(seq, "seq")
    check_u32(audio_ms, "audio_ms")
    check_u32(frames, "frames")


# --- server -> producer: decoding (the producer's side; same strictness) ---


def decode_server(data: bytes, max_bytes: int | None = None) -> ServerMessage:
    check_size(data, max_bytes)
    size = len(data)
    kind, flags = data[0], data[1]
    if kind == EventType.MICROPHONE:
        allowed_flags(flags, FLAG_END)
        _need(data, 6, "MICROPHONE header")
        (seq,) = struct.unpack_from("<I", data, 2)
        end = bool(flags & FLAG_END)
        return Microphone(seq, _pcm(data, 6, end), end)
    if kind == EventType.CONVERSATION_STARTED:
        allowed_flags(flags, FLAG_BY_BROWSER)
        _need(data, _HEAD_U32_U32.size, "CONVERSATION_STARTED")
        _, _, seq, input_seq = _HEAD_U32_U32.unpack_from(data)
        cid, offset = read_short(data, _HEAD_U32_U32.size, "conversation id")
        no_trailing(data, offset)
        return ConversationStarted(seq, cid, input_seq, bool(flags & FLAG_BY_BROWSER))
    if kind == EventType.FIRST_FRAME:
        allowed_flags(flags, 0)
        _need(data, 6, "FIRST_FRAME")
        (seq,) = struct.unpack_from("<I", data, 2)
        cid, offset = read_short(data, 6, "conversation id")
        no_trailing(data, offset)
        return FirstFrame(seq, cid)
    if kind in (
        EventType.CONVERSATION_COMPLETED,
        EventType.CONVERSATION_INTERRUPTED,
        EventType.CONVERSATION_ABORTED,
    ):
        by_browser_allowed = kind == EventType.CONVERSATION_INTERRUPTED
        allowed_flags(flags, FLAG_BY_BROWSER if by_browser_allowed else 0)
        _need(data, _OUTCOME.size, EventType(kind).name)
        _, _, seq, audio_ms, frames = _OUTCOME.unpack_from(data)
        cid, offset = read_short(data, _OUTCOME.size, "conversation id")
        if kind == EventType.CONVERSATION_ABORTED:
            code, offset = read_short(data, offset, "code")
            return ConversationAborted(seq, cid, audio_ms, frames, code, read_text(data, offset))
        no_trailing(data, offset)
        if kind == EventType.CONVERSATION_COMPLETED:
            return ConversationCompleted(seq, cid, audio_ms, frames)
        return ConversationInterrupted(seq, cid, audio_ms, frames, bool(flags & FLAG_BY_BROWSER))
    if kind == EventType.BROWSER:
        allowed_flags(flags, 0)
        if size != 7:
            raise invalid(f"BROWSER must be 7 bytes, got {size}")
        (seq,) = struct.unpack_from("<I", data, 2)
        try:
            state = BrowserState(data[6])
        except ValueError:
            raise invalid(f"unknown browser state {data[6]}") from None
        return Browser(seq, state)
    if kind == EventType.BARGE_IN:
        allowed_flags(flags, 0)
        _need(data, 6, "BARGE_IN")
        (seq,) = struct.unpack_from("<I", data, 2)
        cid, offset = read_short(data, 6, "conversation id", allow_empty=True)
        no_trailing(data, offset)
        return BargeIn(seq, cid)
    if kind in (EventType.ACK, EventType.PING, EventType.PONG):
        allowed_flags(flags, 0)
        if size != 6:
            raise invalid(f"{EventType(kind).name} must be 6 bytes, got {size}")
        (value,) = struct.unpack_from("<I", data, 2)
        if kind == EventType.ACK:
            return ServerAck(value)
        return ServerPing(value) if kind == EventType.PING else ServerPong(value)
    if kind == EventType.WELCOME:
        allowed_flags(flags, _WELCOME_FLAGS)
        _need(data, _WELCOME.size, "WELCOME")
        _, _, producer_ack, server_seq, rate, window_ms = _WELCOME.unpack_from(data)
        session_id, offset = read_short(data, _WELCOME.size, "session id")
        no_trailing(data, offset)
        return Welcome(
            session_id,
            producer_ack,
            server_seq,
            rate,
            window_ms,
            resumed=bool(flags & FLAG_RESUMED),
            microphone=bool(flags & FLAG_MICROPHONE),
            browser_speaks=bool(flags & FLAG_BROWSER_SPEAKS),
            playback_control=bool(flags & FLAG_PLAYBACK_CONTROL),
            rtc=bool(flags & FLAG_RTC),
        )
    if kind == EventType.PLAYBACK_STATE:
        allowed_flags(flags, 0)
        _need(data, _PLAYBACK.size, "PLAYBACK_STATE")
        _, _, seq, state, played_ms = _PLAYBACK.unpack_from(data)
        try:
            kind_of_state = PlaybackStateKind(state)
        except ValueError:
            raise invalid(f"unknown playback state {state}") from None
        cid, offset = read_short(data, _PLAYBACK.size, "conversation id")
        return PlaybackState(seq, cid, kind_of_state, played_ms, read_text(data, offset))
    if kind == EventType.ERROR:
        allowed_flags(flags, 0)
        code, offset = read_short(data, 2, "code")
        return ServerError(code, read_text(data, offset))
    if kind == EventType.RESUME_FAILED:
        allowed_flags(flags, 0)
        _need(data, _HEAD_U32_U32.size, "RESUME_FAILED")
        _, _, last_seq, available_from = _HEAD_U32_U32.unpack_from(data)
        code, offset = read_short(data, _HEAD_U32_U32.size, "code")
        no_trailing(data, offset)
        return ResumeFailed(last_seq, available_from, code)
    raise RelayError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown server message type 0x{kind:02x}")
