"""The browser protocol codec: golden vectors (shared with the JS client's tests), round trips,
and one stable error code per kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avatar_relay_client import browser_protocol as p
from avatar_relay_client.errors import ErrorCode, RelayError

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def _from_fields(direction: str, fields: dict[str, Any]) -> p.ClientMessage | p.ServerMessage:
    """Build a message from the vector file's camelCase fields (byte fields are hex)."""
    f = dict(fields)
    kind = f.pop("type")

    def raw(name: str) -> bytes:
        return bytes.fromhex(f[name])

    if direction == "client":
        client: dict[str, Any] = {
            "HELLO": lambda: p.Hello(f["lastSeq"]),
            "AUDIO": lambda: p.ClientAudio(f["seq"], raw("pcm"), f["end"]),
            "INTERRUPT": lambda: p.ClientInterrupt(f["seq"]),
            "ACK": lambda: p.ClientAck(f["seq"]),
            "PING": lambda: p.ClientPing(f["nonce"]),
            "PONG": lambda: p.ClientPong(f["nonce"]),
            "BYE": p.Bye,
        }
        message: p.ClientMessage | p.ServerMessage = client[kind]()
        return message
    server: dict[str, Any] = {
        "WELCOME": lambda: p.Welcome(
            f["sessionId"],
            f["clientAck"],
            f["serverSeq"],
            f["sampleRate"],
            f["resumeWindowMs"],
            f["resumed"],
            f.get("noEcho", False),
        ),
        "AUDIO": lambda: p.ServerAudio(
            f["seq"], f["conversationId"], raw("pcm"), f["first"], f["end"]
        ),
        "FRAME": lambda: p.ServerFrame(f["seq"], f["conversationId"], raw("payload"), f["end"]),
        "CONVERSATION_ABORTED": lambda: p.ConversationAborted(
            f["seq"], f["conversationId"], f["code"], f["message"]
        ),
        "INTERRUPTED": lambda: p.Interrupted(f["seq"], f["conversationId"]),
        "CONVERSATION_STARTED": lambda: p.ConversationStarted(
            f["seq"], f["conversationId"], f["inputSeq"], f["untilSeq"]
        ),
        "ACK": lambda: p.ServerAck(f["seq"]),
        "PING": lambda: p.ServerPing(f["nonce"]),
        "PONG": lambda: p.ServerPong(f["nonce"]),
        "ERROR": lambda: p.ServerError(f["code"], f["message"]),
        "RESUME_FAILED": lambda: p.ResumeFailed(f["lastSeq"], f["availableFrom"], f["code"]),
    }
    built: p.ServerMessage = server[kind]()
    return built


def test_vector_file_names_the_protocol() -> None:
    assert VECTORS["protocol"] == p.SUBPROTOCOL == "avatar-relay.v1"
    names = [v["name"] for v in VECTORS["vectors"] + VECTORS["invalid"]]
    assert len(names) == len(set(names))
    # every message type of both directions has at least one vector
    client_types = {v["fields"]["type"] for v in VECTORS["vectors"] if v["direction"] == "client"}
    server_types = {v["fields"]["type"] for v in VECTORS["vectors"] if v["direction"] == "server"}
    assert client_types == {t.name for t in p.ClientType}
    assert server_types == {t.name for t in p.ServerType}


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_golden_vector_encodes_and_decodes(vector: dict[str, Any]) -> None:
    message = _from_fields(vector["direction"], vector["fields"])
    data = bytes.fromhex(vector["hex"])
    if vector["direction"] == "client":
        assert isinstance(message, p.ClientMessage)
        assert p.encode_client(message).hex() == vector["hex"]
        assert p.decode_client(data) == message
    else:
        assert isinstance(message, p.ServerMessage)
        assert p.encode_server(message).hex() == vector["hex"]
        assert p.decode_server(data) == message


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_has_its_stable_code(vector: dict[str, Any]) -> None:
    decode = p.decode_client if vector["direction"] == "client" else p.decode_server
    with pytest.raises(RelayError) as caught:
        decode(bytes.fromhex(vector["hex"]))
    assert caught.value.code == ErrorCode(vector["error"])


def test_frame_payload_is_carried_verbatim_after_a_small_header() -> None:
    payload = bytes(range(256)) * 40
    cid = "20260101120000_abcdefghijkl"
    data = p.encode_frame(9, p.conversation_tag(cid), payload, end=False)
    assert data.endswith(payload)
    assert len(data) == 6 + 1 + len(cid) + len(payload)
    decoded = p.decode_server(data)
    assert isinstance(decoded, p.ServerFrame)
    assert decoded.payload == payload


def test_oversized_client_message_is_message_too_large() -> None:
    data = p.encode_client(p.ClientAudio(1, b"\x00" * 2000))
    assert p.decode_client(data, max_bytes=len(data)) == p.ClientAudio(1, b"\x00" * 2000)
    with pytest.raises(RelayError) as caught:
        p.decode_client(data, max_bytes=len(data) - 1)
    assert caught.value.code is ErrorCode.MESSAGE_TOO_LARGE


@pytest.mark.parametrize("kind", [t.value for t in p.ServerType])
def test_server_types_are_unknown_to_the_client_decoder(kind: int) -> None:
    with pytest.raises(RelayError) as caught:
        p.decode_client(bytes((kind, 0, 1, 0, 0, 0)))
    assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_encoders_refuse_values_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="u32"):
        p.encode_client(p.ClientAck(2**32))
    with pytest.raises(ValueError, match="even"):
        p.encode_client(p.ClientAudio(1, b"\x01"))
    with pytest.raises(ValueError, match="printable"):
        p.conversation_tag("x" * 65)
    with pytest.raises(ValueError, match="printable"):
        p.conversation_tag("has space")


# --- properties ---

u32 = st.integers(min_value=0, max_value=p.MAX_SEQ)
seqs = st.integers(min_value=1, max_value=p.MAX_SEQ)
pcm = st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 2])
ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
codes = st.sampled_from([c.value for c in ErrorCode])

client_messages = st.one_of(
    st.builds(p.Hello, u32),
    st.builds(p.ClientAudio, seqs, pcm, st.just(True)),
    st.builds(p.ClientAudio, seqs, pcm.filter(bool), st.booleans()),
    st.builds(p.ClientInterrupt, seqs),
    st.builds(p.ClientAck, u32),
    st.builds(p.ClientPing, u32),
    st.builds(p.ClientPong, u32),
    st.just(p.Bye()),
)
server_messages = st.one_of(
    st.builds(p.Welcome, ids, u32, u32, u32, u32, st.booleans()),
    st.builds(p.ServerAudio, u32, ids, pcm, st.booleans(), st.booleans()),
    st.builds(p.ServerFrame, u32, ids, st.binary(max_size=200), st.booleans()),
    st.builds(p.ConversationAborted, u32, ids, codes, st.text(max_size=40)),
    st.builds(p.Interrupted, u32, ids | st.just("")),
    st.builds(p.ServerAck, u32),
    st.builds(p.ServerPing, u32),
    st.builds(p.ServerPong, u32),
    st.builds(p.ServerError, codes, st.text(max_size=40)),
    st.builds(p.ResumeFailed, u32, u32, codes),
)


@given(client_messages)
def test_client_messages_round_trip(message: p.ClientMessage) -> None:
    assert p.decode_client(p.encode_client(message)) == message


@given(server_messages)
def test_server_messages_round_trip(message: p.ServerMessage) -> None:
    data = p.encode_server(message)
    assert p.decode_server(data) == message
    if isinstance(message, p.SequencedServerMessage):
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
    for decode in (p.decode_client, p.decode_server):
        outcome = _decode_outcome(decode, data)
        assert outcome is None or outcome in STABLE_DECODE_CODES
