// An offline stand-in for the current AvatarKit web SDK (`@spatialreal/web-sdk`) in Host mode.
//
// Same shape as the SDK's entry point, as the official examples use it:
//   const session = await new SpatialReal({ appId }).createSession({
//     avatarId, credential, container, drivingServiceMode: 'host', audioFormat: { sampleRate } });
//   await session.start();                       // from a click: unlocks audio
//   session.yieldAudioData(arrayBuffer, end);    // a round opens with audio; `end` closes it
//   session.yieldFramesData([motion, ...]);      // animates the open round; dropped otherwise
//   session.interrupt(); session.dispose(); session.on('state' | 'error', handler)
// It renders a simple face (no WASM, no network), so a page runs against the emulator, where
// there is no real avatar to download, and it records every call (`session.calls`) for tests.
// Point the import map at the real SDK to render the real avatar.
import { StandInAvatar } from '/static/demo-avatar.js';

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

class StandInError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

class HostAvatarSession {
  constructor({ avatarId, credential, container, audioFormat }) {
    this.avatarId = avatarId;
    this.credential = credential;
    this.sampleRate = audioFormat?.sampleRate ?? 16000;
    this.state = 'idle';
    this.calls = [];
    this._handlers = new Map();
    this._round = 0;
    this._open = false;
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 240;
    canvas.setAttribute('aria-label', 'avatar stand-in');
    container.replaceChildren(canvas);
    this._face = new StandInAvatar(canvas, () => this.sampleRate);
    const draw = () => {
      if (this.state === 'disposed') return;
      this._face.draw();
      this._frame = requestAnimationFrame(draw);
    };
    draw();
  }

  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type)?.delete(handler);
  }

  async start() {
    if (this.state !== 'idle') throw new StandInError('invalidState', `start() in state ${this.state}`);
    this._setState('live');
  }

  yieldAudioData(audio, end = false) {
    if (!(audio instanceof ArrayBuffer)) throw new StandInError('invalidArgument', 'audio must be an ArrayBuffer');
    const bytes = new Uint8Array(audio);
    if (!this._open && bytes.length) {
      this._open = true;
      this._round += 1;
    }
    const round = this._open ? `round-${this._round}` : null;
    this._record({ call: 'yieldAudioData', audio: hex(bytes), end: !!end, round });
    if (round) this._face.onCall({ call: 'yieldAudioData', audio: bytes, returned: round });
    if (end) this._open = false;
  }

  yieldFramesData(frames) {
    const round = this._open ? `round-${this._round}` : null;
    const payloads = [...frames].map((f) => new Uint8Array(f instanceof ArrayBuffer ? f : f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength)));
    // Motion with no open round (before its audio, after its end) is dropped, as the SDK does.
    this._record({ call: 'yieldFramesData', frames: payloads.map(hex), round, accepted: round !== null });
    if (round) this._face.onCall({ call: 'yieldFramesData', conversationId: round, payloads });
  }

  interrupt() {
    this._open = false;
    this._record({ call: 'interrupt' });
    this._face.onCall({ call: 'interrupt' });
  }

  dispose() {
    cancelAnimationFrame(this._frame);
    this._setState('disposed');
  }

  _record(entry) {
    this.calls.push({ index: this.calls.length, at: performance.now(), ...entry });
  }

  _setState(current) {
    const previous = this.state;
    this.state = current;
    for (const handler of this._handlers.get('state') ?? []) handler({ previous, current });
  }
}

export class SpatialReal {
  constructor({ appId } = {}) {
    if (!appId) throw new StandInError('invalidArgument', 'appId is required');
    this.appId = appId;
  }

  async createSession(options = {}) {
    const { avatarId, credential, container, drivingServiceMode } = options;
    if (drivingServiceMode !== 'host') throw new StandInError('invalidArgument', 'the stand-in only does Host mode');
    if (!avatarId) throw new StandInError('invalidArgument', 'avatarId is required');
    // The real SDK downloads the avatar with this token: a missing one fails here too.
    if (typeof credential !== 'string' || !credential) throw new StandInError('sessionTokenInvalid', 'credential (a session token) is required');
    if (!(container instanceof Element)) throw new StandInError('invalidArgument', 'container must be an element');
    return new HostAvatarSession(options);
  }
}
