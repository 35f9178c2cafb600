"""The server's built-in demo agent: it says a caller's text in one of the caller's relay sessions.

It takes the path an external voice agent takes (docs/producers.md), only from inside the server:
it mints a producer ticket for the session, opens the producer socket with the client
distribution's `Producer` over a real connection to the server's own producer endpoint (the
session's producer URL, so behind a load balancer it reaches the instance that runs the session),
and streams espeak-ng's speech (`speech.py`) as one utterance per text.

Once welcomed, a producer is part of its session (docs/protocol.md, section 10: its absence past
the resume window ends the session), so the agent keeps one producer per session from its first
text to the session's end, and speaks one text at a time: a text while another is still being
spoken is refused (`agentBusy`), not queued. Each session's producer lives in one tracked task,
cancelled when the session ends and when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.agent.speech import Voice, engine_missing, engine_path, spoken_text, synthesize
from app.errors import AppError, ErrorCode, RelayError
from app.sessions import SessionService
from app.settings import Settings
from avatar_relay_client.producer import Producer

log = logging.getLogger("avatar_relay.agent")

# The producer socket URL for a ticket (the server's own endpoint for the session).
ProducerUrl = Callable[[str], str]
# How long a closing producer may take to say goodbye to the relay.
CLOSE_SECONDS = 5.0


@dataclass(eq=False, slots=True)
class _Speaker:
    """The agent in one session: its producer's task and the text it is to say next."""

    session_id: str
    principal_id: str
    lines: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    # Clear from a text's acceptance until its conversation's outcome reached the producer.
    quiet: asyncio.Event = field(default_factory=lambda: _set(asyncio.Event()))
    task: asyncio.Task[None] | None = None

    @property
    def speaking(self) -> bool:
        return not self.quiet.is_set()


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


class DemoAgent:
    """Says texts in relay sessions that accept a producer (`allowProducer` or a producer
    session), one text at a time per session."""

    def __init__(
        self, settings: Settings, sessions: SessionService, voice: Voice | None = None
    ) -> None:
        self.enabled = settings.demo_agent_enabled
        self._sessions = sessions
        self._voice = voice or Voice()
        self._speakers: dict[str, _Speaker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        sessions.on_session_end(self._session_ended)

    @property
    def sessions_attached(self) -> int:
        """Sessions the agent has a producer (task) in."""
        return len(self._tasks)

    def speaking(self, session_id: str) -> bool:
        speaker = self._speakers.get(session_id)
        return speaker is not None and speaker.speaking

    async def wait_quiet(self, session_id: str) -> None:
        """Until the agent is not speaking in the session (its last text's outcome is known)."""
        speaker = self._speakers.get(session_id)
        if speaker is not None:
            await speaker.quiet.wait()

    def check_available(self) -> None:
        """speechUnavailable when the agent is switched off or espeak-ng is not installed."""
        if not self.enabled:
            raise AppError(
                ErrorCode.SPEECH_UNAVAILABLE,
                "the demo agent is switched off on this server (DEMO_AGENT_ENABLED=false)",
            )
        if engine_path() is None:
            raise engine_missing()

    async def say(
        self,
        session_id: str,
        principal_id: str,
        text: str,
        *,
        base_url: str,
        producer_url: ProducerUrl,
    ) -> str:
        """Start saying `text` in the session; returns the text as it will be spoken. Raises
        AppError: invalidRequest, speechUnavailable, sessionNotFound (also for another
        principal's session), sessionClosed, producerNotAllowed, agentBusy, goingAway."""
        words = spoken_text(text)
        self.check_available()
        if self._closed or self._sessions.draining:
            raise AppError(ErrorCode.GOING_AWAY, "this instance is shutting down; retry")
        speaker = self._speakers.get(session_id)
        if speaker is not None and speaker.principal_id == principal_id:
            self._hand(speaker, words)
            return words
        # Checks the owner, the session's state and whether it accepts a producer.
        ticket = await self._sessions.issue_ticket(session_id, principal_id, "producer")
        speaker = self._speakers.get(session_id)
        if speaker is not None:  # another text made it while the ticket was minted
            self._hand(speaker, words)
            return words
        speaker = _Speaker(session_id, principal_id)
        self._hand(speaker, words)
        self._speakers[session_id] = speaker
        task = asyncio.create_task(
            self._serve(speaker, ticket, base_url, producer_url), name=f"demo-agent-{session_id}"
        )
        speaker.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return words

    def _hand(self, speaker: _Speaker, words: str) -> None:
        if speaker.speaking:
            raise AppError(
                ErrorCode.AGENT_BUSY,
                "the demo agent is still speaking in this session: say the next text once the"
                " conversation has ended",
            )
        speaker.quiet.clear()
        speaker.lines.put_nowait(words)

    async def _serve(
        self, speaker: _Speaker, ticket: str, base_url: str, producer_url: ProducerUrl
    ) -> None:
        """The producer of one session: open it, then speak each text handed over, until the
        session ends (or this task is cancelled)."""
        session_id = speaker.session_id

        async def mint() -> Mapping[str, Any]:
            # Reconnects mint their tickets here: the agent holds no API credential.
            fresh = await self._sessions.issue_ticket(session_id, speaker.principal_id, "producer")
            return {"ticket": fresh, "url": producer_url(fresh)}

        producer = Producer(
            base_url, session_id, ticket=ticket, url=producer_url(ticket), tickets=mint
        )
        try:
            await producer.start()
            while True:
                words = await speaker.lines.get()
                try:
                    await self._speak(producer, session_id, words)
                finally:
                    speaker.quiet.set()
        except RelayError as error:
            # The session ended (or its producer could not stay): nothing more to say in it.
            log.info(
                "demo agent left the session",
                extra={"session_id": session_id, "error_code": error.code.value},
            )
        except Exception:
            log.exception("demo agent failed", extra={"session_id": session_id})
        finally:
            speaker.quiet.set()
            if self._speakers.get(session_id) is speaker:
                del self._speakers[session_id]
            # Not BYE: that would end the session for the page too. Its session is over or
            # the server is going away; either way the socket just closes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.close(bye=False), CLOSE_SECONDS)

    async def _speak(self, producer: Producer, session_id: str, words: str) -> None:
        try:
            async with contextlib.aclosing(
                synthesize(words, producer.sample_rate, self._voice)
            ) as speech:
                utterance = await producer.say(speech)
        except AppError as error:
            if error.code is not ErrorCode.SPEECH_UNAVAILABLE:
                raise
            # The engine failed on this text: the session goes on, the next text may work.
            log.warning("demo agent could not speak", extra=error.log_fields())
            return
        if utterance.first_seq is None:
            return  # nothing was spoken: no conversation to wait for
        outcome = await utterance.outcome()
        log.info(
            "demo agent spoke",
            extra={
                "session_id": session_id,
                "conversation_id": utterance.conversation_id or "",
                "outcome": type(outcome).__name__,
            },
        )

    def _session_ended(self, session_id: str) -> None:
        speaker = self._speakers.pop(session_id, None)
        if speaker is not None and speaker.task is not None:
            speaker.task.cancel()

    async def idle(self) -> None:
        """Until no session has the agent's producer (every task finished)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        """Server shutdown: refuse new texts, cancel every session's producer, wait for them."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_SECONDS * 2)
