"""Server -> producer: encoding (the relay's side) and decoding (the producer's; as strict)."""

from __future__ import annotations

import struct

from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.framing import (
    allowed_flags,
    check_size,
    check_u32,
    invalid,
    no_trailing,
    read_short,
    read_text,
    short_string,
)
from avatar_relay_client.producer_protocol.messages import (
    FLAG_BROWSER_SPEAKS,
    FLAG_BY_BROWSER,
    FLAG_END,
    FLAG_MICROPHONE,
    FLAG_PLAYBACK_CONTROL,
    FLAG_RESUMED,
    FLAG_RTC,
    HEAD,
    HEAD_U32,
    HEAD_U32_U32,
    OUTCOME,
    PLAYBACK,
    WELCOME,
    WELCOME_FLAGS,
    BargeIn,
    Browser,
    BrowserState,
    ConversationAborted,
    ConversationCompleted,
    ConversationInterrupted,
    ConversationStarted,
    EventType,
    FirstFrame,
    Microphone,
    PlaybackState,
    PlaybackStateKind,
    ResumeFailed,
    ServerAck,
    ServerError,
    ServerMessage,
    ServerPing,
    ServerPong,
    Welcome,
    need,
    pcm_after,
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
    head = WELCOME.pack(
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
    return HEAD_U32_U32.pack(EventType.CONVERSATION_STARTED, flags, seq, input_seq) + tag


def encode_first_frame(seq: int, tag: bytes) -> bytes:
    return HEAD_U32.pack(EventType.FIRST_FRAME, 0, seq) + tag


def encode_completed(seq: int, tag: bytes, audio_ms: int, frames: int) -> bytes:
    return OUTCOME.pack(EventType.CONVERSATION_COMPLETED, 0, seq, audio_ms, frames) + tag


def encode_interrupted(
    seq: int, tag: bytes, audio_ms: int, frames: int, *, by_browser: bool
) -> bytes:
    flags = FLAG_BY_BROWSER if by_browser else 0
    return OUTCOME.pack(EventType.CONVERSATION_INTERRUPTED, flags, seq, audio_ms, frames) + tag


def encode_aborted(
    seq: int, tag: bytes, audio_ms: int, frames: int, code: str, message: str
) -> bytes:
    return b"".join(
        (
            OUTCOME.pack(EventType.CONVERSATION_ABORTED, 0, seq, audio_ms, frames),
            tag,
            short_string(code, "code"),
            message.encode("utf-8"),
        )
    )


def encode_browser(seq: int, state: BrowserState) -> bytes:
    return HEAD_U32.pack(EventType.BROWSER, 0, seq) + bytes((state,))


def encode_barge_in(seq: int, tag: bytes) -> bytes:
    """`tag` may be b"\\x00": nothing was being given to the browser."""
    return HEAD_U32.pack(EventType.BARGE_IN, 0, seq) + tag


def encode_microphone(seq: int, pcm: bytes, *, end: bool) -> bytes:
    return HEAD_U32.pack(EventType.MICROPHONE, FLAG_END if end else 0, seq) + pcm


def encode_playback_state(
    seq: int, tag: bytes, state: PlaybackStateKind, played_ms: int, reason: str
) -> bytes:
    head = PLAYBACK.pack(EventType.PLAYBACK_STATE, 0, seq, state, played_ms)
    return head + tag + reason.encode("utf-8")


def encode_ack(seq: int) -> bytes:
    return HEAD_U32.pack(EventType.ACK, 0, seq)


def encode_ping(nonce: int) -> bytes:
    return HEAD_U32.pack(EventType.PING, 0, nonce)


def encode_pong(nonce: int) -> bytes:
    return HEAD_U32.pack(EventType.PONG, 0, nonce)


def encode_error(code: str, message: str) -> bytes:
    return HEAD.pack(EventType.ERROR, 0) + short_string(code, "code") + message.encode("utf-8")


def encode_resume_failed(last_seq: int, available_from: int, code: str) -> bytes:
    head = HEAD_U32_U32.pack(EventType.RESUME_FAILED, 0, last_seq, available_from)
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
        need(data, 6, "MICROPHONE header")
        (seq,) = struct.unpack_from("<I", data, 2)
        end = bool(flags & FLAG_END)
        return Microphone(seq, pcm_after(data, 6, end), end)
    if kind == EventType.CONVERSATION_STARTED:
        allowed_flags(flags, FLAG_BY_BROWSER)
        need(data, HEAD_U32_U32.size, "CONVERSATION_STARTED")
        _, _, seq, input_seq = HEAD_U32_U32.unpack_from(data)
        cid, offset = read_short(data, HEAD_U32_U32.size, "conversation id")
        no_trailing(data, offset)
        return ConversationStarted(seq, cid, input_seq, bool(flags & FLAG_BY_BROWSER))
    if kind == EventType.FIRST_FRAME:
        allowed_flags(flags, 0)
        need(data, 6, "FIRST_FRAME")
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
        need(data, OUTCOME.size, EventType(kind).name)
        _, _, seq, audio_ms, frames = OUTCOME.unpack_from(data)
        cid, offset = read_short(data, OUTCOME.size, "conversation id")
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
        need(data, 6, "BARGE_IN")
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
        allowed_flags(flags, WELCOME_FLAGS)
        need(data, WELCOME.size, "WELCOME")
        _, _, producer_ack, server_seq, rate, window_ms = WELCOME.unpack_from(data)
        session_id, offset = read_short(data, WELCOME.size, "session id")
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
        need(data, PLAYBACK.size, "PLAYBACK_STATE")
        _, _, seq, state, played_ms = PLAYBACK.unpack_from(data)
        try:
            kind_of_state = PlaybackStateKind(state)
        except ValueError:
            raise invalid(f"unknown playback state {state}") from None
        cid, offset = read_short(data, PLAYBACK.size, "conversation id")
        return PlaybackState(seq, cid, kind_of_state, played_ms, read_text(data, offset))
    if kind == EventType.ERROR:
        allowed_flags(flags, 0)
        code, offset = read_short(data, 2, "code")
        return ServerError(code, read_text(data, offset))
    if kind == EventType.RESUME_FAILED:
        allowed_flags(flags, 0)
        need(data, HEAD_U32_U32.size, "RESUME_FAILED")
        _, _, last_seq, available_from = HEAD_U32_U32.unpack_from(data)
        code, offset = read_short(data, HEAD_U32_U32.size, "code")
        no_trailing(data, offset)
        return ResumeFailed(last_seq, available_from, code)
    raise RelayError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown server message type 0x{kind:02x}")
