"""The producer protocol codec (`avatar-relay.producer.v1`): golden vectors, round trips, and one
stable error code per kind of bad input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp
from avatar_relay_client.errors import ErrorCode, RelayError
from tests.relay.test_protocol import VECTORS as ALL_VECTORS

VECTORS: dict[str, Any] = ALL_VECTORS["producer"]


def _from_fields(direction: str, fields: dict[str, Any]) -> pp.ProducerMessage | pp.ServerMessage:
    """Build a message from the vector file's camelCase fields (byte fields are hex)."""
    f = dict(fields)
    kind = f.pop("type")

    def raw(name: str) -> bytes:
        return bytes.fromhex(f[name])

    if direction == "producer":
        producer: dict[str, Any] = {
            "HELLO": lambda: pp.Hello(f["lastSeq"]),
            "AUDIO": lambda: pp.Audio(f["seq"], raw("pcm"), f["end"]),
            "INTERRUPT": lambda: pp.Interrupt(f["seq"]),
            "ACK": lambda: pp.Ack(f["seq"]),
            "PING": lambda: pp.Ping(f["nonce"]),
            "PONG": lambda: pp.Pong(f["nonce"]),
            "BYE": pp.Bye,
            "PAUSE": lambda: pp.Pause(f["seq"]),
            "RESUME": lambda: pp.Resume(f["seq"]),
        }
        message: pp.ProducerMessage | pp.ServerMessage = producer[kind]()
        return message
    server: dict[str, Any] = {
        "WELCOME": lambda: pp.Welcome(
            f["sessionId"],
            f["producerAck"],
            f["serverSeq"],
            f["sampleRate"],
            f["resumeWindowMs"],
            resumed=f["resumed"],
            microphone=f["microphone"],
            browser_speaks=f["browserSpeaks"],
            playback_control=f.get("playbackControl", False),
            rtc=f.get("rtc", False),
        ),
        "CONVERSATION_STARTED": lambda: pp.ConversationStarted(
            f["seq"], f["conversationId"], f["inputSeq"], f["byBrowser"]
        ),
        "FIRST_FRAME": lambda: pp.FirstFrame(f["seq"], f["conversationId"]),
        "CONVERSATION_COMPLETED": lambda: pp.ConversationCompleted(
            f["seq"], f["conversationId"], f["audioMs"], f["frames"]
        ),
        "CONVERSATION_INTERRUPTED": lambda: pp.ConversationInterrupted(
            f["seq"], f["conversationId"], f["audioMs"], f["frames"], f["byBrowser"]
        ),
        "CONVERSATION_ABORTED": lambda: pp.ConversationAborted(
            f["seq"], f["conversationId"], f["audioMs"], f["frames"], f["code"], f["message"]
        ),
        "BROWSER": lambda: pp.Browser(f["seq"], pp.BrowserState[f["state"].upper()]),
        "BARGE_IN": lambda: pp.BargeIn(f["seq"], f["conversationId"]),
        "MICROPHONE": lambda: pp.Microphone(f["seq"], raw("pcm"), f["end"]),
        "PLAYBACK_STATE": lambda: pp.PlaybackState(
            f["seq"],
            f["conversationId"],
            pp.PlaybackStateKind[f["state"].upper()],
            f["playedMs"],
            f["reason"],
        ),
        "ACK": lambda: pp.ServerAck(f["seq"]),
        "PING": lambda: pp.ServerPing(f["nonce"]),
        "PONG": lambda: pp.ServerPong(f["nonce"]),
        "ERROR": lambda: pp.ServerError(f["code"], f["message"]),
        "RESUME_FAILED": lambda: pp.ResumeFailed(f["lastSeq"], f["availableFrom"], f["code"]),
    }
    built: pp.ServerMessage = server[kind]()
    return built


def test_vector_file_names_the_protocol() -> None:
    assert VECTORS["protocol"] == pp.SUBPROTOCOL == "avatar-relay.producer.v1"
    names = [v["name"] for v in VECTORS["vectors"] + VECTORS["invalid"]]
    assert len(names) == len(set(names))
    up = {v["fields"]["type"] for v in VECTORS["vectors"] if v["direction"] == "producer"}
    down = {v["fields"]["type"] for v in VECTORS["vectors"] if v["direction"] == "server"}
    assert up == {t.name for t in pp.ProducerType}
    assert down == {t.name for t in pp.EventType}


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_golden_vector_encodes_and_decodes(vector: dict[str, Any]) -> None:
    message = _from_fields(vector["direction"], vector["fields"])
    data = bytes.fromhex(vector["hex"])
    if vector["direction"] == "producer":
        assert isinstance(message, pp.ProducerMessage)
        assert pp.encode_producer(message).hex() == vector["hex"]
        assert pp.decode_producer(data) == message
    else:
        assert isinstance(message, pp.ServerMessage)
        assert pp.encode_server(message).hex() == vector["hex"]
        assert pp.decode_server(data) == message


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_has_its_stable_code(vector: dict[str, Any]) -> None:
    decode = pp.decode_producer if vector["direction"] == "producer" else pp.decode_server
    with pytest.raises(RelayError) as caught:
        decode(bytes.fromhex(vector["hex"]))
    assert caught.value.code == ErrorCode(vector["error"])


def test_no_type_number_is_shared_with_the_browser_protocol() -> None:
    # A message sent on the wrong socket is an unknown type, never a misreading.
    producer = {int(t) for t in pp.ProducerType} | {int(t) for t in pp.EventType}
    browser = {int(t) for t in p.ClientType} | {int(t) for t in p.ServerType}
    assert not producer & browser
    for kind in browser:
        with pytest.raises(RelayError) as caught:
            pp.decode_producer(bytes((kind, 0, 1, 0, 0, 0)))
        assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE
        with pytest.raises(RelayError) as caught:
            pp.decode_server(bytes((kind, 0, 1, 0, 0, 0)))
        assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_oversized_producer_message_is_message_too_large() -> None:
    data = pp.encode_producer(pp.Audio(1, b"\x00" * 2000))
    assert pp.decode_producer(data, max_bytes=len(data)) == pp.Audio(1, b"\x00" * 2000)
    with pytest.raises(RelayError) as caught:
        pp.decode_producer(data, max_bytes=len(data) - 1)
    assert caught.value.code is ErrorCode.MESSAGE_TOO_LARGE


def test_encoders_refuse_values_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="u32"):
        pp.encode_producer(pp.Ack(2**32))
    with pytest.raises(ValueError, match="even"):
        pp.encode_producer(pp.Audio(1, b"\x01"))
    with pytest.raises(ValueError, match="u32"):
        pp.encode_server(pp.ConversationCompleted(1, "c", 2**32, 0))
    with pytest.raises(ValueError, match="printable"):
        pp.encode_server(pp.FirstFrame(1, "has space"))


# --- properties ---

u32 = st.integers(min_value=0, max_value=pp.MAX_SEQ)
seqs = st.integers(min_value=1, max_value=pp.MAX_SEQ)
pcm = st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 2])
ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
codes = st.sampled_from([c.value for c in ErrorCode])

producer_messages = st.one_of(
    st.builds(pp.Hello, u32),
    st.builds(pp.Audio, seqs, pcm, st.just(True)),
    st.builds(pp.Audio, seqs, pcm.filter(bool), st.booleans()),
    st.builds(pp.Interrupt, seqs),
    st.builds(pp.Ack, u32),
    st.builds(pp.Ping, u32),
    st.builds(pp.Pong, u32),
    st.just(pp.Bye()),
    st.builds(pp.Pause, seqs),
    st.builds(pp.Resume, seqs),
)
server_messages = st.one_of(
    st.builds(
        pp.Welcome,
        ids,
        u32,
        u32,
        u32,
        u32,
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(pp.ConversationStarted, u32, ids, u32, st.booleans()),
    st.builds(pp.FirstFrame, u32, ids),
    st.builds(pp.ConversationCompleted, u32, ids, u32, u32),
    st.builds(pp.ConversationInterrupted, u32, ids, u32, u32, st.booleans()),
    st.builds(pp.ConversationAborted, u32, ids, u32, u32, codes, st.text(max_size=40)),
    st.builds(pp.Browser, u32, st.sampled_from(pp.BrowserState)),
    st.builds(pp.BargeIn, u32, ids | st.just("")),
    st.builds(pp.Microphone, u32, pcm, st.just(True)),
    st.builds(pp.Microphone, u32, pcm.filter(bool), st.booleans()),
    st.builds(pp.ServerAck, u32),
    st.builds(pp.ServerPing, u32),
    st.builds(pp.ServerPong, u32),
    st.builds(pp.ServerError, codes, st.text(max_size=40)),
    st.builds(pp.ResumeFailed, u32, u32, codes),
    st.builds(
        pp.PlaybackState, u32, ids, st.sampled_from(pp.PlaybackStateKind), u32, st.text(max_size=40)
    ),
)


@given(producer_messages)
def test_producer_messages_round_trip(message: pp.ProducerMessage) -> None:
    assert pp.decode_producer(pp.encode_producer(message)) == message


@given(server_messages)
def test_server_messages_round_trip(message: pp.ServerMessage) -> None:
    data = pp.encode_server(message)
    assert pp.decode_server(data) == message
    if isinstance(message, pp.SEQUENCED):
        # the sequence number sits at the same place in every sequenced message
        assert int.from_bytes(data[2:6], "little") == message.seq


STABLE_DECODE_CODES = {
    ErrorCode.INVALID_REQUEST,
    ErrorCode.UNKNOWN_MESSAGE_TYPE,
    ErrorCode.BAD_AUDIO,
    ErrorCode.BAD_SEQUENCE,
    ErrorCode.MESSAGE_TOO_LARGE,
}


def _decode_outcome(decode: Any, data: bytes) -> ErrorCode | None:
    try:
        decode(data, 64)
    except RelayError as error:
        return error.code
    return None


@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_fail_with_a_stable_code(data: bytes) -> None:
    # Any other exception type would escape and fail the test.
    for decode in (pp.decode_producer, pp.decode_server):
        outcome = _decode_outcome(decode, data)
        assert outcome is None or outcome in STABLE_DECODE_CODES
