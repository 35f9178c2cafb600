"""One endpoint of a relay session: the browser, or a server-side producer.

Each endpoint has its own delivery state, so exactly-once holds on each side independently: its
connection (one at a time), the sequence numbers it sends and the acks it gets for them, the
sequence numbers of what the relay sends it, the replay buffer that keeps those until
acknowledged, and its liveness timers. It also holds the rules on that state alone, which the
relay core (`session.py`) and the RTC producer feed (`app/rtc/feed.py`) share: taking a
sequenced message, HELLO and resume, ACKs both ways, PINGs. What a message means is the cores'.
The per-protocol encodings of the control messages the two protocols share in meaning are here
too (WELCOME aside: each protocol says different things in it).
"""

from __future__ import annotations

from app.errors import ErrorCode
from app.relay.conversations import AudioRouting, Role
from app.relay.replay import ReplayBuffer
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp


class Fatal(Exception):
    """A violation or condition that ends the session with ERROR{code}."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Overflow(Fatal):
    """An endpoint's replay buffer (with, for the browser, the conversations held behind the
    live one) went over its bounds."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(ErrorCode.SLOW_CONSUMER, "unacknowledged messages exceed the buffer")
        self.endpoint = endpoint


def _browser_ack(seq: int) -> bytes:
    return p.encode_server(p.ServerAck(seq))


def _browser_ping(nonce: int) -> bytes:
    return p.encode_server(p.ServerPing(nonce))


def _browser_pong(nonce: int) -> bytes:
    return p.encode_server(p.ServerPong(nonce))


def _browser_error(code: str, message: str) -> bytes:
    return p.encode_server(p.ServerError(code, message))


def _browser_resume_failed(last_seq: int, available_from: int, code: str) -> bytes:
    return p.encode_server(p.ResumeFailed(last_seq, available_from, code))


class Codec:
    """What the session needs of a protocol's codec, per role."""

    __slots__ = ("producer",)

    def __init__(self, role: Role) -> None:
        self.producer = role == "producer"

    def welcome(
        self,
        session_id: str,
        ep: Endpoint,
        sample_rate: int,
        window_ms: int,
        resumed: bool,
        routing: AudioRouting,
    ) -> bytes:
        """The answer to HELLO: what the endpoint's protocol says in it."""
        ack, last = ep.client_seq, ep.replay.last_seq
        if not self.producer:
            return p.encode_server(
                p.Welcome(session_id, ack, last, sample_rate, window_ms, resumed, not routing.echo)
            )
        return pp.encode_welcome(
            pp.Welcome(
                session_id,
                ack,
                last,
                sample_rate,
                window_ms,
                resumed=resumed,
                microphone=routing.forward_microphone,
                browser_speaks=routing.speaks("browser"),
            )
        )

    def decode(self, data: bytes, max_bytes: int) -> p.ClientMessage | pp.ProducerMessage:
        if self.producer:
            return pp.decode_producer(data, max_bytes)
        return p.decode_client(data, max_bytes)

    def ack(self, seq: int) -> bytes:
        return pp.encode_ack(seq) if self.producer else _browser_ack(seq)

    def ping(self, nonce: int) -> bytes:
        return pp.encode_ping(nonce) if self.producer else _browser_ping(nonce)

    def pong(self, nonce: int) -> bytes:
        return pp.encode_pong(nonce) if self.producer else _browser_pong(nonce)

    def error(self, code: str, message: str) -> bytes:
        return pp.encode_error(code, message) if self.producer else _browser_error(code, message)

    def resume_failed(self, last_seq: int, available_from: int, code: str) -> bytes:
        if self.producer:
            return pp.encode_resume_failed(last_seq, available_from, code)
        return _browser_resume_failed(last_seq, available_from, code)


class Endpoint:
    """The delivery state of one side of a session. Mutated only by the session core."""

    __slots__ = (
        "ack_due",
        "client_seq",
        "codec",
        "conn",
        "connected_at",
        "disconnected_at",
        "hello_done",
        "hellos",
        "last_ping",
        "ping_nonce",
        "replay",
        "required",
        "role",
        "unacked_in",
    )

    def __init__(self, role: Role, *, now: float, required: bool = True) -> None:
        self.role: Role = role
        self.codec = Codec(role)
        # Required: the session ends when it stays away past the resume window. An optional
        # endpoint (a producer a browser-fed session allows) becomes required once welcomed.
        self.required = required
        self.conn: int | None = None
        self.hello_done = False
        self.connected_at = now
        # Not yet connected counts as away: the resume window applies to a required endpoint.
        self.disconnected_at: float | None = now if required else None
        self.hellos = 0
        self.last_ping = now
        self.ping_nonce = 0
        # endpoint -> relay: highest contiguous seq accepted, and the acks owed for it
        self.client_seq = 0
        self.unacked_in = 0
        self.ack_due: float | None = None
        # relay -> endpoint
        self.replay = ReplayBuffer()

    def accept(self, seq: int) -> bool:
        """Take the endpoint's next sequenced message: True for `client_seq + 1`, False for one
        already accepted (a resend after a reconnect); a gap is badSequence."""
        expected = self.client_seq + 1
        if seq == expected:
            self.client_seq = seq
            return True
        if seq < expected:
            return False
        raise Fatal(ErrorCode.BAD_SEQUENCE, f"expected {self.role} seq {expected}, got {seq}")

    def count_input(self, now: float, *, urgent: bool, every: int, delay: float) -> bool:
        """One more accepted message to acknowledge: True when the ACK is due now (urgent, or
        `every` of them), else it is due within `delay`."""
        self.unacked_in += 1
        if urgent or self.unacked_in >= every:
            return True
        if self.ack_due is None:
            self.ack_due = now + delay
        return False

    def ack(self) -> bytes:
        """The ACK of everything accepted so far (nothing more is owed)."""
        self.unacked_in = 0
        self.ack_due = None
        return self.codec.ack(self.client_seq)

    def check_hello(self, last_seq: int) -> bool:
        """A HELLO resuming after `last_seq`: badAck for a number never sent; False when the
        messages after it are no longer kept (acknowledged before, so the resume fails)."""
        if last_seq > self.replay.last_seq:
            raise Fatal(ErrorCode.BAD_ACK, f"resume from {last_seq}, never sent")
        return last_seq >= self.replay.acked

    def welcomed(self, last_seq: int, now: float) -> bool:
        """The HELLO was accepted: what it confirms is forgotten, a fresh count of input to
        acknowledge starts, and the endpoint is required from now on. True for a resume (an
        earlier connection was welcomed)."""
        self.replay.ack(last_seq)
        self.hello_done = True
        self.required = True
        resumed = self.hellos > 0
        self.hellos += 1
        self.unacked_in = 0
        self.ack_due = None
        self.last_ping = now
        return resumed

    def acknowledged(self, seq: int) -> None:
        """The endpoint's ACK of the relay's stream up to `seq`."""
        if seq > self.replay.last_seq:
            raise Fatal(ErrorCode.BAD_ACK, f"ack {seq} for a message never sent")
        self.replay.ack(seq)

    def next_ping(self, now: float) -> bytes:
        """The keep-alive PING now due (its nonce is the next one)."""
        self.ping_nonce = (self.ping_nonce + 1) & p.MAX_SEQ
        self.last_ping = now
        return self.codec.ping(self.ping_nonce)

    @property
    def live(self) -> bool:
        """Connected and past HELLO: live output may be written to it."""
        return self.conn is not None and self.hello_done

    def detach(self, now: float) -> None:
        """Its connection is gone (the session lives on and waits for it)."""
        self.conn = None
        self.hello_done = False
        self.ack_due = None
        self.disconnected_at = now if self.required else None
