"""Conversations: one per utterance, and their order on the browser's stream.

The rules (docs/protocol.md section 3, and part II for producers) live here and only here:

- whose audio is avatar speech (`AudioRouting`): the browser's (the default), a producer's
  (`audioSource: producer`; the browser's audio is then the user's microphone), or both (a
  browser-fed session that allows a producer);
- an AUDIO chunk of a speaker that finds none of its own conversations taking input starts one,
  with a fresh id; its echo is the conversation's FIRST message on the browser's stream, so the
  audio always precedes the frames; each speaker has its own utterance in progress;
- the stream carries one conversation at a time, in the order they were started: the head of the
  queue is live, later ones are held (their audio still goes upstream at once);
- a conversation ends with its final frame, CONVERSATION_ABORTED or an interrupt; nothing of it
  is accepted from upstream after that, and the rest of its open utterance is discarded;
- an interrupt cancels every conversation. The browser's next chunk starts a new one even in the
  middle of an utterance (as the browser protocol always did); a producer's utterance in progress
  is discarded up to its END, so the rest of a sentence the user talked over is never spoken;
- when the head ends, the next conversations are promoted and what they held is flushed.

Pure like the session core: it never encodes, numbers or sends anything. It answers whether a
message may go out now and hands back, in order, what must be released and what ended; the
session gives released messages their sequence numbers and keeps them for replay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from app.errors import ErrorCode
from app.relay.effects import ConversationEnded, InterruptUpstream, Outcome
from avatar_relay_client import browser_protocol as p

Role = Literal["browser", "producer"]
AudioSource = Literal["browser", "producer"]

# Speakers whose utterance in progress an interrupt discards up to its END.
_DISCARD_ON_INTERRUPT: Final[frozenset[Role]] = frozenset({"producer"})


@dataclass(frozen=True, slots=True)
class AudioRouting:
    """Whose audio is avatar speech, and where the browser's goes when it is not."""

    source: AudioSource = "browser"
    forward_microphone: bool = False  # producer sessions: browser audio goes to the producer
    allow_producer: bool = False  # browser sessions: a producer may attach and speak too
    # False (`audioEcho: false`): the browser's own speech is not sent back to it; its
    # conversations start with a CONVERSATION_STARTED marker and its client yields the audio it
    # sent. A producer's speech always reaches the browser: the browser has no other copy.
    echo: bool = True

    def __post_init__(self) -> None:
        if self.forward_microphone and self.source != "producer":
            raise ValueError("forward_microphone needs audio source 'producer'")
        if self.allow_producer and self.source != "browser":
            raise ValueError("allow_producer is for browser-fed sessions")
        if not self.echo and self.source != "browser":
            raise ValueError("only the browser's own speech can go without its echo")

    @property
    def has_producer(self) -> bool:
        return self.source == "producer" or self.allow_producer

    @property
    def producer_required(self) -> bool:
        """The session cannot go on without its producer (it is the only speaker)."""
        return self.source == "producer"

    def speaks(self, role: Role) -> bool:
        """Whether `role`'s AUDIO is avatar speech."""
        if role == "producer":
            return self.has_producer
        return self.source == "browser"


@dataclass(slots=True, eq=False)
class Conversation:
    id: str
    tag: bytes  # the id as it appears on the wire, encoded once
    source: Role = "browser"
    held: list[Item] = field(default_factory=list)
    # Set when its terminal message (final frame or ABORTED) went out or was held; it leaves the
    # queue once that message is released.
    outcome: Outcome | None = None
    code: ErrorCode | None = None
    message: str = ""  # why it was aborted
    # What of it the browser's stream has been given (the session counts as it releases).
    audio_bytes: int = 0
    frames: int = 0
    # Client seqs of its first and latest chunk (echo-off sessions: CONVERSATION_STARTED).
    first_seq: int = 0
    last_seq: int = 0

    def ended(self, outcome: Outcome, code: ErrorCode | None = None) -> ConversationEnded:
        return ConversationEnded(
            self.id, outcome, code, self.audio_bytes, self.frames, self.message
        )


# A message on its way to the browser, not yet numbered:
# (conversation, server type, payload, flags, code, text)
Item = tuple[Conversation, int, bytes, int, str, str]


class Conversations:
    """The queue of conversations on one session's browser stream."""

    __slots__ = (
        "_by_id",
        "_discarding",
        "_input",
        "_new_id",
        "_queue",
        "held_bytes",
        "held_messages",
        "version",
    )

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._queue: deque[Conversation] = deque()
        self._by_id: dict[str, Conversation] = {}  # still expecting upstream
        self._input: dict[Role, Conversation] = {}  # per speaker, the one taking its audio
        # Speakers whose rest of an utterance is swallowed (its conversation ended).
        self._discarding: set[Role] = set()
        # Held messages count against the replay buffer's bounds (the session checks them).
        self.held_messages = 0
        self.held_bytes = 0
        # Grows with every change a snapshot would show (not with released messages' counts).
        self.version = 0

    @property
    def live(self) -> Conversation | None:
        """The conversation being delivered (the head of the queue), if any."""
        return self._queue[0] if self._queue else None

    def would_start(self, source: Role = "browser") -> bool:
        """A speaker's next chunk would start a new conversation (none of its own is taking
        input and no ended utterance of its is being discarded)."""
        return source not in self._input and source not in self._discarding

    def taking_input(self, conversation: Conversation) -> bool:
        """Its speaker's next chunk would still belong to it."""
        return self._input.get(conversation.source) is conversation

    def expecting(self, req_id: str) -> Conversation | None:
        """The conversation still waiting for this upstream request's output; None once it
        ended (finished, aborted, interrupted) or when it was never ours."""
        return self._by_id.get(req_id)

    def expecting_upstream(self) -> list[Conversation]:
        """Every conversation still waiting for upstream, oldest first (a copy)."""
        return list(self._by_id.values())

    def take_audio(self, end: bool, source: Role = "browser") -> tuple[Conversation, bool] | None:
        """The conversation a speaker's chunk belongs to, and whether the chunk starts it. None:
        the chunk belongs to an utterance whose conversation already ended (it goes nowhere)."""
        if source in self._discarding:
            if end:
                self._discarding.discard(source)
                self.version += 1
            return None
        conversation = self._input.get(source)
        first = conversation is None
        if first or end:
            self.version += 1
        if conversation is None:
            req_id = self._new_id()
            conversation = Conversation(req_id, p.conversation_tag(req_id), source)
            self._queue.append(conversation)
            self._by_id[req_id] = conversation
            self._input[source] = conversation
        if end:
            del self._input[source]
        return conversation, first

    def hold(self, conversation: Conversation, item: Item) -> bool:
        """Keep `item` until its conversation is live. False: it is live, release it now."""
        if self._queue[0] is conversation:
            return False
        conversation.held.append(item)
        self.version += 1
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
        self.version += 1
        del self._by_id[conversation.id]
        source = conversation.source
        if self._input.get(source) is conversation:
            del self._input[source]
            self._discarding.add(source)
        if self._queue[0] is conversation:
            return self._retire_head()
        return iter(())

    def interrupt(self) -> list[InterruptUpstream | ConversationEnded]:
        """Cancel every conversation: upstream stops the ones it still works on."""
        effects: list[InterruptUpstream | ConversationEnded] = []
        for conversation in self._queue:
            if conversation.id in self._by_id:
                effects.append(InterruptUpstream(conversation.id))
            effects.append(conversation.ended("interrupted"))
        # A producer's utterance in progress stays discarded, whether its conversation was
        # live until now or had ended already.
        discard = (self._input.keys() | self._discarding) & _DISCARD_ON_INTERRUPT
        self._clear()
        self._discarding = set(discard)
        return effects

    def drop(self, code: ErrorCode) -> list[ConversationEnded]:
        """The session ended or lost its buffer: every conversation is aborted with `code`."""
        ended = [c.ended("aborted", code) for c in self._queue]
        self._clear()
        return ended

    def _retire_head(self) -> Iterator[Item | ConversationEnded]:
        """The head ended: promote the next conversations, flushing what they held.

        Lazy on purpose: the queue advances as the caller releases, so when a release overflows
        the buffer, the conversations not yet flushed are still queued and end as aborted."""
        queue = self._queue
        done = queue.popleft()
        assert done.outcome is not None
        yield done.ended(done.outcome, done.code)
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
            yield head.ended(head.outcome, head.code)

    # --- continuing elsewhere ---

    def snapshot(self) -> dict[str, Any]:
        """The queue as plain data (held messages' payloads as bytes), for `restore`."""
        return {
            "queue": [
                {
                    "id": c.id,
                    "source": c.source,
                    "expecting": c.id in self._by_id,
                    "outcome": c.outcome,
                    "code": c.code.value if c.code is not None else None,
                    "message": c.message,
                    "audio_bytes": c.audio_bytes,
                    "frames": c.frames,
                    "seqs": [c.first_seq, c.last_seq],
                    "held": [list(item[1:]) for item in c.held],
                }
                for c in self._queue
            ],
            "input": {role: c.id for role, c in self._input.items()},
            "discarding": sorted(self._discarding),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take the state `snapshot` saved (into a fresh queue)."""
        self._clear()
        by_id: dict[str, Conversation] = {}
        for entry in data["queue"]:
            code = entry["code"]
            conversation = Conversation(
                entry["id"],
                p.conversation_tag(entry["id"]),
                entry["source"],
                outcome=entry["outcome"],
                code=ErrorCode(code) if code is not None else None,
                message=entry["message"],
                audio_bytes=entry["audio_bytes"],
                frames=entry["frames"],
            )
            # Saved before echo-off sessions existed: no seqs, and no marker will need them.
            conversation.first_seq, conversation.last_seq = entry.get("seqs", (0, 0))
            for kind, payload, flags, item_code, text in entry["held"]:
                conversation.held.append((conversation, kind, payload, flags, item_code, text))
                self.held_messages += 1
                self.held_bytes += len(payload)
            self._queue.append(conversation)
            by_id[conversation.id] = conversation
            if entry["expecting"]:
                self._by_id[conversation.id] = conversation
        self._input = {role: by_id[cid] for role, cid in data["input"].items() if cid in by_id}
        self._discarding = set(data["discarding"])
        self.version += 1

    def _clear(self) -> None:
        self.version += 1
        self._queue.clear()
        self._by_id.clear()
        self.held_messages = 0
        self.held_bytes = 0
        self._input = {}
        self._discarding = set()
