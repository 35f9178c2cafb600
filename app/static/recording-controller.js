// A stand-in for AvatarKit's AvatarController in Host Mode that records every call.
//
// It behaves like the web SDK where the relay client can tell: yieldAudioData() opens a round
// (a new conversation id) on the first audio after the previous round's end or an interrupt and
// returns that id; yieldFramesData() accepts frames only for the current round's id (the SDK
// silently discards others) and an empty list switches the round to audio-only. With a `target`
// controller (the real SDK's) it forwards every call and returns the target's answers, so the
// demo can record and render at the same time.

let instances = 0;

export class RecordingController {
  constructor({ target = null, onCall = null } = {}) {
    this.target = target;
    this.onCall = onCall;
    this.log = [];
    this.prefix = `rec${++instances}`;
    this.round = 0;
    this.current = null; // the id of the open (or last) round
    this.open = false;
    this.audioOnly = new Set();
  }

  yieldAudioData(audio, end = false) {
    let id;
    if (this.target) {
      id = this.target.yieldAudioData(audio, end);
    } else {
      if (!this.open) {
        this.round += 1;
        this.current = `${this.prefix}_${this.round}`;
        this.open = true;
      }
      id = this.current;
      if (end) this.open = false;
    }
    this._record({ call: 'yieldAudioData', audio: copy(audio), end: !!end, returned: id });
    return id;
  }

  yieldFramesData(payloads, conversationId) {
    const frames = [...(payloads ?? [])].map(copy);
    let returned = false;
    let accepted;
    if (this.target) {
      returned = this.target.yieldFramesData(payloads, conversationId);
      accepted = true;
    } else {
      accepted = conversationId === this.current && !this.audioOnly.has(conversationId);
      if (accepted && frames.length === 0) this.audioOnly.add(conversationId);
    }
    this._record({ call: 'yieldFramesData', conversationId, payloads: frames, accepted, returned });
    return returned;
  }

  interrupt() {
    this.target?.interrupt();
    this.open = false;
    this._record({ call: 'interrupt' });
  }

  pause() {
    this.target?.pause?.();
    this._record({ call: 'pause' });
  }

  resume() {
    this.target?.resume?.();
    this._record({ call: 'resume' });
  }

  clear() {
    this.log.length = 0;
  }

  /** The log as JSON-friendly values (bytes as hex), for tests and the page's export button. */
  export() {
    return this.log.map((entry) => {
      const out = { ...entry };
      if (entry.audio) out.audio = hex(entry.audio);
      if (entry.payloads) out.payloads = entry.payloads.map(hex);
      return out;
    });
  }

  _record(entry) {
    const full = { index: this.log.length, at: performance.now(), ...entry };
    this.log.push(full);
    this.onCall?.(full);
  }
}

function copy(data) {
  if (data instanceof Uint8Array) return data.slice();
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
}

function hex(bytes) {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}
