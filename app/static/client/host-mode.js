// Host Mode: feeding an AvatarKit controller in stream order (yieldAudioData() first, then
// yieldFramesData() with the id that call returned).
import { EMPTY } from './codec.js';

const isThenable = (value) => value != null && typeof value.then === 'function';

/**
 * Maps relay conversations to the ids `controller.yieldAudioData()` returns and calls the
 * controller in stream order. Frames (and the audio-only switch of an aborted conversation) whose
 * conversation has no controller id yet are held until `yieldAudioData()` provides one.
 */
export class HostModeDriver {
  constructor(controller, emit = () => {}) {
    this.controller = controller;
    this.emit = emit;
    this.conversations = new Map(); // relay conversation id -> record
    this.current = null;
    this.held = 0;
  }

  _record(relayId) {
    let rec = this.conversations.get(relayId);
    if (!rec) {
      rec = { relayId, sdkId: null, held: [], audioEnded: false, done: false, cancelled: false, frames: 0 };
      this.conversations.set(relayId, rec);
      // Keep a bounded history: finished conversations older than the last 32 are forgotten.
      if (this.conversations.size > 32) {
        for (const [id, old] of this.conversations) {
          if (this.conversations.size <= 32) break;
          if ((old.done || old.cancelled) && !old.held.length) this.conversations.delete(id);
        }
      }
    }
    return rec;
  }

  audio(relayId, pcm, { first = false, end = false } = {}) {
    if (first && this.current && this.current.relayId !== relayId) this._closeRound(this.current);
    const rec = this._record(relayId);
    if (first || !this.current) this.current = rec;
    if (rec.cancelled) return rec;
    if (end) rec.audioEnded = true;
    let result;
    try {
      result = this.controller.yieldAudioData(pcm, end);
    } catch (err) {
      // The controller's failure must not stall the stream; later audio may still start it.
      this._failed('controllerError', err);
      return rec;
    }
    if (isThenable(result)) {
      result.then((id) => this._learnId(rec, id), (err) => this._failed('controllerError', err));
    } else {
      this._learnId(rec, result);
    }
    return rec;
  }

  frame(relayId, payload, { end = false } = {}) {
    const rec = this._record(relayId);
    if (rec.cancelled) return rec;
    rec.frames += 1;
    if (end) rec.done = true;
    if (rec.sdkId == null) {
      rec.held.push(payload);
      this.held += 1;
      return rec;
    }
    this._yieldFrames(rec, [payload]);
    return rec;
  }

  aborted(relayId) {
    const rec = this._record(relayId);
    if (rec.cancelled) return rec;
    rec.done = true;
    // End the controller's round if its audio never got END, so the next conversation's audio
    // starts a new round instead of extending this one.
    if (!rec.audioEnded) this._closeRound(rec);
    if (rec.sdkId == null) {
      rec.held.push(null); // the audio-only marker, delivered in order after held frames
      return rec;
    }
    this._yieldFrames(rec, []);
    return rec;
  }

  interrupted() {
    for (const rec of this.conversations.values()) {
      if (!rec.done) rec.cancelled = true;
      this.held -= rec.held.length;
      rec.held = [];
    }
    this.held = Math.max(0, this.held);
    this.current = null;
    try {
      this.controller.interrupt?.();
    } catch (err) {
      this._failed('controllerError', err);
    }
  }

  _closeRound(rec) {
    if (rec.audioEnded || rec.cancelled) return;
    rec.audioEnded = true;
    try {
      const result = this.controller.yieldAudioData(EMPTY, true);
      if (isThenable(result)) result.then((id) => this._learnId(rec, id), () => {});
      else this._learnId(rec, result);
    } catch (err) {
      this._failed('controllerError', err);
    }
  }

  _learnId(rec, id) {
    if (rec.sdkId != null || id == null || id === '') return;
    rec.sdkId = id;
    this.emit('conversationid', { conversationId: rec.relayId, controllerConversationId: id });
    if (!rec.held.length || rec.cancelled) return;
    const held = rec.held;
    rec.held = [];
    this.held -= held.length;
    const frames = held.filter((item) => item !== null);
    if (frames.length) this._yieldFrames(rec, frames);
    if (frames.length !== held.length) this._yieldFrames(rec, []);
  }

  _yieldFrames(rec, payloads) {
    try {
      this.controller.yieldFramesData(payloads, rec.sdkId);
    } catch (err) {
      this._failed('controllerError', err);
    }
  }

  _failed(code, err) {
    this.emit('error', { code, message: String(err?.message ?? err), fatal: false, cause: err });
  }
}

/** Exactly these bytes as an ArrayBuffer of their own (what the web SDK's session takes). */
function ownBuffer(bytes) {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer
    : bytes.slice().buffer;
}

/**
 * Feeds a Host-mode session of the current web SDK (`@spatialreal/web-sdk`:
 * `new SpatialReal({appId}).createSession({..., drivingServiceMode: 'host'})`), which has no
 * conversation ids: `yieldAudioData(audio, end)` opens a round with its first audio and `end`
 * closes it, and `yieldFramesData(frames)` animates the open round (motion after the end is
 * dropped). So a conversation's audio goes without `end`, and the round is ended after its last
 * frame (and its last audio); a failed conversation switches to audio-only (`[]`) and ends.
 */
export class HostSessionDriver {
  constructor(session, emit = () => {}) {
    this.session = session;
    this.emit = emit;
    this.conversations = new Map(); // relay conversation id -> record
    this.current = null;
    this.held = 0; // nothing waits for an id here
  }

  _record(relayId) {
    let rec = this.conversations.get(relayId);
    if (!rec) {
      rec = { relayId, sdkId: null, audioEnded: false, framesEnded: false, closed: false, cancelled: false, frames: 0 };
      this.conversations.set(relayId, rec);
      if (this.conversations.size > 32) {
        for (const [id, old] of this.conversations) {
          if (this.conversations.size <= 32) break;
          if (old.closed || old.cancelled) this.conversations.delete(id);
        }
      }
    }
    return rec;
  }

  audio(relayId, pcm, { first = false, end = false } = {}) {
    if (first && this.current && this.current.relayId !== relayId) this._endRound(this.current);
    const rec = this._record(relayId);
    if (first || !this.current) this.current = rec;
    if (rec.cancelled || rec.closed) return rec;
    if (pcm.length) this._call(() => this.session.yieldAudioData(ownBuffer(pcm), false));
    if (end) {
      rec.audioEnded = true;
      if (rec.framesEnded) this._endRound(rec);
    }
    return rec;
  }

  frame(relayId, payload, { end = false } = {}) {
    const rec = this._record(relayId);
    if (rec.cancelled || rec.closed) return rec;
    rec.frames += 1;
    this._call(() => this.session.yieldFramesData([payload.slice()]));
    if (end) {
      rec.framesEnded = true;
      if (rec.audioEnded) this._endRound(rec);
    }
    return rec;
  }

  aborted(relayId) {
    const rec = this._record(relayId);
    if (rec.cancelled || rec.closed) return rec;
    // AvatarKit Host Mode: empty motion data means audio-only for the round; then it ends
    // (the relay discards the rest of a failed conversation).
    this._call(() => this.session.yieldFramesData([]));
    this._endRound(rec);
    return rec;
  }

  interrupted() {
    for (const rec of this.conversations.values()) {
      if (!rec.closed) rec.cancelled = true;
    }
    this.current = null;
    this._call(() => this.session.interrupt?.());
  }

  _endRound(rec) {
    if (rec.closed || rec.cancelled) return;
    rec.closed = true;
    this._call(() => this.session.yieldAudioData(new ArrayBuffer(0), true));
  }

  _call(fn) {
    try {
      const result = fn();
      if (result != null && typeof result.then === 'function') result.then(null, (err) => this._failed(err));
    } catch (err) {
      // The session's failure must not stall the stream.
      this._failed(err);
    }
  }

  _failed(err) {
    this.emit('error', { code: 'controllerError', message: String(err?.message ?? err), fatal: false, cause: err });
  }
}
