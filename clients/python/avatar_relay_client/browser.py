"""The Python client of the browser protocol `avatar-relay.v1` (docs/protocol.md).

For tests, benchmarks and non-browser integrators. It behaves like the browser client: it creates
a relay session over REST, keeps the socket alive across drops (new ticket, `HELLO{lastSeq}`,
resend of unacknowledged audio: the reliable link, `avatar_relay_client.link`) and hands the
consumer every sequenced server message exactly once and in order.

    async with RelayClient("http://127.0.0.1:8080", headers={"Authorization": "Bearer ..."}) as c:
        for chunk in chunks:
            await c.send_audio(chunk)
        await c.send_audio(b"", end=True)
        async for event in c.events():
            match event:
                case Audio(): play(event.pcm, event.end)                   # yieldAudioData
                case Frame(): animate([event.payload], event.conversation_id)  # yieldFramesData
                case ConversationAborted(): animate([], event.conversation_id)
                case Interrupted(): controller_interrupt()
            if isinstance(event, Frame) and event.end:
                break

`events()` raises `RelayError` when the session is over for good (the server refused a resume,
the session is gone, a protocol error ended it, or no reconnect succeeded within the resume
window); it simply ends after `close()`. When a new session would work (the session is not
found, the server went away without handing it over, it expired, its gap cannot be replayed),
the last event before the error is `SessionLost(code, message, action="newSession")`: create a
new session. A server handing the session over (close 1012 `sessionMoved`, a drain) is followed
on its own: new ticket, reconnect, resume.

`audio_echo=False` creates the session without the echo of its audio (half the messages down):
the client then yields the audio it sent itself, as `Audio` events at the place the echo would
have had (`own_audio.py`), so the consumer's loop is the same in both modes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, cast

import httpx

from avatar_relay_client import browser_protocol as p
from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.link import (
    Acked,
    Backoff,
    ClientStats,
    Delivery,
    Greeting,
    Inbound,
    Pinged,
    Ponged,
    Refused,
    ReliableLink,
    SessionLost,
    StateChange,
    error_code,
)
from avatar_relay_client.own_audio import OwnAudio

# Consumer-facing events. The sequenced server messages are the codec's own dataclasses (each
# keeps its `seq`); only connection state changes are the link's own.
Audio = p.ServerAudio
Frame = p.ServerFrame
ConversationAborted = p.ConversationAborted
Interrupted = p.Interrupted

ServerEvent = p.ServerAudio | p.ServerFrame | p.ConversationAborted | p.Interrupted
Event = ServerEvent | StateChange | SessionLost
# What the socket carries; CONVERSATION_STARTED never reaches the consumer (`_expand`).
_WireEvent = ServerEvent | p.ConversationStarted


class BrowserWire:
    """`avatar-relay.v1` in the reliable link's vocabulary."""

    subprotocol = p.SUBPROTOCOL

    def hello(self, last_seq: int) -> bytes:
        return p.encode_client(p.Hello(last_seq))

    def ack(self, seq: int) -> bytes:
        return p.encode_client(p.ClientAck(seq))

    def ping(self, nonce: int) -> bytes:
        return p.encode_client(p.ClientPing(nonce))

    def pong(self, nonce: int) -> bytes:
        return p.encode_client(p.ClientPong(nonce))

    def bye(self) -> bytes:
        return p.encode_client(p.Bye())

    def read(self, data: bytes) -> Inbound[_WireEvent]:
        message = p.decode_server(data)
        match message:
            case (
                p.ServerAudio()
                | p.ServerFrame()
                | p.ConversationAborted()
                | p.Interrupted()
                | p.ConversationStarted()
            ):
                return Delivery(message.seq, message)
            case p.Welcome():
                return Greeting(message.client_ack, message.server_seq, message)
            case p.ServerAck(seq):
                return Acked(seq)
            case p.ServerPing(nonce):
                return Pinged(nonce)
            case p.ServerPong():
                return Ponged()
            case p.ServerError(code, text):
                return Refused(RelayError(error_code(code, ErrorCode.UNKNOWN), text or code))
            case p.ResumeFailed(last_seq, available_from, code):
                return Refused(
                    RelayError(
                        error_code(code, ErrorCode.RESUME_FAILED),
                        f"cannot resume after seq {last_seq}: the server can replay from"
                        f" {available_from} ({code})",
                    )
                )


class RelayClient:
    """One relay session: REST to create it and get tickets, one WebSocket at a time to use it.

    `headers` authenticate the REST calls (the socket is authenticated by its ticket).
    `session`: join a session created elsewhere (the JSON answer of `POST /v1/relay/sessions`,
    e.g. by an app server that drives the avatar with a producer) instead of creating one.
    `reconnect=False` turns a lost connection into an immediate `RelayError(connectionClosed)`.
    `max_unacked_bytes` bounds the resend queue: `send_audio` waits while more than that is
    unacknowledged. `max_pending_events` bounds the events not yet taken by the consumer; when
    full, the client stops reading the socket (so a stalled consumer becomes the server's
    slow-consumer case instead of growing memory here).
    `audio_echo=False` asks for a session without the echo of the client's audio (a joined
    session's own setting applies); the client then yields its own audio (module docstring).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        avatar_id: str | None = None,
        sample_rate: int | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        origin: str | None = None,
        ack_every: int = 25,
        ack_interval: float = 1.0,
        liveness_timeout: float = 45.0,
        open_timeout: float = 10.0,
        max_unacked_bytes: int = 4 * 1024 * 1024,
        max_pending_events: int = 100_000,
        max_message_bytes: int = 1024 * 1024,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        session: Mapping[str, Any] | None = None,
        audio_echo: bool = True,
    ) -> None:
        self._session = dict(session) if session is not None else None
        self._requested_avatar = avatar_id
        self._requested_rate = sample_rate
        self._requested_echo = audio_echo
        # Set by the WELCOME: the relay sends no echo, this client yields its own audio.
        self._own_audio: OwnAudio | None = None
        self._link: ReliableLink[_WireEvent] = ReliableLink(
            BrowserWire(),
            base_url,
            headers=headers,
            reconnect=reconnect,
            backoff=backoff,
            origin=origin,
            ack_every=ack_every,
            ack_interval=ack_interval,
            liveness_timeout=liveness_timeout,
            open_timeout=open_timeout,
            max_unacked_bytes=max_unacked_bytes,
            max_pending_events=max_pending_events,
            max_message_bytes=max_message_bytes,
            http=http,
            rng=rng,
            on_greeting=self._on_greeting,
            expand=self._expand,
        )
        self.base_url = self._link.base_url
        # From the server once the session exists.
        self.session_id = ""
        self.sample_rate = 0
        self.avatar_id = ""

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the session (or take the one given) and open its first connection (returns
        after WELCOME)."""
        try:
            answer = self._session
            if answer is None:
                body: dict[str, Any] = {}
                if self._requested_avatar is not None:
                    body["avatarId"] = self._requested_avatar
                if self._requested_rate is not None:
                    body["sampleRate"] = self._requested_rate
                if not self._requested_echo:
                    body["audioEcho"] = False
                answer = await self._link.post("/v1/relay/sessions", body)
            self.session_id = str(answer["sessionId"])
            self.sample_rate = int(answer["sampleRate"])
            self.avatar_id = str(answer["avatarId"])
            resume_window = float(answer["resumeWindowSeconds"])
        except BaseException:
            await self._link.shutdown()
            raise
        await self._link.open(
            url=str(answer["url"]),
            ticket=str(answer["ticket"]),
            ticket_path=f"/v1/relay/sessions/{self.session_id}/tickets",
            resume_window=resume_window,
            name=self.session_id,
        )

    async def close(self, *, bye: bool = True) -> None:
        """End the session (BYE: the server releases the upstream at once) and stop.

        `bye=False` only closes the socket; the session stays resumable for its resume window.
        """
        await self._link.close(bye=bye)

    def _on_greeting(self, greeting: Greeting) -> None:
        welcome = greeting.message
        if isinstance(welcome, p.Welcome) and welcome.sample_rate:
            self.sample_rate = welcome.sample_rate
        if isinstance(welcome, p.Welcome) and welcome.no_echo and self._own_audio is None:
            self._own_audio = OwnAudio()

    def _expand(self, message: _WireEvent) -> Sequence[_WireEvent]:
        own = self._own_audio
        if own is not None:
            return own.received(message)
        if isinstance(message, p.ConversationStarted):
            raise RelayError(ErrorCode.PROTOCOL_ERROR, "CONVERSATION_STARTED in an echo session")
        return (message,)

    @property
    def audio_echo(self) -> bool:
        """The relay echoes this client's audio (False: the client yields its own)."""
        return self._own_audio is None

    # --- sending ---

    async def send_audio(self, pcm: bytes, end: bool = False) -> int:
        """Queue one chunk of the current utterance; returns its client seq.

        The chunk is kept until the server acknowledges it and resent after a reconnect, so a
        drop never loses or duplicates audio. Raises RelayError once the session is over.
        """
        if len(pcm) % 2:
            raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
        if not pcm and not end:
            raise RelayError(ErrorCode.BAD_AUDIO, "an empty chunk must carry end=True")
        return await self._link.send(
            lambda seq: self._numbered(seq, pcm, end, p.ClientAudio(seq, pcm, end)), len(pcm)
        )

    async def interrupt(self) -> int:
        """Cancel every conversation started so far (sequenced like audio); returns its seq."""
        return await self._link.send(
            lambda seq: self._numbered(seq, None, False, p.ClientInterrupt(seq)), 0
        )

    def _numbered(self, seq: int, pcm: bytes | None, end: bool, message: p.ClientMessage) -> bytes:
        """Encode a sequenced message; without the echo, keep it first (it is not written yet,
        so its conversation's marker cannot arrive before it is known)."""
        if self._own_audio is not None:
            self._link.inject(self._own_audio.sent(seq, pcm, end))
        return p.encode_client(message)

    # --- receiving ---

    def events(self) -> AsyncIterator[Event]:
        """Every sequenced server message exactly once, in order, plus state changes."""
        return cast(AsyncIterator[Event], self._link.events())

    async def next_event(self) -> Event:
        """The next event; raises RelayError when the stream is over."""
        return cast(Event, await self._link.next_event())

    async def wait_connected(self) -> None:
        """Return once a socket is open and welcomed; raises RelayError if the session is over."""
        await self._link.wait_connected()

    # --- state ---

    @property
    def stats(self) -> ClientStats:
        return self._link.stats

    @property
    def reconnect(self) -> bool:
        return self._link.reconnect

    @reconnect.setter
    def reconnect(self, value: bool) -> None:
        self._link.reconnect = value

    @property
    def backoff(self) -> Backoff:
        return self._link.backoff

    @property
    def resume_window(self) -> float:
        return self._link.resume_window

    @property
    def unacked(self) -> int:
        """Client messages the server has not acknowledged yet."""
        return self._link.unacked

    @property
    def last_seq(self) -> int:
        """Highest server seq received (what the next HELLO will carry)."""
        return self._link.last_seq

    @property
    def error(self) -> RelayError | None:
        """Why the session ended, if it failed."""
        return self._link.error

    @property
    def connected(self) -> bool:
        return self._link.connected

    # --- testing and demos ---

    def drop_connection(self, offline_for: float = 0.0) -> bool:
        """Kill the current socket abruptly (TCP abort, no close frame), like a network cut.

        The client then reconnects and resumes as it would after a real drop, after staying
        offline for `offline_for` seconds (a tunnel, a sleeping laptop). False when no socket
        was open.
        """
        return self._link.drop_connection(offline_for)

    def lose_next_message(self) -> None:
        """Cut the connection as the next client message (audio, interrupt) is written: it is
        lost in flight, never reaching the server, so the resume must send it again (counted in
        `stats.lost` and `stats.resent`). Tests use it to make a resend certain."""
        self._link.lose_next_message()
