"""The Python producer client: a server-side voice agent speaks through a relay session's avatar
(`avatar-relay.producer.v1`, docs/protocol.md part II; how an agent uses it: docs/producers.md).

    session = await create_session(base_url, headers=auth, forward_microphone=True)
    # hand the page session.browser_ticket / session.browser_url (never the producer's)
    async with Producer(base_url, session, headers=auth) as producer:
        async with producer.utterance() as u:
            for pcm in tts_chunks:  # s16le mono at producer.sample_rate
                await u.send(pcm)
        async for event in producer.events():
            match event:
                case BargeIn(): ...  # the user talked over the avatar: stop generating
                case Microphone(): ...  # the user's voice, when forwarded

It keeps the producer's socket alive like the browser client keeps the browser's (the reliable
link, `avatar_relay_client.link`): after a drop it gets a new producer ticket, says
`HELLO{lastSeq}`, resends what the relay did not acknowledge, and hands the consumer every event
exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Self

import httpx

from avatar_relay_client import producer_protocol as pp
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
    TicketSource,
    error_code,
)
from avatar_relay_client.producer_session import ProducerSession
from avatar_relay_client.rtc import RtcProducerSession

# Consumer-facing events: the codec's own dataclasses (each keeps its `seq`), plus the link's
# connection state changes.
ConversationStarted = pp.ConversationStarted
FirstFrame = pp.FirstFrame
ConversationCompleted = pp.ConversationCompleted
ConversationInterrupted = pp.ConversationInterrupted
ConversationAborted = pp.ConversationAborted
Browser = pp.Browser
BrowserState = pp.BrowserState
BargeIn = pp.BargeIn
Microphone = pp.Microphone
PlaybackState = pp.PlaybackState
PlaybackStateKind = pp.PlaybackStateKind

ServerEvent = pp.Event
Event = ServerEvent | StateChange | SessionLost
Outcome = ConversationCompleted | ConversationInterrupted | ConversationAborted


class ProducerWire:
    """`avatar-relay.producer.v1` in the reliable link's vocabulary."""

    subprotocol = pp.SUBPROTOCOL

    def hello(self, last_seq: int) -> bytes:
        return pp.encode_producer(pp.Hello(last_seq))

    def ack(self, seq: int) -> bytes:
        return pp.encode_producer(pp.Ack(seq))

    def ping(self, nonce: int) -> bytes:
        return pp.encode_producer(pp.Ping(nonce))

    def pong(self, nonce: int) -> bytes:
        return pp.encode_producer(pp.Pong(nonce))

    def bye(self) -> bytes:
        return pp.encode_producer(pp.Bye())

    def read(self, data: bytes) -> Inbound[ServerEvent]:
        message = pp.decode_server(data)
        match message:
            case pp.Welcome():
                return Greeting(message.producer_ack, message.server_seq, message)
            case pp.ServerAck(seq):
                return Acked(seq)
            case pp.ServerPing(nonce):
                return Pinged(nonce)
            case pp.ServerPong():
                return Ponged()
            case pp.ServerError(code, text):
                return Refused(RelayError(error_code(code, ErrorCode.UNKNOWN), text or code))
            case pp.ResumeFailed(last_seq, available_from, code):
                return Refused(
                    RelayError(
                        error_code(code, ErrorCode.RESUME_FAILED),
                        f"cannot resume after event {last_seq}: the server can replay from"
                        f" {available_from} ({code})",
                    )
                )
        return Delivery(message.seq, message)


class Utterance:
    """One utterance of avatar speech: its chunks, then END (sent when the `async with` ends).

    `conversation_id` is known once the relay's `ConversationStarted` for it arrived (`await
    started()`); `await outcome()` waits for how it ended. Once it was interrupted (the user
    barged in, or `Producer.interrupt()`) or aborted, `send` drops its chunks (returns False):
    the relay would discard them anyway, and the rest of the sentence must not be spoken.
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.first_seq: int | None = None  # the seq of its first chunk, once sent
        self.conversation_id: str | None = None
        self.cancelled = False
        self.ended = False
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[str] = loop.create_future()
        self._outcome: asyncio.Future[Outcome] = loop.create_future()

    async def send(self, pcm: bytes) -> bool:
        """Send one chunk (s16le mono at the session's rate, not empty). False: dropped, the
        utterance was cancelled. Raises RelayError once the session is over."""
        if self.ended:
            raise RuntimeError("the utterance has ended")
        if not pcm:
            raise RelayError(ErrorCode.BAD_AUDIO, "an utterance chunk must not be empty")
        if self.cancelled:
            return False
        seq = await self._producer._send_audio(pcm, end=False, utterance=self)
        if self.first_seq is None:
            self.first_seq = seq
        return True

    async def end(self) -> None:
        """Mark the end of the utterance (done for you by the `async with`)."""
        if self.ended:
            return
        self.ended = True
        if self.first_seq is not None:
            await self._producer._send_audio(b"", end=True, utterance=self)
        else:
            self._cancel(None)  # nothing was said: no conversation will come

    async def started(self) -> str:
        """The conversation id, once the relay started the conversation."""
        return await asyncio.shield(self._started)

    async def outcome(self) -> Outcome:
        """How it ended: completed (its last frame reached the browser's stream), interrupted or
        aborted (with the counts of what the browser was given). Raises RelayError when the
        session ends first, or RuntimeError for an utterance that sent nothing."""
        return await asyncio.shield(self._outcome)

    # --- from the producer's event tracking ---

    def _start(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        if not self._started.done():
            self._started.set_result(conversation_id)

    def _finish(self, outcome: Outcome) -> None:
        if not isinstance(outcome, ConversationCompleted):
            self.cancelled = True
        if not self._outcome.done():
            self._outcome.set_result(outcome)

    def _cancel(self, error: BaseException | None) -> None:
        self.cancelled = True
        failure = error or RuntimeError("the utterance sent no audio")
        for future in (self._started, self._outcome):
            if not future.done():
                future.set_exception(failure)
                future.exception()  # retrieved: nobody has to wait for it


class Producer:
    """The producer of one relay or RTC session: its socket, kept alive, and its utterances.

    `session` is a `ProducerSession` (from `create_session`), an `RtcProducerSession` (from
    `create_rtc_session`), or a relay session id with, optionally, a first `ticket` (without
    one, a producer ticket is requested). `headers` authenticate the REST calls that mint
    producer tickets (the socket is authenticated by its ticket); `tickets` mints them instead,
    for an agent that holds no API credential but can mint tickets itself (the server's own demo
    agent). The other options are the browser client's (`RelayClient`).
    """

    def __init__(
        self,
        base_url: str,
        session: ProducerSession | RtcProducerSession | str,
        *,
        headers: Mapping[str, str] | None = None,
        ticket: str | None = None,
        url: str | None = None,
        tickets: TicketSource | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        ack_every: int = 25,
        ack_interval: float = 1.0,
        liveness_timeout: float = 45.0,
        open_timeout: float = 10.0,
        max_unacked_bytes: int = 4 * 1024 * 1024,
        max_pending_events: int = 100_000,
        max_message_bytes: int = 1024 * 1024,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._ticket_path = f"/v1/relay/sessions/{session}/producer-tickets"
        if isinstance(session, ProducerSession | RtcProducerSession):
            self.session_id = session.session_id
            self._ticket_path = session.ticket_path
            ticket = ticket or session.producer_ticket
            url = url or session.producer_url
            self.sample_rate = session.sample_rate
            self._resume_window = session.resume_window_seconds
        else:
            self.session_id = session
            self.sample_rate = 0
            self._resume_window = 30.0
        self._ticket = ticket
        self._url = url
        self._tickets = tickets
        self._link: ReliableLink[ServerEvent] = ReliableLink(
            ProducerWire(),
            base_url,
            headers=headers,
            reconnect=reconnect,
            backoff=backoff,
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
            on_delivery=self._on_delivery,
            on_failure=self._on_failure,
        )
        self.base_url = self._link.base_url
        # From the WELCOME.
        self.microphone = False  # the browser's audio is forwarded as Microphone events
        self.browser_speaks = False  # the browser's audio is avatar speech too
        self.playback_control = False  # PAUSE and RESUME are available (RTC sessions)
        self.rtc = False  # the session is an RTC session (the avatar is in a LiveKit room)
        self.browser_connected = False
        # Utterances by the seq of their first chunk, until their outcome.
        self._by_first_seq: dict[int, Utterance] = {}
        self._by_conversation: dict[str, Utterance] = {}
        self._current: Utterance | None = None
        self._speaking = asyncio.Lock()

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
        """Open the producer's first connection (returns after WELCOME)."""
        ticket, url = self._ticket, self._url
        try:
            if ticket is None or url is None:
                if self._tickets is not None:
                    answer = await self._tickets()
                else:
                    answer = await self._link.post(self._ticket_path, {})
                ticket, url = str(answer["ticket"]), str(answer["url"])
        except BaseException:
            await self._link.shutdown()
            raise
        await self._link.open(
            url=url,
            ticket=ticket,
            ticket_path=self._ticket_path,
            resume_window=self._resume_window,
            name=f"producer-{self.session_id}",
            tickets=self._tickets,
        )

    async def close(self, *, bye: bool = True) -> None:
        """End the session (BYE: for the browser too; the relay releases the upstream at once)
        and stop. `bye=False` only closes the socket: the session waits its resume window for
        this producer to come back (a new `Producer` cannot resume it: it starts from
        scratch)."""
        await self._link.close(bye=bye)
        self._on_failure(RelayError(ErrorCode.SESSION_CLOSED, "the producer is closed"))

    def _on_greeting(self, greeting: Greeting) -> None:
        welcome = greeting.message
        if isinstance(welcome, pp.Welcome):
            if welcome.sample_rate:
                self.sample_rate = welcome.sample_rate
            self.microphone = welcome.microphone
            self.browser_speaks = welcome.browser_speaks
            self.playback_control = welcome.playback_control
            self.rtc = welcome.rtc
            self._link.resume_window = welcome.resume_window_ms / 1000

    # --- speaking ---

    @contextlib.asynccontextmanager
    async def utterance(self) -> AsyncIterator[Utterance]:
        """One utterance: `async with producer.utterance() as u: await u.send(pcm)`; END goes out
        when the block ends (also when it raises). Utterances take turns: a second one waits
        until the first has ended."""
        async with self._speaking:
            utterance = Utterance(self)
            self._current = utterance
            try:
                yield utterance
            finally:
                self._current = None
                if self._link.error is None and not self._link.closing:
                    await utterance.end()
                else:
                    utterance.ended = True

    async def say(self, chunks: Iterable[bytes] | AsyncIterable[bytes]) -> Utterance:
        """Send a whole utterance (PCM chunks, from an iterable or an async iterable, e.g. a
        text-to-speech stream); returns it (await its `outcome()` to know how it went)."""
        async with self.utterance() as utterance:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    await utterance.send(chunk)
            else:
                for chunk in chunks:
                    await utterance.send(chunk)
        return utterance

    async def interrupt(self) -> int:
        """Stop the avatar: cancel every conversation so far (sequenced like audio, so exactly
        once and in order). The utterance in progress, if any, drops its remaining chunks."""
        current = self._current
        if current is not None and current.first_seq is not None:
            # Its conversation began before this INTERRUPT: the relay discards the rest of it.
            # (An utterance that has sent nothing yet starts afresh after the interrupt.)
            current.cancelled = True
        return await self._link.send(lambda seq: pp.encode_producer(pp.Interrupt(seq)), 0)

    async def pause(self) -> int:
        """Hold the latest request's playout (sequenced like audio). Only where the WELCOME
        declared playback control; elsewhere refused here, before anything is sent."""
        self._need_playback_control()
        return await self._link.send(lambda seq: pp.encode_producer(pp.Pause(seq)), 0)

    async def resume(self) -> int:
        """Continue the latest request's held playout (see `pause`)."""
        self._need_playback_control()
        return await self._link.send(lambda seq: pp.encode_producer(pp.Resume(seq)), 0)

    def _need_playback_control(self) -> None:
        if not self.playback_control:
            raise RelayError(
                ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE,
                "the session does not offer pause and resume (RTC sessions whose avatar"
                " service declares playback_control do)",
            )

    async def send_audio(self, pcm: bytes, end: bool = False) -> int:
        """The raw protocol: one AUDIO chunk (`end` on the utterance's last); returns its seq.
        Prefer `utterance()`, which tracks the conversation and drops a cancelled sentence."""
        return await self._send_audio(pcm, end=end, utterance=None)

    async def _send_audio(self, pcm: bytes, *, end: bool, utterance: Utterance | None) -> int:
        if len(pcm) % 2:
            raise RelayError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
        if not pcm and not end:
            raise RelayError(ErrorCode.BAD_AUDIO, "an empty chunk must carry end=True")
        first = utterance is not None and utterance.first_seq is None

        def build(seq: int) -> bytes:
            # Registered as the seq is given, before the bytes can reach the relay: the
            # ConversationStarted naming it cannot arrive first.
            if first and utterance is not None:
                self._by_first_seq[seq] = utterance
            return pp.encode_producer(pp.Audio(seq, pcm, end))

        return await self._link.send(build, len(pcm))

    # --- events ---

    def _on_delivery(self, event: ServerEvent) -> None:
        """Each event once, in order, as it arrives: the utterances learn their fate even when
        nobody iterates `events()`."""
        match event:
            case pp.ConversationStarted(_, conversation_id, input_seq, by_browser):
                if not by_browser:
                    utterance = self._by_first_seq.pop(input_seq, None)
                    if utterance is not None:
                        self._by_conversation[conversation_id] = utterance
                        utterance._start(conversation_id)
            case (
                pp.ConversationCompleted() | pp.ConversationInterrupted() | pp.ConversationAborted()
            ):
                done = self._by_conversation.pop(event.conversation_id, None)
                if done is not None:
                    done._finish(event)
            # A barge-in cancels the utterances whose conversations it interrupted: their
            # ConversationInterrupted follows at once. One that started after it is spoken.
            case pp.Browser(_, state):
                self.browser_connected = state is not BrowserState.DISCONNECTED

    def _on_failure(self, error: RelayError) -> None:
        waiting = [*self._by_first_seq.values(), *self._by_conversation.values()]
        self._by_first_seq.clear()
        self._by_conversation.clear()
        for utterance in waiting:
            utterance._cancel(error)

    def events(self) -> AsyncIterator[Event]:
        """Every event exactly once, in order, plus state changes. Consume it: when
        `max_pending_events` wait unread, the client stops reading the socket. Raises
        RelayError when the session is over for good; ends after `close()`."""
        return self._link.events()

    async def next_event(self) -> Event:
        """The next event; raises RelayError when the stream is over."""
        return await self._link.next_event()

    async def wait_connected(self) -> None:
        """Return once a socket is open and welcomed; raises RelayError if the session is over."""
        await self._link.wait_connected()

    # --- state ---

    @property
    def stats(self) -> ClientStats:
        return self._link.stats

    @property
    def resume_window(self) -> float:
        return self._link.resume_window

    @property
    def unacked(self) -> int:
        """Producer messages the relay has not acknowledged yet."""
        return self._link.unacked

    @property
    def last_seq(self) -> int:
        """Highest event seq received (what the next HELLO will carry)."""
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
        """Kill the current socket abruptly (TCP abort, no close frame), like a network cut; the
        client then resumes as after a real drop. False when no socket was open."""
        return self._link.drop_connection(offline_for)

    def lose_next_message(self) -> None:
        """Cut the connection as the next producer message is written: it is lost in flight,
        never reaching the server, so the resume must send it again (counted in `stats.lost`
        and `stats.resent`). Tests use it to make a resend certain."""
        self._link.lose_next_message()
