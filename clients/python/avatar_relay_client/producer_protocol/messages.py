"""The producer protocol's messages: type numbers, flags, wire layouts and one dataclass each."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from avatar_relay_client import framing
from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.framing import (
    invalid,
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

WELCOME_FLAGS: Final = (
    FLAG_RESUMED | FLAG_MICROPHONE | FLAG_BROWSER_SPEAKS | FLAG_PLAYBACK_CONTROL | FLAG_RTC
)

HEAD = struct.Struct("<BB")
HEAD_U32 = struct.Struct("<BBI")
HEAD_U32_U32 = struct.Struct("<BBII")  # STARTED: seq, input seq; RESUME_FAILED
OUTCOME = struct.Struct("<BBIII")  # seq, audio ms, frames
WELCOME = struct.Struct("<BBIIII")  # producer ack, server seq, rate, window ms
PLAYBACK = struct.Struct("<BBIBI")  # seq, state, played ms


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


def need(data: bytes, size: int, name: str) -> None:
    if len(data) < size:
        raise invalid(f"truncated {name}")


def pcm_after(data: bytes, offset: int, end: bool) -> bytes:
    pcm = data[offset:]
    if len(pcm) % 2:
        raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
    if not pcm and not end:
        raise RelayError(ErrorCode.BAD_AUDIO, "empty audio without the end flag")
    return bytes(pcm)
