"""Delivery: how a session's conversations reach its endpoints' streams.

Pure, like the rest of the core. The session hands this what an event means for the
conversations (audio to speak, an interrupt, an abort, a frame); it asks `conversations.py`
whether each message goes out now or waits behind another conversation, numbers what goes out
with the browser's next server seq, keeps it in the replay buffer, checks the buffers' bounds
(held messages count too) and appends the effects, in order, to the event's output. The
producer's events (`producer_events.py`) are emitted onto the producer's stream the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from app.errors import ErrorCode
from app.relay.conversations import Conversation, Conversations, Item, Role
from app.relay.effects import ConversationEnded, Effect, Outcome, SendToClient, SendUpstream
from app.relay.endpoint import Endpoint, Overflow
from app.relay.limits import RelayLimits, RelayStats
from app.relay.producer_events import ProducerEvents
from avatar_relay_client import browser_protocol as p

# Plain ints: compared once per message on the frame path.
_AUDIO = int(p.ServerType.AUDIO)
_FRAME = int(p.ServerType.FRAME)
_ABORTED = int(p.ServerType.CONVERSATION_ABORTED)
_STARTED = int(p.ServerType.CONVERSATION_STARTED)
# Not a message: audio of an echo-off conversation, counted as the browser's when it would have
# been released (its item's flags carry the byte count; nothing goes out).
_UNECHOED = 0


class Delivery:
    """The output of the event being handled (`out`) and the streams it goes onto.

    `now` is the event's time; `last_activity` moves with input accepted and messages released
    (the session's idle timeout counts from it).
    """

    def __init__(
        self,
        browser: Endpoint,
        conversations: Conversations,
        *,
        limits: RelayLimits,
        stats: RelayStats,
        now: float,
        echo: bool = True,
    ) -> None:
        self.browser = browser
        self.echo = echo  # the browser's own speech goes back down as AUDIO
        self.conversations = conversations
        self.limits = limits
        self.stats = stats
        self.events: ProducerEvents | None = None
        self.now = now
        self.last_activity = now
        self.out: list[Effect] = []

    def begin(self, now: float) -> None:
        """A new event: its output starts empty."""
        self.now = now
        self.out = []

    def take(self) -> list[Effect]:
        out = self.out
        self.out = []
        return out

    def send(self, ep: Endpoint, data: bytes) -> None:
        """Unsequenced or live output: only a connection past HELLO receives anything."""
        if ep.conn is not None and ep.hello_done:
            self.out.append(SendToClient(ep.conn, data))

    # --- what the conversations do ---

    def audio(self, role: Role, seq: int, pcm: bytes, end: bool) -> None:
        """Speech from `role`: upstream, and echoed on the browser's stream (for an echo-off
        session's browser speech, a CONVERSATION_STARTED marker in place of its first echo)."""
        taken = self.conversations.take_audio(end, role)
        if taken is None:
            return  # the rest of an utterance whose conversation already ended
        conversation, first = taken
        if first:
            self.stats.conversations_started += 1
            if self.events is not None:
                self.events.started(conversation, seq, by_browser=role == "browser")
        self.out.append(SendUpstream(conversation.id, pcm, end))
        if not self.echo and role == "browser":
            conversation.last_seq = seq
            if first:
                conversation.first_seq = seq
                self.deliver(conversation, (conversation, _STARTED, b"", 0, "", ""))
            if pcm:
                self.deliver(conversation, (conversation, _UNECHOED, b"", len(pcm), "", ""))
            return
        flags = (p.FLAG_FIRST if first else 0) | (p.FLAG_END if end else 0)
        self.deliver(conversation, (conversation, _AUDIO, pcm, flags, "", ""))

    def frame(self, conversation: Conversation, raw: bytes, end: bool) -> None:
        """One upstream animation message of `conversation` (the last one when `end`)."""
        self.deliver(conversation, (conversation, _FRAME, raw, p.FLAG_END if end else 0, "", ""))
        if end:
            self.finish(conversation, "completed", None)

    def interrupt(self, by: Role) -> None:
        conversations = self.conversations
        live = conversations.live  # INTERRUPTED names the conversation being delivered
        tag = live.tag if live is not None else p.EMPTY_TAG
        events = self.events
        by_browser = by == "browser"
        if events is not None and by_browser:
            events.barge_in(tag)
        for effect in conversations.interrupt():
            self.out.append(effect)
            if events is not None and type(effect) is ConversationEnded:
                events.interrupted(effect, by_browser=by_browser)
        self.release(p.encode_interrupted(self.browser.replay.next_seq, tag))

    def abort(self, conversation: Conversation, code: ErrorCode, message: str) -> None:
        conversation.message = message
        self.deliver(conversation, (conversation, _ABORTED, b"", 0, code.value, message))
        self.finish(conversation, "aborted", code)

    def finish(self, conversation: Conversation, outcome: Outcome, code: ErrorCode | None) -> None:
        self._flush(self.conversations.finish(conversation, outcome, code))

    # --- sequencing, the replay buffers and their bounds ---

    def deliver(self, conversation: Conversation, item: Item) -> None:
        """Release now if the conversation is live, else it waits (and counts) in the queue."""
        if self.conversations.hold(conversation, item):
            self.check_bounds(self.browser)
        else:
            self._release_item(item)

    def _flush(self, steps: Iterator[Item | ConversationEnded]) -> None:
        """Release what the conversations hand back, in their order, as they hand it back."""
        for step in steps:
            if type(step) is ConversationEnded:
                self.out.append(step)
                if self.events is not None:
                    self.events.ended(step)
            else:
                self._release_item(step)  # type: ignore[arg-type]

    def _release_item(self, item: Item) -> None:
        """The message as it goes out: numbered with the next seq of the browser's stream."""
        conversation, kind, payload, flags, code, text = item
        seq = self.browser.replay.next_seq
        if kind == _FRAME:
            self.release(
                p.encode_frame(seq, conversation.tag, payload, end=bool(flags & p.FLAG_END))
            )
            conversation.frames += 1
            if conversation.frames == 1 and self.events is not None:
                self.events.first_frame(conversation)
        elif kind == _AUDIO:
            conversation.audio_bytes += len(payload)
            self.release(
                p.encode_audio(
                    seq,
                    conversation.tag,
                    payload,
                    first=bool(flags & p.FLAG_FIRST),
                    end=bool(flags & p.FLAG_END),
                )
            )
        elif kind == _UNECHOED:
            conversation.audio_bytes += flags
        elif kind == _STARTED:
            # Released late (held behind another), its input may be over already: the client
            # then yields its chunks up to the last one accepted, not what it sent after.
            until = 0 if self.conversations.taking_input(conversation) else conversation.last_seq
            self.release(p.encode_started(seq, conversation.tag, conversation.first_seq, until))
        else:
            self.release(p.encode_aborted(seq, conversation.tag, code, text))

    def release(self, data: bytes) -> None:
        """Give `data` the browser's next seq (the caller encoded it so), keep it, send it."""
        browser = self.browser
        browser.replay.append(data)
        self.last_activity = self.now
        self.send(browser, data)
        self.check_bounds(browser)

    def emit(self, producer: Endpoint, data: bytes) -> None:
        """An event on the producer's stream (encoded with its next seq): kept, sent."""
        producer.replay.append(data)
        self.stats.producer_events += 1
        self.send(producer, data)
        self.check_bounds(producer)

    def check_bounds(self, ep: Endpoint) -> None:
        limits = self.limits
        messages, size = len(ep.replay), ep.replay.size
        if ep is self.browser:
            messages += self.conversations.held_messages
            size += self.conversations.held_bytes
        if messages > limits.replay_buffer_messages or size > limits.replay_buffer_bytes:
            raise Overflow(ep)
