"""What a protocol tells the link: how to write its messages and what the server's mean.

The link is protocol-neutral. A `Wire` writes the link's own messages (HELLO, ACK, PING, PONG,
BYE) in a protocol's bytes and reads the server's messages into the link's vocabulary
(`Inbound`); the browser and producer clients each bring one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from avatar_relay_client.errors import ErrorCode, RelayError

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's answer to HELLO: what it accepted from us and how far it has got.
    `message` is the protocol's own welcome, for the client on top."""

    client_ack: int
    server_seq: int
    message: object


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E_co]):
    """A sequenced server message, for the consumer."""

    seq: int
    event: E_co


@dataclass(frozen=True, slots=True)
class Acked:
    seq: int


@dataclass(frozen=True, slots=True)
class Pinged:
    nonce: int


@dataclass(frozen=True, slots=True)
class Ponged:
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    """The server ended the session in-band (ERROR, RESUME_FAILED): the link stops with it."""

    error: RelayError


Inbound = Greeting | Delivery[E] | Acked | Pinged | Ponged | Refused


class Wire(Protocol[E_co]):
    """A protocol's link messages. `read` raises RelayError on bytes it cannot parse."""

    @property
    def subprotocol(self) -> str: ...

    def hello(self, last_seq: int) -> bytes: ...

    def ack(self, seq: int) -> bytes: ...

    def ping(self, nonce: int) -> bytes: ...

    def pong(self, nonce: int) -> bytes: ...

    def bye(self) -> bytes: ...

    def read(self, data: bytes) -> Inbound[E_co]: ...


def expect_greeting(message: Inbound[E], last_seq: int) -> Greeting:
    """The greeting a new socket must open with, continuing from `last_seq`; else the error."""
    match message:
        case Greeting():
            if message.server_seq < last_seq:
                raise RelayError(
                    ErrorCode.RESUME_FAILED,
                    f"server is at seq {message.server_seq}, client already has {last_seq}",
                )
            return message
        case Refused(error):
            raise error
        case Delivery(_, event):
            got = type(event).__name__
        case _:
            got = type(message).__name__
    raise RelayError(ErrorCode.PROTOCOL_ERROR, f"expected the greeting, got {got}")
