"""The client's own audio, yielded where the relay would have echoed it (no I/O).

In a session created with `audioEcho: false` the relay does not send the browser's audio back:
each conversation of it starts with `CONVERSATION_STARTED{inputSeq, untilSeq}` instead of its
first `AUDIO` echo (docs/protocol.md section 3.1). This piece keeps the chunks the client sent
and turns the marker back into the `Audio` events the echo would have been, so a consumer sees
the same conversations either way: the conversation's audio first, in the same conversation id,
then its frames. The chunks already sent come out at the marker; later chunks of the same
utterance come out as they are sent, until the utterance's END, the client's INTERRUPT or the
conversation's end (final frame, abort, interrupt), whichever is first.

Pure: the client calls `sent` for every sequenced message it numbers (before writing it, so a
marker can never outrun its chunk) and `received` for every sequenced server message, in order,
and queues what they return.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from avatar_relay_client import browser_protocol as p


@dataclass(frozen=True, slots=True)
class _Sent:
    seq: int
    pcm: bytes | None  # None: an INTERRUPT
    end: bool


class OwnAudio:
    """The chunks sent and not yet yielded, and the conversation yielding them."""

    __slots__ = ("_current", "_first", "_next", "_sent", "_seq", "_until")

    def __init__(self) -> None:
        self._sent: deque[_Sent] = deque()
        self._current: str | None = None  # the conversation taking the chunks as they are sent
        self._next = 0  # the client seq it yields next
        self._until = 0  # its last client seq, when the marker said so (0: open)
        self._first = False
        self._seq = 0  # the marker's server seq, given to the audio it stands for

    def sent(self, seq: int, pcm: bytes | None, end: bool = False) -> list[p.ServerAudio]:
        """A client AUDIO (`pcm`) or INTERRUPT (`pcm` None) got seq `seq`: what to yield now."""
        self._sent.append(_Sent(seq, pcm, end))
        return self._drain()

    def received(self, message: p.SequencedServerMessage) -> list[p.SequencedServerMessage]:
        """One sequenced server message, in order: what the consumer gets for it."""
        if isinstance(message, p.ConversationStarted):
            while self._sent and self._sent[0].seq < message.input_seq:
                self._sent.popleft()  # a conversation cancelled before it reached the stream
            self._current = message.conversation_id
            self._next, self._until = message.input_seq, message.until_seq
            self._first = True
            self._seq = message.seq
            return [*self._drain()]
        if self._current is not None and (
            isinstance(message, p.Interrupted | p.ConversationAborted)
            or (isinstance(message, p.ServerFrame) and message.end)
            or message.conversation_id != self._current
        ):
            self._current = None  # ended: the relay discards the rest of its utterance
        return [message]

    def _drain(self) -> list[p.ServerAudio]:
        out: list[p.ServerAudio] = []
        sent = self._sent
        while self._current is not None and sent:
            item = sent[0]
            if item.seq < self._next:
                sent.popleft()
                continue
            if item.seq > self._next:
                break  # not sent yet: a caller numbering out of order (never the clients)
            if item.pcm is None or (self._until and item.seq > self._until):
                self._current = None  # an INTERRUPT, or past what the relay accepted
                break
            sent.popleft()
            out.append(p.ServerAudio(self._seq, self._current, item.pcm, self._first, item.end))
            self._first = False
            self._next += 1
            if item.end or item.seq == self._until:
                self._current = None
        return out

    @property
    def pending(self) -> int:
        """Client messages kept for a conversation that has not reached the stream yet."""
        return len(self._sent)
