// The client's own audio, yielded where the relay would have echoed it (no I/O). A session made
// with `audioEcho: false` sends no AUDIO back for our utterances: each of their conversations
// starts with CONVERSATION_STARTED{inputSeq, untilSeq} instead (docs/protocol.md section 3.1).
// This keeps the chunks we sent and turns the marker back into the AUDIO messages the echo would
// have been (flagged `own`), so the driver and the app see the same conversations either way: the
// audio first, in the conversation's id, then its frames. Chunks already sent come out at the
// marker; later ones of the same utterance as they are sent, until its END, our INTERRUPT or the
// conversation's end. The same rules as the Python client's own_audio.py.

export class OwnAudio {
  constructor() {
    this._sent = []; // {seq, pcm (null: an INTERRUPT), end}, oldest first
    this._head = 0; // index of the oldest kept in _sent
    this._current = null; // the conversation taking our chunks as they are sent
    this._next = 0; // the client seq it yields next
    this._until = 0; // its last client seq when the marker said so (0: open)
    this._first = false;
    this._seq = 0; // the marker's server seq, given to the audio it stands for
  }

  /** Our AUDIO (`pcm`) or INTERRUPT (`pcm` null) got `seq`: the AUDIO messages to yield now. */
  sent(seq, pcm, end = false) {
    this._sent.push({ seq, pcm, end });
    return this._drain();
  }

  /** One sequenced server message, in order: the messages the driver gets for it. */
  received(message) {
    if (message.type === 'CONVERSATION_STARTED') {
      // Anything older belongs to a conversation cancelled before it reached the stream.
      while (this._head < this._sent.length && this._sent[this._head].seq < message.inputSeq) this._head += 1;
      this._current = message.conversationId;
      this._next = message.inputSeq;
      this._until = message.untilSeq;
      this._first = true;
      this._seq = message.seq;
      return this._drain();
    }
    if (this._current !== null && (message.type === 'INTERRUPTED' || message.type === 'CONVERSATION_ABORTED'
      || (message.type === 'FRAME' && message.end) || message.conversationId !== this._current)) {
      this._current = null; // ended: the relay discards the rest of its utterance
    }
    return [message];
  }

  /** Messages kept for a conversation that has not reached the stream yet. */
  get pending() {
    return this._sent.length - this._head;
  }

  _drain() {
    const out = [];
    while (this._current !== null && this._head < this._sent.length) {
      const item = this._sent[this._head];
      if (item.seq < this._next) { this._head += 1; continue; }
      if (item.seq > this._next) break;
      if (item.pcm === null || (this._until && item.seq > this._until)) { this._current = null; break; }
      this._head += 1;
      out.push({
        type: 'AUDIO', seq: this._seq, conversationId: this._current, pcm: item.pcm,
        first: this._first, end: item.end, own: true,
      });
      this._first = false;
      this._next += 1;
      if (item.end || item.seq === this._until) this._current = null;
    }
    if (this._head > 64 && this._head * 2 > this._sent.length) {
      this._sent = this._sent.slice(this._head);
      this._head = 0;
    }
    return out;
  }
}
