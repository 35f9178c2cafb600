"""Conversations: one per utterance, and their order on the client stream.

The rules (docs/protocol.md section 3) live here and only here:

- a client AUDIO chunk that finds no conversation taking input starts one, with a fresh id; its
  echo is the conversation's FIRST message, so the audio always precedes the frames;
- the stream carries one conversation at a time, in the order the client started them: the
  head of the queue is live, later ones are held (their audio still goes upstream at once);
- a conversation ends with its final frame, CONVERSATION_ABORTED or an interrupt; nothing of it
  is accepted from upstream after that, and the rest of its open utterance is discarded;
- when the head ends, the next conversations are promoted and what they held is flushed.

Pure like the session core: it never encodes, numbers or sends anything. It answers whether a
message may go out now and hands back, in order, what must be released and what ended; the
session gives released messages their sequence numbers and keeps them for replay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from app.errors import ErrorCode
from app.relay.effects import ConversationEnded, InterruptUpstream, Outcome
from avatar_relay_client import browser_protocol as p

# A message on its way to the client, not yet numbered:
# (conversation tag, server type, payload, flags, code, text)
Item = tuple[bytes, int, bytes, int, str, str]


@dataclass(slots=True, eq=False)
class Conversation:
    id: str
    tag: bytes  # the id as it appears on the wire, encoded once
    held: list[Item] = field(default_factory=list)
    # Set when its terminal message (final frame or ABORTED) went out or was held; it leaves the
    # queue once that message is released.
    outcome: Outcome | None = None
    code: ErrorCode | None = None


class Conversations:
    """The queue of conversations on one session's client stream."""

    __slots__ = (
        "_by_id",
        "_discarding",
        "_input",
        "_new_id",
        "_queue",
        "held_bytes",
        "held_messages",
    )

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._queue: deque[Conversation] = deque()
        self._by_id: dict[str, Conversation] = {}  # still expecting upstream
        self._input: Conversation | None = None  # the one taking client audio
        self._discarding = False  # swallow the rest of an utterance whose conversation ended
        # Held messages count against the replay buffer's bounds (the session checks them).
        self.held_messages = 0
        self.held_bytes = 0

    @property
    def live(self) -> Conversation | None:
        """The conversation being delivered (the head of the queue), if any."""
        return self._queue[0] if self._queue else None

    @property
    def would_start(self) -> bool:
        """The next client chunk would start a new conversation (none is taking input and no
        ended utterance is being discarded)."""
        return self._input is None and not self._discarding

    def expecting(self, req_id: str) -> Conversation | None:
        """The conversation still waiting for this upstream request's output; None once it
        ended (finished, aborted, interrupted) or when it was never ours."""
        return self._by_id.get(req_id)

    def expecting_upstream(self) -> list[Conversation]:
        """Every conversation still waiting for upstream, oldest first (a copy)."""
        return list(self._by_id.values())

    def take_audio(self, end: bool) -> tuple[Conversation, bool] | None:
        """The conversation a client chunk belongs to, and whether the chunk starts it. None:
        the chunk belongs to an utterance whose conversation already ended (it goes nowhere)."""
        if self._discarding:
            if end:
                self._discarding = False
            return None
        conversation = self._input
        first = conversation is None
        if conversation is None:
            req_id = self._new_id()
            conversation = Conversation(req_id, p.conversation_tag(req_id))
            self._queue.append(conversation)
            self._by_id[req_id] = conversation
            self._input = conversation
        if end:
            self._input = None
        return conversation, first

    def hold(self, conversation: Conversation, item: Item) -> bool:
        """Keep `item` until its conversation is live. False: it is live, release it now."""
        if self._queue[0] is conversation:
            return False
        conversation.held.append(item)
        self.held_messages += 1
        self.held_bytes += len(item[2])
        return True

    def finish(
        self, conversation: Conversation, outcome: Outcome, code: ErrorCode | None
    ) -> Iterator[Item | ConversationEnded]:
        """Its terminal message is out or held: nothing more of it is accepted from upstream.
        If it was live, the queue moves on; consume the result at once (see `_retire_head`)."""
        conversation.outcome = outcome
        conversation.code = code
        del self._by_id[conversation.id]
        if conversation is self._input:
            self._input = None
            self._discarding = True
        if self._queue[0] is conversation:
            return self._retire_head()
        return iter(())

    def interrupt(self) -> list[InterruptUpstream | ConversationEnded]:
        """Cancel every conversation: upstream stops the ones it still works on."""
        effects: list[InterruptUpstream | ConversationEnded] = []
        for conversation in self._queue:
            if conversation.id in self._by_id:
                effects.append(InterruptUpstream(conversation.id))
            effects.append(ConversationEnded(conversation.id, "interrupted"))
        self._clear()
        return effects

    def drop(self, code: ErrorCode) -> list[ConversationEnded]:
        """The session ended or lost its buffer: every conversation is aborted with `code`."""
        ended = [ConversationEnded(c.id, "aborted", code) for c in self._queue]
        self._clear()
        return ended

    def _retire_head(self) -> Iterator[Item | ConversationEnded]:
        """The head ended: promote the next conversations, flushing what they held.

        Lazy on purpose: the queue advances as the caller releases, so when a release overflows
        the buffer, the conversations not yet flushed are still queued and end as aborted."""
        queue = self._queue
        done = queue.popleft()
        assert done.outcome is not None
        yield ConversationEnded(done.id, done.outcome, done.code)
        while queue:
            head = queue[0]
            for item in head.held:
                self.held_messages -= 1
                self.held_bytes -= len(item[2])
                yield item
            head.held.clear()
            if head.outcome is None:
                return
            queue.popleft()
            yield ConversationEnded(head.id, head.outcome, head.code)

    def _clear(self) -> None:
        self._queue.clear()
        self._by_id.clear()
        self.held_messages = 0
        self.held_bytes = 0
        self._input = None
        self._discarding = False
