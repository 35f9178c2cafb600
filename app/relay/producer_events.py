"""What a producer hears of its session: the events of its stream (docs/protocol.md part II).

Pure, like the rest of the core. The session calls these as things happen (a conversation starts,
its first frame goes out on the browser's stream, it ends; the browser comes and goes, barges in,
speaks into the microphone); each becomes one sequenced message on the producer's stream, encoded
with the endpoint's next seq and handed to the session's `emit`, which keeps it for replay and
sends it when the producer is connected.
"""

from __future__ import annotations

from collections.abc import Callable

from app.errors import ErrorCode
from app.relay.conversations import Conversation
from app.relay.effects import ConversationEnded
from app.relay.endpoint import Endpoint
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp


class ProducerEvents:
    __slots__ = ("_emit", "_sample_rate", "endpoint")

    def __init__(
        self, endpoint: Endpoint, emit: Callable[[Endpoint, bytes], None], sample_rate: int
    ) -> None:
        self.endpoint = endpoint
        self._emit = emit
        self._sample_rate = sample_rate

    @property
    def _seq(self) -> int:
        return self.endpoint.replay.next_seq

    def _send(self, data: bytes) -> None:
        self._emit(self.endpoint, data)

    def audio_ms(self, audio_bytes: int) -> int:
        """Milliseconds of s16le mono (2 bytes a sample), rounded down."""
        return audio_bytes * 500 // self._sample_rate

    def browser(self, state: pp.BrowserState) -> None:
        self._send(pp.encode_browser(self._seq, state))

    def started(self, conversation: Conversation, input_seq: int, *, by_browser: bool) -> None:
        self._send(pp.encode_started(self._seq, conversation.tag, input_seq, by_browser=by_browser))

    def first_frame(self, conversation: Conversation) -> None:
        self._send(pp.encode_first_frame(self._seq, conversation.tag))

    def barge_in(self, tag: bytes) -> None:
        """`tag`: the conversation the browser was being given (or the empty tag)."""
        self._send(pp.encode_barge_in(self._seq, tag))

    def interrupted(self, ended: ConversationEnded, *, by_browser: bool) -> None:
        self._send(
            pp.encode_interrupted(
                self._seq,
                p.conversation_tag(ended.req_id),
                self.audio_ms(ended.audio_bytes),
                ended.frames,
                by_browser=by_browser,
            )
        )

    def ended(self, ended: ConversationEnded) -> None:
        """A conversation left the browser's stream, completed or aborted."""
        tag = p.conversation_tag(ended.req_id)
        audio_ms = self.audio_ms(ended.audio_bytes)
        if ended.outcome == "completed":
            self._send(pp.encode_completed(self._seq, tag, audio_ms, ended.frames))
            return
        code = (ended.code or ErrorCode.CONVERSATION_ABORTED).value
        self._send(pp.encode_aborted(self._seq, tag, audio_ms, ended.frames, code, ended.message))

    def microphone(self, pcm: bytes, *, end: bool) -> None:
        self._send(pp.encode_microphone(self._seq, pcm, end=end))
