// The relay client: a RelayConnection that knows what the messages mean. It sends utterances,
// keeps per-conversation records and statistics, and hands audio and animation to the Host Mode
// driver, which feeds the AvatarKit controller.
import { EMPTY, encodeClient } from './codec.js';
import { pcmBytes } from './audio.js';
import { now } from './emitter.js';
import { RelayError } from './errors.js';
import { HostModeDriver, HostSessionDriver } from './host-mode.js';
import { RelayConnection } from './connection.js';
import { OwnAudio } from './own-audio.js';

// Upstream animation runs at 25 frames per second: one frame animates 40 ms of audio.
const FRAME_MS = 40;

/**
 * One relay session: REST session creation, the socket, resume, acks and the controller.
 *
 * Events (`client.on(type, handler)`): state, open, welcome, conversationstart, conversationid,
 * audio, frame, conversationend, conversationaborted, interrupted, ack, error, close.
 *
 * `audioEcho: false` creates the session without the echo of our audio (half the messages
 * down): the client then yields the audio it sent itself, at the place the echo would have had
 * (`own-audio.js`); `audio` events carry `own: true` then.
 */
export class AvatarRelayClient extends RelayConnection {
  constructor(options = {}) {
    super(options);
    this.driver = null;
    if (options.avatarSession) this.setAvatarSession(options.avatarSession);
    else if (options.controller) this.setController(options.controller);
    // The WELCOME says which mode the session is in (a joined session's own setting rules).
    this.on('welcome', ({ noEcho }) => {
      if (noEcho && !this._ownAudio) this._ownAudio = new OwnAudio();
      if (!noEcho) this._ownAudio = null;
    });
  }

  /** The relay echoes our audio (false: this client yields its own). */
  get audioEcho() {
    return this._ownAudio === null;
  }

  _resetSession() {
    super._resetSession();
    this._utteranceOpen = false;
    this._utteranceStarts = []; // send times of utterances whose conversation has not started
    this._conversations = new Map();
    this._currentConversation = null;
    // Kept from the first chunk on when we asked for no echo: audio queued before the WELCOME
    // is ours to yield too.
    this._ownAudio = this.options.audioEcho === false ? new OwnAudio() : null;
    Object.assign(this._stats, {
      audioChunksSent: 0, audioBytesSent: 0, audioChunksReceived: 0, audioBytesReceived: 0,
      framesReceived: 0, frameBytesReceived: 0, conversationsStarted: 0, conversationsCompleted: 0,
      conversationsAborted: 0, interruptsSent: 0, interruptsReceived: 0,
    });
  }

  /** Drive this AvatarKit AvatarController (the older `@spatialwalk/avatarkit` SDK). */
  setController(controller) {
    this.driver = controller ? new HostModeDriver(controller, (type, event) => this.emit(type, event)) : null;
  }

  /** Drive this Host-mode session of the current web SDK (`@spatialreal/web-sdk`). */
  setAvatarSession(session) {
    this.driver = session ? new HostSessionDriver(session, (type, event) => this.emit(type, event)) : null;
  }

  /**
   * Queue PCM (s16le mono at the session's rate) for the current utterance and send it as soon
   * as the socket allows. `{end: true}` closes the utterance (the chunk may then be empty).
   * Audio sent while reconnecting is kept and sent after the resume. Returns the bytes queued.
   */
  sendAudio(pcm, { end = false } = {}) {
    this._usable();
    const bytes = pcm == null ? EMPTY : pcmBytes(pcm);
    if (!bytes.length && !end) return 0;
    const step = this.options.chunkBytes - (this.options.chunkBytes % 2);
    if (this._outboxBytes + bytes.length > this.options.maxOutboxBytes) {
      throw new RelayError('bufferFull', 'too much unacknowledged audio: the connection is not keeping up');
    }
    if (!this._utteranceOpen) {
      this._utteranceOpen = true;
      this._utteranceStarts.push(now());
    }
    for (let offset = 0; offset < bytes.length || (offset === 0 && end); offset += step) {
      const chunk = bytes.slice(offset, offset + step);
      const last = offset + step >= bytes.length;
      const seq = this._nextSeq;
      this._sendSequenced(encodeClient({ type: 'AUDIO', seq, end: end && last, pcm: chunk }));
      if (this._ownAudio) this._deliverAll(this._ownAudio.sent(seq, chunk, end && last));
      this._stats.audioChunksSent += 1;
      this._stats.audioBytesSent += chunk.length;
      if (!bytes.length) break;
    }
    if (end) this._utteranceOpen = false;
    return bytes.length;
  }

  /** Close the current utterance without more audio. */
  endUtterance() {
    return this.sendAudio(null, { end: true });
  }

  /** Stop the avatar: the server cancels every conversation started so far, then we interrupt. */
  interrupt() {
    this._usable();
    const seq = this._nextSeq;
    this._sendSequenced(encodeClient({ type: 'INTERRUPT', seq }));
    if (this._ownAudio) this._ownAudio.sent(seq, null);
    this._stats.interruptsSent += 1;
    this._utteranceOpen = false;
    this._utteranceStarts = [];
  }

  /** A snapshot of counters and the current state. */
  stats() {
    return {
      ...this._stats,
      state: this.state,
      sessionId: this.sessionId,
      sampleRate: this.sampleRate,
      lastServerSeq: this._lastSeq,
      nextClientSeq: this._nextSeq,
      clientSeqAcked: this._serverAck,
      outboxMessages: this._outbox.length,
      outboxBytes: this._outboxBytes,
      framesHeld: this.driver?.held ?? 0,
    };
  }

  /** Conversations seen so far (bounded to the most recent ones), oldest first. */
  conversations() {
    return [...this._conversations.values()].map((c) => ({ ...c }));
  }

  _conversation(id) {
    let conv = this._conversations.get(id);
    if (!conv) {
      conv = {
        conversationId: id, controllerConversationId: null, utteranceStartedAt: null,
        startedAt: now(), firstFrameAt: null, endedAt: null, audioChunks: 0, audioBytes: 0,
        frames: 0, status: 'active', code: null,
      };
      this._conversations.set(id, conv);
      if (this._conversations.size > 50) this._conversations.delete(this._conversations.keys().next().value);
    }
    return conv;
  }

  _deliver(message) {
    if (this._ownAudio) this._deliverAll(this._ownAudio.received(message));
    else if (message.type !== 'CONVERSATION_STARTED') this._use(message);
  }

  _deliverAll(messages) {
    for (const message of messages) this._use(message);
  }

  _use(message) {
    const at = now();
    const id = message.conversationId;
    switch (message.type) {
      case 'AUDIO': {
        const conv = this._conversation(id);
        if (message.first) {
          conv.utteranceStartedAt = this._utteranceStarts.shift() ?? null;
          this._currentConversation = conv;
          this._stats.conversationsStarted += 1;
          this.emit('conversationstart', { conversationId: id, utteranceStartedAt: conv.utteranceStartedAt });
        }
        conv.audioChunks += 1;
        conv.audioBytes += message.pcm.length;
        this._stats.audioChunksReceived += 1;
        this._stats.audioBytesReceived += message.pcm.length;
        const rec = this.driver?.audio(id, message.pcm, message);
        if (rec?.sdkId != null) conv.controllerConversationId = rec.sdkId;
        this.emit('audio', { conversationId: id, seq: message.seq, first: message.first, end: message.end, pcm: message.pcm, receivedAt: at, own: !!message.own });
        return;
      }
      case 'FRAME': {
        const conv = this._conversation(id);
        const index = conv.frames;
        conv.frames += 1;
        conv.firstFrameAt ??= at;
        this._stats.framesReceived += 1;
        this._stats.frameBytesReceived += message.payload.length;
        const rec = this.driver?.frame(id, message.payload, message);
        if (rec?.sdkId != null) conv.controllerConversationId = rec.sdkId;
        // Latency: when this frame arrived against when the audio it animates was sent (frames
        // are 40 ms each and the utterance's audio is assumed to be sent in real time).
        const latencyMs = conv.utteranceStartedAt == null ? null
          : at - (conv.utteranceStartedAt + index * FRAME_MS);
        this.emit('frame', { conversationId: id, seq: message.seq, index, end: message.end, payload: message.payload, receivedAt: at, latencyMs });
        if (message.end) this._endConversation(conv, 'completed');
        return;
      }
      case 'CONVERSATION_ABORTED': {
        const conv = this._conversation(id);
        this.driver?.aborted(id);
        conv.code = message.code;
        this._stats.conversationsAborted += 1;
        this.emit('conversationaborted', { conversationId: id, code: message.code, message: message.message });
        this._endConversation(conv, 'aborted');
        return;
      }
      case 'INTERRUPTED': {
        this._stats.interruptsReceived += 1;
        this.driver?.interrupted();
        for (const conv of this._conversations.values()) {
          if (conv.status === 'active') this._endConversation(conv, 'interrupted');
        }
        this.emit('interrupted', { conversationId: id || null });
        return;
      }
      default:
    }
  }

  _endConversation(conv, status) {
    conv.status = status;
    conv.endedAt = now();
    if (status === 'completed') this._stats.conversationsCompleted += 1;
    if (this.driver) {
      const rec = this.driver.conversations.get(conv.conversationId);
      if (rec?.sdkId != null) conv.controllerConversationId = rec.sdkId;
    }
    this.emit('conversationend', { conversationId: conv.conversationId, status, code: conv.code });
  }
}
