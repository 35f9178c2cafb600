"""The conversation queue on its own: which conversation a chunk belongs to, live or held, and
what the queue hands back, in order, when conversations end."""

from __future__ import annotations

from itertools import islice

from app.errors import ErrorCode
from app.relay.conversations import Conversation, Conversations, Item
from app.relay.effects import ConversationEnded, InterruptUpstream
from avatar_relay_client import browser_protocol as p
from tests.relay.sim import Ids, cid


def _item(conversation: Conversation, payload: bytes) -> Item:
    return (conversation, int(p.ServerType.FRAME), payload, 0, "", "")


def _start(queue: Conversations, *, end: bool = True) -> Conversation:
    taken = queue.take_audio(end)
    assert taken is not None
    conversation, first = taken
    assert first
    return conversation


def test_an_utterance_is_one_conversation_and_only_its_first_chunk_starts_it() -> None:
    queue = Conversations(Ids())
    a = _start(queue, end=False)
    assert (a.id, a.tag) == (cid(1), p.conversation_tag(cid(1)))
    assert queue.take_audio(False) == (a, False)
    assert queue.take_audio(True) == (a, False)
    b = _start(queue, end=False)  # after END, the next chunk starts the next conversation
    assert b.id == cid(2)
    assert queue.live is a
    assert queue.expecting_upstream() == [a, b]


def test_only_the_live_conversation_is_released_the_others_are_held_and_counted() -> None:
    queue = Conversations(Ids())
    a, b = _start(queue), _start(queue)
    assert not queue.hold(a, _item(a, b"live"))
    assert queue.hold(b, _item(b, b"12345"))
    assert queue.hold(b, _item(b, b"678"))
    assert (queue.held_messages, queue.held_bytes) == (2, 8)
    assert a.held == []


def test_when_the_head_ends_the_next_is_flushed_in_order_and_becomes_live() -> None:
    queue = Conversations(Ids())
    a, b = _start(queue), _start(queue)
    held = [_item(b, b"audio"), _item(b, b"frame")]
    for item in held:
        queue.hold(b, item)
    assert list(queue.finish(a, "completed", None)) == [ConversationEnded(a.id, "completed"), *held]
    assert (queue.held_messages, queue.held_bytes) == (0, 0)
    assert queue.live is b
    assert not queue.hold(b, _item(b, b"now live"))


def test_a_held_conversation_that_already_ended_is_retired_with_the_head() -> None:
    queue = Conversations(Ids())
    a, b, c = _start(queue), _start(queue), _start(queue)
    queue.hold(b, _item(b, b"b-last"))
    assert list(queue.finish(b, "aborted", ErrorCode.UPSTREAM_ERROR)) == []  # not live: waits
    assert queue.expecting(b.id) is None  # but nothing more of it is accepted
    queue.hold(c, _item(c, b"c"))
    assert list(queue.finish(a, "completed", None)) == [
        ConversationEnded(a.id, "completed"),
        _item(b, b"b-last"),
        ConversationEnded(b.id, "aborted", ErrorCode.UPSTREAM_ERROR),
        _item(c, b"c"),
    ]
    assert queue.live is c


def test_ending_during_its_utterance_discards_the_rest_of_that_utterance() -> None:
    queue = Conversations(Ids())
    a = _start(queue, end=False)
    list(queue.finish(a, "aborted", ErrorCode.UPSTREAM_ERROR))
    assert queue.take_audio(False) is None
    assert queue.take_audio(True) is None  # its END closes the discarded utterance
    assert _start(queue).id == cid(2)


def test_interrupt_cancels_everything_and_stops_only_what_upstream_still_works_on() -> None:
    queue = Conversations(Ids())
    a, b, c = _start(queue), _start(queue), _start(queue, end=False)
    queue.hold(b, _item(b, b"b"))
    list(queue.finish(b, "completed", None))  # upstream is done with b
    assert queue.interrupt() == [
        InterruptUpstream(a.id),
        ConversationEnded(a.id, "interrupted"),
        ConversationEnded(b.id, "interrupted"),
        InterruptUpstream(c.id),
        ConversationEnded(c.id, "interrupted"),
    ]
    assert queue.live is None
    assert (queue.held_messages, queue.held_bytes) == (0, 0)
    assert queue.expecting(c.id) is None
    assert _start(queue, end=False).id == cid(4)  # even mid-utterance


def test_drop_aborts_every_conversation() -> None:
    queue = Conversations(Ids())
    a, b = _start(queue), _start(queue)
    queue.hold(b, _item(b, b"b"))
    assert queue.drop(ErrorCode.SESSION_CLOSED) == [
        ConversationEnded(a.id, "aborted", ErrorCode.SESSION_CLOSED),
        ConversationEnded(b.id, "aborted", ErrorCode.SESSION_CLOSED),
    ]
    assert (queue.live, queue.held_messages, queue.expecting_upstream()) == (None, 0, [])


def test_the_queue_advances_only_as_far_as_the_caller_released() -> None:
    """If releasing fails midway (the buffer overflows), what was not flushed is still queued,
    so dropping the queue still reports it ended."""
    queue = Conversations(Ids())
    a, b = _start(queue), _start(queue)
    queue.hold(b, _item(b, b"b1"))
    queue.hold(b, _item(b, b"b2"))
    list(queue.finish(b, "completed", None))
    steps = queue.finish(a, "completed", None)
    assert list(islice(steps, 2)) == [ConversationEnded(a.id, "completed"), _item(b, b"b1")]
    assert queue.drop(ErrorCode.SLOW_CONSUMER) == [
        ConversationEnded(b.id, "aborted", ErrorCode.SLOW_CONSUMER)
    ]
