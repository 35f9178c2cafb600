// avatar-relay.js: browser client for the avatar-relay Host Mode relay (protocol avatar-relay.v1).
//
// A dependency-free ES module. It creates a relay session over the REST API, keeps one WebSocket
// to it alive across drops (resuming without loss or duplicates), and feeds an AvatarKit
// AvatarController in Host Mode: yieldAudioData() first, then yieldFramesData() with the id that
// call returned. The wire format is docs/protocol.md; the codec below is tested under Node
// against docs/protocol-vectors.json, the same golden vectors the Python side uses.

export const PROTOCOL = 'avatar-relay.v1';
export const VERSION = '1.0.0';

// --- errors ---------------------------------------------------------------------------------

/** Every failure this module reports carries a stable `code` (the server's codes plus ours). */
export class RelayError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'RelayError';
    this.code = code;
    Object.assign(this, details);
  }
}

const invalid = (message) => new RelayError('invalidRequest', message);

// --- codec ----------------------------------------------------------------------------------

export const ClientType = Object.freeze({
  HELLO: 0x01, AUDIO: 0x02, INTERRUPT: 0x03, ACK: 0x04, PING: 0x05, PONG: 0x06, BYE: 0x07,
});
export const ServerType = Object.freeze({
  WELCOME: 0x81, AUDIO: 0x82, FRAME: 0x83, CONVERSATION_ABORTED: 0x84, INTERRUPTED: 0x85,
  ACK: 0x86, PING: 0x87, PONG: 0x88, ERROR: 0x89, RESUME_FAILED: 0x8a,
});
const CLIENT_NAMES = Object.fromEntries(Object.entries(ClientType).map(([k, v]) => [v, k]));
const SERVER_NAMES = Object.fromEntries(Object.entries(ServerType).map(([k, v]) => [v, k]));

const FLAG_END = 0x01;
const FLAG_FIRST = 0x02;
const FLAG_RESUMED = 0x01;
const MAX_SHORT = 64;
const MAX_U32 = 0xffffffff;
const WELCOME_FIXED = 18; // type, flags, 4 x u32
const RESUME_FAILED_FIXED = 10; // type, flags, 2 x u32
const EMPTY = new Uint8Array(0);

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

function u32(value, name) {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new RangeError(`${name} must be an unsigned 32-bit integer: ${value}`);
  }
  return value;
}

function printable(bytes) {
  for (const b of bytes) if (b < 0x21 || b > 0x7e) return false;
  return true;
}

/** A length-prefixed printable-ASCII string (ids, codes): 1..64 bytes, 0 when allowed. */
function shortString(value, name, allowEmpty = false) {
  const bytes = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) bytes[i] = value.charCodeAt(i);
  if (bytes.length > MAX_SHORT || (!bytes.length && !allowEmpty) || !printable(bytes)) {
    throw new RangeError(`${name} must be 1..64 printable ASCII characters: ${JSON.stringify(value)}`);
  }
  return concat([Uint8Array.of(bytes.length), bytes]);
}

function concat(parts) {
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function head(type, flags, value) {
  const out = new Uint8Array(value === undefined ? 2 : 6);
  out[0] = type;
  out[1] = flags;
  if (value !== undefined) new DataView(out.buffer).setUint32(2, value, true);
  return out;
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected an ArrayBuffer or a typed array');
}

function evenPcm(pcm) {
  const bytes = asBytes(pcm);
  if (bytes.length % 2) throw new RangeError('PCM s16le needs an even number of bytes');
  return bytes;
}

/** Encode a client-to-server message: `{type: 'AUDIO', seq, end, pcm}` etc. Returns bytes. */
export function encodeClient(message) {
  switch (message.type) {
    case 'HELLO': return head(ClientType.HELLO, 0, u32(message.lastSeq, 'lastSeq'));
    case 'AUDIO': {
      const pcm = evenPcm(message.pcm ?? EMPTY);
      return concat([head(ClientType.AUDIO, message.end ? FLAG_END : 0, u32(message.seq, 'seq')), pcm]);
    }
    case 'INTERRUPT': return head(ClientType.INTERRUPT, 0, u32(message.seq, 'seq'));
    case 'ACK': return head(ClientType.ACK, 0, u32(message.seq, 'seq'));
    case 'PING': return head(ClientType.PING, 0, u32(message.nonce, 'nonce'));
    case 'PONG': return head(ClientType.PONG, 0, u32(message.nonce, 'nonce'));
    case 'BYE': return head(ClientType.BYE, 0);
    default: throw new TypeError(`not a client message type: ${message.type}`);
  }
}

/** Encode a server-to-client message (used by tests and fakes; the relay itself is Python). */
export function encodeServer(message) {
  switch (message.type) {
    case 'WELCOME': {
      const out = new Uint8Array(WELCOME_FIXED);
      const view = new DataView(out.buffer);
      out[0] = ServerType.WELCOME;
      out[1] = message.resumed ? FLAG_RESUMED : 0;
      view.setUint32(2, u32(message.clientAck, 'clientAck'), true);
      view.setUint32(6, u32(message.serverSeq, 'serverSeq'), true);
      view.setUint32(10, u32(message.sampleRate, 'sampleRate'), true);
      view.setUint32(14, u32(message.resumeWindowMs, 'resumeWindowMs'), true);
      return concat([out, shortString(message.sessionId, 'sessionId')]);
    }
    case 'AUDIO': {
      const flags = (message.first ? FLAG_FIRST : 0) | (message.end ? FLAG_END : 0);
      return concat([head(ServerType.AUDIO, flags, u32(message.seq, 'seq')),
        shortString(message.conversationId, 'conversationId'), evenPcm(message.pcm ?? EMPTY)]);
    }
    case 'FRAME':
      return concat([head(ServerType.FRAME, message.end ? FLAG_END : 0, u32(message.seq, 'seq')),
        shortString(message.conversationId, 'conversationId'), asBytes(message.payload)]);
    case 'CONVERSATION_ABORTED':
      return concat([head(ServerType.CONVERSATION_ABORTED, 0, u32(message.seq, 'seq')),
        shortString(message.conversationId, 'conversationId'), shortString(message.code, 'code'),
        utf8Encoder.encode(message.message ?? '')]);
    case 'INTERRUPTED':
      return concat([head(ServerType.INTERRUPTED, 0, u32(message.seq, 'seq')),
        shortString(message.conversationId ?? '', 'conversationId', true)]);
    case 'ACK': return head(ServerType.ACK, 0, u32(message.seq, 'seq'));
    case 'PING': return head(ServerType.PING, 0, u32(message.nonce, 'nonce'));
    case 'PONG': return head(ServerType.PONG, 0, u32(message.nonce, 'nonce'));
    case 'ERROR':
      return concat([head(ServerType.ERROR, 0), shortString(message.code, 'code'),
        utf8Encoder.encode(message.message ?? '')]);
    case 'RESUME_FAILED': {
      const out = new Uint8Array(RESUME_FAILED_FIXED);
      const view = new DataView(out.buffer);
      out[0] = ServerType.RESUME_FAILED;
      view.setUint32(2, u32(message.lastSeq, 'lastSeq'), true);
      view.setUint32(6, u32(message.availableFrom, 'availableFrom'), true);
      return concat([out, shortString(message.code, 'code')]);
    }
    default: throw new TypeError(`not a server message type: ${message.type}`);
  }
}

/** A cursor over one received frame; every read checks bounds and throws RelayError. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = 2;
  }

  u32() {
    if (this.offset + 4 > this.bytes.length) throw invalid('truncated header');
    const value = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return value;
  }

  short(name, allowEmpty = false) {
    if (this.offset >= this.bytes.length) throw invalid(`truncated ${name}`);
    const size = this.bytes[this.offset];
    const end = this.offset + 1 + size;
    if (end > this.bytes.length) throw invalid(`truncated ${name}`);
    const raw = this.bytes.subarray(this.offset + 1, end);
    if (size > MAX_SHORT || (!size && !allowEmpty) || !printable(raw)) {
      throw invalid(`${name} must be 1..64 printable ASCII characters`);
    }
    this.offset = end;
    return String.fromCharCode(...raw);
  }

  rest() {
    const out = this.bytes.subarray(this.offset);
    this.offset = this.bytes.length;
    return out;
  }

  text() {
    try {
      return utf8Decoder.decode(this.rest());
    } catch {
      throw invalid('message text is not UTF-8');
    }
  }

  done() {
    if (this.offset !== this.bytes.length) throw invalid('unexpected bytes after the message');
  }
}

function checkFlags(flags, allowed) {
  if (flags & ~allowed) throw invalid('reserved flag bits set');
}

function sizeLimit(bytes, maxBytes) {
  if (maxBytes != null && bytes.length > maxBytes) {
    throw new RelayError('messageTooLarge', `message of ${bytes.length} bytes exceeds ${maxBytes}`);
  }
  if (bytes.length < 2) throw invalid('message shorter than its 2-byte header');
}

/** Decode one server-to-client frame, strictly (same rules as the Python reference codec). */
export function decodeServer(data, maxBytes) {
  const bytes = asBytes(data);
  sizeLimit(bytes, maxBytes);
  const kind = bytes[0];
  const flags = bytes[1];
  const r = new Reader(bytes);
  switch (kind) {
    case ServerType.AUDIO: {
      checkFlags(flags, FLAG_FIRST | FLAG_END);
      const seq = r.u32();
      const conversationId = r.short('conversation id');
      const pcm = r.rest();
      if (pcm.length % 2) throw new RelayError('badAudio', 'PCM s16le needs an even number of bytes');
      return { type: 'AUDIO', seq, conversationId, first: !!(flags & FLAG_FIRST), end: !!(flags & FLAG_END), pcm };
    }
    case ServerType.FRAME: {
      checkFlags(flags, FLAG_END);
      const seq = r.u32();
      const conversationId = r.short('conversation id');
      return { type: 'FRAME', seq, conversationId, end: !!(flags & FLAG_END), payload: r.rest() };
    }
    case ServerType.CONVERSATION_ABORTED: {
      checkFlags(flags, 0);
      const seq = r.u32();
      const conversationId = r.short('conversation id');
      const code = r.short('code');
      return { type: 'CONVERSATION_ABORTED', seq, conversationId, code, message: r.text() };
    }
    case ServerType.INTERRUPTED: {
      checkFlags(flags, 0);
      const seq = r.u32();
      const conversationId = r.short('conversation id', true);
      r.done();
      return { type: 'INTERRUPTED', seq, conversationId };
    }
    case ServerType.ACK:
    case ServerType.PING:
    case ServerType.PONG: {
      checkFlags(flags, 0);
      if (bytes.length !== 6) throw invalid(`${SERVER_NAMES[kind]} must be 6 bytes, got ${bytes.length}`);
      const value = r.u32();
      return kind === ServerType.ACK ? { type: 'ACK', seq: value } : { type: SERVER_NAMES[kind], nonce: value };
    }
    case ServerType.WELCOME: {
      checkFlags(flags, FLAG_RESUMED);
      if (bytes.length < WELCOME_FIXED) throw invalid('truncated WELCOME');
      const clientAck = r.u32();
      const serverSeq = r.u32();
      const sampleRate = r.u32();
      const resumeWindowMs = r.u32();
      const sessionId = r.short('session id');
      r.done();
      return { type: 'WELCOME', sessionId, clientAck, serverSeq, sampleRate, resumeWindowMs, resumed: !!(flags & FLAG_RESUMED) };
    }
    case ServerType.ERROR: {
      checkFlags(flags, 0);
      const code = r.short('code');
      return { type: 'ERROR', code, message: r.text() };
    }
    case ServerType.RESUME_FAILED: {
      checkFlags(flags, 0);
      if (bytes.length < RESUME_FAILED_FIXED) throw invalid('truncated RESUME_FAILED');
      const lastSeq = r.u32();
      const availableFrom = r.u32();
      const code = r.short('code');
      r.done();
      return { type: 'RESUME_FAILED', lastSeq, availableFrom, code };
    }
    default:
      throw new RelayError('unknownMessageType', `unknown server message type 0x${kind.toString(16).padStart(2, '0')}`);
  }
}

/** Decode one client-to-server frame, strictly (what the relay accepts; used by tests/fakes). */
export function decodeClient(data, maxBytes) {
  const bytes = asBytes(data);
  sizeLimit(bytes, maxBytes);
  const kind = bytes[0];
  const flags = bytes[1];
  const r = new Reader(bytes);
  if (kind === ClientType.AUDIO) {
    checkFlags(flags, FLAG_END);
    if (bytes.length < 6) throw invalid('truncated AUDIO header');
    const seq = r.u32();
    const pcm = r.rest();
    const end = !!(flags & FLAG_END);
    if (pcm.length % 2) throw new RelayError('badAudio', 'PCM s16le needs an even number of bytes');
    if (!pcm.length && !end) throw new RelayError('badAudio', 'empty AUDIO without the end flag');
    if (seq === 0) throw new RelayError('badSequence', 'sequence numbers start at 1');
    return { type: 'AUDIO', seq, end, pcm };
  }
  if (kind === ClientType.BYE) {
    checkFlags(flags, 0);
    if (bytes.length !== 2) throw invalid(`BYE must be 2 bytes, got ${bytes.length}`);
    return { type: 'BYE' };
  }
  const name = CLIENT_NAMES[kind];
  if (!name) {
    throw new RelayError('unknownMessageType', `unknown client message type 0x${kind.toString(16).padStart(2, '0')}`);
  }
  checkFlags(flags, 0);
  if (bytes.length !== 6) throw invalid(`${name} must be 6 bytes, got ${bytes.length}`);
  const value = r.u32();
  switch (kind) {
    case ClientType.HELLO: return { type: 'HELLO', lastSeq: value };
    case ClientType.INTERRUPT:
      if (value === 0) throw new RelayError('badSequence', 'sequence numbers start at 1');
      return { type: 'INTERRUPT', seq: value };
    case ClientType.ACK: return { type: 'ACK', seq: value };
    default: return { type: name, nonce: value };
  }
}

// --- audio helpers ----------------------------------------------------------------------------

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * PCM as s16le bytes. Int16Array samples are converted to little-endian when the platform is not;
 * ArrayBuffer / Uint8Array are taken to be s16le bytes already.
 */
export function pcmBytes(pcm) {
  if (pcm instanceof Int16Array) {
    if (LITTLE_ENDIAN) return new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    const out = new Uint8Array(pcm.length * 2);
    const view = new DataView(out.buffer);
    pcm.forEach((sample, i) => view.setInt16(i * 2, sample, true));
    return out;
  }
  return evenPcm(pcm);
}

/** Float samples in [-1, 1] to Int16 (clipped). */
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}

/** Root-mean-square level (0..1) of s16le PCM bytes; the demo's audio meter. */
export function pcmLevel(bytes) {
  const b = asBytes(bytes);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = b.length >> 1;
  if (!n) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const s = view.getInt16(i * 2, true) / 32768;
    sum += s * s;
  }
  return Math.sqrt(sum / n);
}

/**
 * Streaming sample-rate converter for mono float audio. Downsampling averages the input over
 * each output step (a box low-pass, so speech does not alias badly) and upsampling interpolates
 * linearly. State carries across calls, so chunk boundaries leave no clicks or drift.
 */
export class Resampler {
  constructor(fromRate, toRate) {
    if (!(fromRate > 0 && toRate > 0)) throw new RangeError('sample rates must be positive');
    this.fromRate = fromRate;
    this.toRate = toRate;
    this.step = fromRate / toRate; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples relative to `prev`
    this.prev = 0; // the last input sample of the previous call (index -1)
  }

  process(input) {
    if (this.fromRate === this.toRate) return Float32Array.from(input);
    const out = [];
    const n = input.length;
    const at = (i) => (i < 0 ? this.prev : input[i]);
    let pos = this.pos;
    if (this.step <= 1) {
      // Upsampling: output sample at fractional input index pos-1 .. interpolate prev/input.
      while (pos < n) {
        const i = Math.floor(pos) - 1;
        const frac = pos - Math.floor(pos);
        out.push(at(i) + (at(i + 1) - at(i)) * frac);
        pos += this.step;
      }
    } else {
      // Downsampling: average the inputs in (pos - step, pos].
      while (pos + 1 <= n) {
        const start = Math.max(0, Math.ceil(pos - this.step));
        const end = Math.floor(pos);
        let sum = 0;
        for (let i = start; i <= end; i++) sum += input[i];
        out.push(sum / (end - start + 1));
        pos += this.step;
      }
    }
    this.pos = pos - n;
    if (n) this.prev = input[n - 1];
    return Float32Array.from(out);
  }
}

// --- a tiny event emitter ------------------------------------------------------------------------

class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Subscribe; returns a function that unsubscribes. `'*'` receives every event. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  once(type, handler) {
    const off = this.on(type, (event) => {
      off();
      handler(event);
    });
    return off;
  }

  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
  }

  emit(type, event = {}) {
    const payload = { ...event, type, time: now() };
    for (const key of [type, '*']) {
      for (const handler of [...(this._handlers.get(key) ?? [])]) {
        try {
          handler(payload);
        } catch (err) {
          // A listener's bug must not break delivery to the controller.
          setTimeout(() => { throw err; });
        }
      }
    }
  }
}

const now = () => (globalThis.performance?.now ? performance.now() : Date.now());

// --- Host Mode: feeding an AvatarController ------------------------------------------------------

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

// --- the client ---------------------------------------------------------------------------------

export const States = Object.freeze({
  IDLE: 'idle', CONNECTING: 'connecting', OPEN: 'open', RECONNECTING: 'reconnecting',
  CLOSED: 'closed', FAILED: 'failed',
});

// Close codes after which the session is over: reconnecting cannot help (docs/protocol.md §6).
// Everything else (1005, 1006, 1012-1014, 4008, ...) is a drop: get a new ticket and resume.
const FATAL_CLOSE = new Map([
  [1000, 'sessionClosed'], [1001, 'goingAway'], [1009, 'messageTooLarge'], [1011, 'internalError'],
  [4001, 'connectionReplaced'], [4400, 'invalidRequest'], [4401, 'ticketInvalid'], [4403, 'originNotAllowed'],
  [4404, 'sessionNotFound'], [4408, 'idleTimeout'], [4409, 'resumeFailed'],
  [4410, 'sessionClosed'], [4429, 'sessionLimit'],
]);

const DEFAULTS = Object.freeze({
  ackEvery: 10,
  ackDelayMs: 250,
  chunkBytes: 32 * 1024,
  maxOutboxBytes: 16 * 1024 * 1024,
  connectTimeoutMs: 10000,
  pingIntervalMs: 15000,
  pongTimeoutMs: 10000,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
});

// Socket attempts before a session that never got a WELCOME gives up.
const MAX_UNWELCOMED_ATTEMPTS = 4;

// Upstream animation runs at 25 frames per second: one frame animates 40 ms of audio.
const FRAME_MS = 40;

/**
 * One relay session: REST session creation, the socket, resume, acks and the controller.
 *
 * Events (`client.on(type, handler)`): state, open, welcome, conversationstart, conversationid,
 * audio, frame, conversationend, conversationaborted, interrupted, ack, error, close.
 */
export class AvatarRelayClient extends Emitter {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.baseUrl = trimSlash(options.baseUrl ?? globalThis.location?.origin ?? '');
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.driver = null;
    if (options.controller) this.setController(options.controller);
    this._resetSession();
  }

  _resetSession() {
    this.state = States.IDLE;
    this.session = null; // the REST answer: sessionId, ticket, url, sampleRate, avatarId, ...
    this.sessionId = null;
    this.sampleRate = this.options.sampleRate ?? null;
    this.resumeWindowMs = null;
    this._ws = null;
    this._welcomed = false;
    this._lastSeq = 0; // highest server seq processed (contiguous)
    this._ackedSeq = 0; // highest server seq we acknowledged
    this._unacked = 0;
    this._ackTimer = null;
    this._nextSeq = 1; // our next AUDIO / INTERRUPT seq
    this._outbox = []; // [{seq, bytes}] sent or not, until the server acknowledges them
    this._outboxBytes = 0;
    this._serverAck = 0;
    this._utteranceOpen = false;
    this._utteranceStarts = []; // send times of utterances whose conversation has not started
    this._conversations = new Map();
    this._currentConversation = null;
    this._attempt = 0;
    this._dropAt = null;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._connectTimer = null;
    this._pingNonce = 0;
    this._pingSentAt = new Map();
    this._connectPromise = null;
    this._settle = null;
    this._fatalError = null;
    this._everWelcomed = false;
    this._offlineUntil = 0;
    this._stats = {
      connects: 0, reconnects: 0, drops: 0, messagesReceived: 0, duplicatesIgnored: 0,
      audioChunksSent: 0, audioBytesSent: 0, resentMessages: 0, replayedOnResume: 0, audioChunksReceived: 0,
      audioBytesReceived: 0, framesReceived: 0, frameBytesReceived: 0, conversationsStarted: 0,
      conversationsCompleted: 0, conversationsAborted: 0, interruptsSent: 0, interruptsReceived: 0,
      acksSent: 0, rttMs: null,
    };
  }

  /** Drive this AvatarKit AvatarController (or anything with the same three methods). */
  setController(controller) {
    this.driver = controller ? new HostModeDriver(controller, (type, event) => this.emit(type, event)) : null;
  }

  // --- public API ---

  /**
   * Create the relay session (unless `session` is given: an existing POST /v1/relay/sessions
   * answer) and connect. Resolves with the session once the server has welcomed us.
   */
  connect(session) {
    if (this._connectPromise) return this._connectPromise;
    if (this.state === States.CLOSED || this.state === States.FAILED) this._resetSession();
    this._connectPromise = new Promise((resolve, reject) => {
      this._settle = { resolve, reject };
    });
    this._connectPromise.catch(() => {}); // failures are also reported as events
    this._setState(States.CONNECTING);
    (async () => {
      try {
        this.session = session ?? (await this._createSession());
        this.sessionId = this.session.sessionId;
        this.sampleRate = this.session.sampleRate ?? this.sampleRate;
        this.resumeWindowMs = (this.session.resumeWindowSeconds ?? 30) * 1000;
        this._open(this.session.url, this.session.ticket);
      } catch (err) {
        this._fail(asRelayError(err, 'connectionFailed'));
      }
    })();
    return this._connectPromise;
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
      this._sendSequenced(encodeClient({ type: 'AUDIO', seq: this._nextSeq, end: end && last, pcm: chunk }));
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
    this._sendSequenced(encodeClient({ type: 'INTERRUPT', seq: this._nextSeq }));
    this._stats.interruptsSent += 1;
    this._utteranceOpen = false;
    this._utteranceStarts = [];
  }

  /**
   * Simulate a network failure: the socket goes away without a goodbye (whatever is in flight
   * is lost) and the client resumes, after `offlineMs` (default 0) as if the network were down.
   */
  dropConnection({ offlineMs = 0 } = {}) {
    if (!this._ws) return false;
    this._offlineUntil = now() + offlineMs;
    this._abandonSocket(4000, 'simulated drop');
    this._onDrop('simulated drop');
    return true;
  }

  /** End the session on purpose (BYE): the server releases the avatar at once. */
  async close() {
    const ws = this._ws;
    clearTimeout(this._reconnectTimer);
    if (ws && ws.readyState === 1) {
      this._flushAck();
      ws.send(encodeClient({ type: 'BYE' }));
    }
    this._stopTimers();
    if (ws) {
      this._detach(ws);
      try { ws.close(1000, 'bye'); } catch { /* already closing */ }
    }
    this._ws = null;
    this._settle?.reject(new RelayError('sessionClosed', 'closed by the client'));
    this._finish(States.CLOSED, null);
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

  // --- REST ---

  _post(path, body) {
    return postJson(this._fetch, this.baseUrl + path, this.options.fetchOptions, body);
  }

  _createSession() {
    return createRelaySession({ ...this.options, baseUrl: this.baseUrl, fetch: this._fetch });
  }

  async _newTicket() {
    const answer = await this._post(`/v1/relay/sessions/${encodeURIComponent(this.sessionId)}/tickets`, {});
    return { url: answer.url ?? withTicket(this.session.url, answer.ticket), ticket: answer.ticket };
  }

  // --- socket lifecycle ---

  _open(url, ticket) {
    const wsUrl = socketUrl(url, ticket, this.baseUrl || globalThis.location?.href);
    const ws = new this._WebSocket(wsUrl, PROTOCOL);
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._welcomed = false;
    this._stats.connects += 1;
    ws.onopen = () => {
      ws.send(encodeClient({ type: 'HELLO', lastSeq: this._lastSeq }));
    };
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._onClose(event.code, event.reason);
    };
    ws.onerror = () => {}; // a close event always follows
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws && !this._welcomed) {
        this._abandonSocket(4000, 'no welcome');
        this._onDrop('no WELCOME in time');
      }
    }, this.options.connectTimeoutMs);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
  }

  _abandonSocket(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    // Detach first: whatever is still in flight on this socket is lost, as in a real drop.
    this._detach(ws);
    this._ws = null;
    try { ws.close(code, reason); } catch { /* not open yet */ }
  }

  _onClose(code, reason) {
    const serverCode = codeFromReason(reason);
    this._ws = null;
    if (this._fatalError) {
      this._fail(this._fatalError);
      return;
    }
    const fatal = FATAL_CLOSE.get(code);
    if (fatal) {
      this._fail(new RelayError(serverCode || fatal, `connection closed (${code}${reason ? `: ${reason}` : ''})`, { closeCode: code }));
      return;
    }
    this._onDrop(`connection closed (${code})`);
  }

  _onDrop(why) {
    this._stopTimers();
    if (this.state === States.CLOSED || this.state === States.FAILED) return;
    this._stats.drops += 1;
    this._dropAt ??= now();
    this._setState(States.RECONNECTING, { reason: why });
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (!this.sessionId) {
      this._fail(new RelayError('connectionFailed', 'could not open the relay session'));
      return;
    }
    // A socket that was never welcomed is refused at the upgrade (wrong origin, proxy without
    // WebSocket support, ...); browsers hide the HTTP status, so stop after a few tries.
    if (!this._everWelcomed && this._attempt >= MAX_UNWELCOMED_ATTEMPTS) {
      this._fail(new RelayError('connectionFailed', 'the relay socket could not be opened (is this page\'s origin in CORS_ORIGINS?)'));
      return;
    }
    const windowMs = this.resumeWindowMs ?? 30000;
    const elapsed = now() - this._dropAt;
    if (elapsed > windowMs) {
      this._fail(new RelayError('resumeFailed', 'could not reconnect within the resume window'));
      return;
    }
    const base = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this._attempt);
    const backoff = this._attempt === 0 ? 0 : base * (0.8 + 0.4 * Math.random());
    const delay = Math.max(backoff, this._offlineUntil - now());
    this._attempt += 1;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    if (this.state !== States.RECONNECTING) return;
    try {
      const { url, ticket } = await this._newTicket();
      if (this.state !== States.RECONNECTING) return;
      this._stats.reconnects += 1;
      this._open(url, ticket);
    } catch (err) {
      const error = asRelayError(err, 'connectionFailed');
      // The session is gone or we may not use it: stop. Anything else (network, 5xx): retry.
      if (error.status && error.status < 500 && error.status !== 429 && error.status !== 408) {
        this._fail(error);
        return;
      }
      this.emit('error', { code: error.code, message: error.message, fatal: false });
      this._scheduleReconnect();
    }
  }

  _setState(state, extra = {}) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous, ...extra });
  }

  _fail(error) {
    this._stopTimers();
    clearTimeout(this._reconnectTimer);
    if (this._ws) this._abandonSocket(1000, 'client gave up');
    if (this.state === States.CLOSED || this.state === States.FAILED) return;
    this.emit('error', { code: error.code, message: error.message, fatal: true, error });
    this._settle?.reject(error);
    this._finish(States.FAILED, error);
  }

  _finish(state, error) {
    this._settle = null;
    this._connectPromise = null;
    this._setState(state, error ? { code: error.code } : {});
    this.emit('close', { code: error?.code ?? null });
  }

  _stopTimers() {
    clearTimeout(this._ackTimer);
    clearTimeout(this._connectTimer);
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._ackTimer = this._pingTimer = this._pongTimer = this._connectTimer = null;
  }

  _usable() {
    if (this.state === States.CLOSED || this.state === States.FAILED) {
      throw new RelayError('sessionClosed', 'the relay session is over; connect() again');
    }
  }

  // --- sending ---

  _sendSequenced(bytes) {
    const seq = this._nextSeq++;
    this._outbox.push({ seq, bytes });
    this._outboxBytes += bytes.length;
    if (this._welcomed && this._ws?.readyState === 1) this._ws.send(bytes);
  }

  _trimOutbox(ack) {
    if (ack <= this._serverAck) return;
    this._serverAck = ack;
    let drop = 0;
    while (drop < this._outbox.length && this._outbox[drop].seq <= ack) {
      this._outboxBytes -= this._outbox[drop].bytes.length;
      drop += 1;
    }
    if (drop) this._outbox.splice(0, drop);
  }

  _sendControl(message) {
    if (this._ws?.readyState === 1) this._ws.send(encodeClient(message));
  }

  _scheduleAck() {
    this._unacked += 1;
    if (this._unacked >= this.options.ackEvery) {
      this._flushAck();
    } else if (!this._ackTimer) {
      this._ackTimer = setTimeout(() => this._flushAck(), this.options.ackDelayMs);
    }
  }

  _flushAck() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (this._lastSeq > this._ackedSeq && this._ws?.readyState === 1) {
      this._sendControl({ type: 'ACK', seq: this._lastSeq });
      this._ackedSeq = this._lastSeq;
      this._unacked = 0;
      this._stats.acksSent += 1;
    }
  }

  _startPings() {
    clearInterval(this._pingTimer);
    if (!this.options.pingIntervalMs) return;
    this._pingTimer = setInterval(() => {
      const nonce = (this._pingNonce = (this._pingNonce + 1) >>> 0);
      this._pingSentAt.set(nonce, now());
      this._sendControl({ type: 'PING', nonce });
      clearTimeout(this._pongTimer);
      // A silent half-open connection (laptop lid, lost Wi-Fi) would otherwise hang forever.
      this._pongTimer = setTimeout(() => {
        this._abandonSocket(4000, 'no pong');
        this._onDrop('no PONG in time');
      }, this.options.pongTimeoutMs);
    }, this.options.pingIntervalMs);
  }

  // --- receiving ---

  _onMessage(ws, data) {
    if (this._ws !== ws) return;
    let message;
    try {
      message = decodeServer(typeof data === 'string' ? new Uint8Array(0) : data);
    } catch (err) {
      this.emit('error', { code: err.code ?? 'invalidRequest', message: `bad message from the server: ${err.message}`, fatal: false });
      this._abandonSocket(4000, 'bad message');
      this._onDrop('bad message from the server');
      return;
    }
    this._stats.messagesReceived += 1;
    switch (message.type) {
      case 'WELCOME': return this._onWelcome(message);
      case 'AUDIO':
      case 'FRAME':
      case 'CONVERSATION_ABORTED':
      case 'INTERRUPTED':
        return this._onSequenced(message);
      case 'ACK':
        this._trimOutbox(message.seq);
        this.emit('ack', { seq: message.seq });
        return undefined;
      case 'PING':
        this._sendControl({ type: 'PONG', nonce: message.nonce });
        return undefined;
      case 'PONG': {
        clearTimeout(this._pongTimer);
        const sent = this._pingSentAt.get(message.nonce);
        this._pingSentAt.clear();
        if (sent !== undefined) this._stats.rttMs = now() - sent;
        return undefined;
      }
      case 'ERROR':
        // The server closes right after; that close must not trigger a reconnect.
        this._fatalError = new RelayError(message.code, message.message || message.code);
        if (message.code === 'goingAway') this._fatalError.retryWithNewSession = true;
        return undefined;
      case 'RESUME_FAILED':
        this._fatalError = new RelayError(message.code, `the server could not resume the session (from seq ${message.lastSeq}; oldest kept ${message.availableFrom})`, { lastSeq: message.lastSeq, availableFrom: message.availableFrom });
        return undefined;
      default:
        return undefined;
    }
  }

  _onWelcome(message) {
    clearTimeout(this._connectTimer);
    if (this._welcomed) return;
    if (message.serverSeq < this._lastSeq) {
      this._fail(new RelayError('resumeFailed', 'the server has fewer messages than we received'));
      return;
    }
    this._welcomed = true;
    this._everWelcomed = true;
    this._fatalError = null;
    this.sessionId = message.sessionId;
    this.sampleRate = message.sampleRate;
    this.resumeWindowMs = message.resumeWindowMs;
    this._attempt = 0;
    this._dropAt = null;
    // Anything acknowledged is done; everything else goes again, in order (the server drops seqs
    // it already has, so a resend can never duplicate).
    this._trimOutbox(message.clientAck);
    let resent = 0;
    for (const { seq, bytes } of this._outbox) {
      if (seq <= message.clientAck) continue;
      this._ws.send(bytes);
      resent += 1;
    }
    if (message.resumed) {
      this._stats.resentMessages += resent;
      // What the server sent that this client never processed: it comes again now.
      this._stats.replayedOnResume += message.serverSeq - this._lastSeq;
    }
    this._ackedSeq = Math.min(this._ackedSeq, this._lastSeq);
    this._startPings();
    this._setState(States.OPEN, { resumed: message.resumed });
    this.emit('welcome', { ...message, resent });
    if (this._settle) {
      this._settle.resolve(this.session);
      this._settle = null;
    }
  }

  _onSequenced(message) {
    if (message.seq <= this._lastSeq) {
      this._stats.duplicatesIgnored += 1;
      return;
    }
    if (message.seq !== this._lastSeq + 1) {
      // A correct server never skips; resuming from what we have restores order.
      this.emit('error', { code: 'badSequence', message: `expected seq ${this._lastSeq + 1}, got ${message.seq}`, fatal: false });
      this._abandonSocket(4000, 'sequence gap');
      this._onDrop('sequence gap');
      return;
    }
    this._lastSeq = message.seq;
    this._deliver(message);
    this._scheduleAck();
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
        this.emit('audio', { conversationId: id, seq: message.seq, first: message.first, end: message.end, pcm: message.pcm, receivedAt: at });
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

// --- helpers -------------------------------------------------------------------------------------

function trimSlash(url) {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

/** The socket URL: absolute or relative to the API base, http(s) mapped to ws(s), with the ticket. */
function socketUrl(url, ticket, base) {
  const resolved = new URL(url, base || undefined);
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  if (ticket && !resolved.searchParams.has('ticket')) resolved.searchParams.set('ticket', ticket);
  return resolved.toString();
}

function withTicket(url, ticket) {
  const base = globalThis.location?.href ?? 'http://localhost/';
  const resolved = new URL(url, base);
  resolved.searchParams.set('ticket', ticket);
  return /^[a-z]+:/i.test(url) ? resolved.toString() : resolved.pathname + resolved.search;
}

function codeFromReason(reason) {
  return /^[A-Za-z]+$/.test(reason ?? '') ? reason : /^([A-Za-z]+)[:\s]/.exec(reason ?? '')?.[1] ?? null;
}

function asRelayError(err, fallback) {
  if (err instanceof RelayError) return err;
  return new RelayError(fallback, String(err?.message ?? err), { cause: err });
}

/** The JSON body of a successful answer, or a RelayError from the server's error shape. */
async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new RelayError(error.code ?? httpCode(response.status), error.message ?? `HTTP ${response.status}`, {
      status: response.status, requestId: error.requestId ?? null,
      retryAfter: Number(response.headers?.get?.('Retry-After')) || null,
    });
  }
  if (body === null) throw new RelayError('protocolError', 'the server answered without JSON');
  return body;
}

function httpCode(status) {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'notFound';
  if (status === 429) return 'rateLimited';
  return status >= 500 ? 'serverError' : 'invalidRequest';
}

async function postJson(fetchImpl, url, fetchOptions, body, headers = {}) {
  const extra = (typeof fetchOptions === 'function' ? await fetchOptions() : fetchOptions) ?? {};
  const doFetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  const response = await doFetch(url, {
    ...extra,
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(extra.headers ?? {}), ...headers },
    body: JSON.stringify(body ?? {}),
  });
  return readJson(response);
}

/**
 * Create a relay session (POST /v1/relay/sessions) without connecting, e.g. to learn its sample
 * rate and avatar before initialising the AvatarKit SDK; then pass it to `client.connect(session)`.
 */
export function createRelaySession({ baseUrl, fetchOptions, avatarId, sampleRate, sessionRequest, fetch: fetchImpl } = {}) {
  const base = trimSlash(baseUrl ?? globalThis.location?.origin ?? '');
  const body = { ...(sessionRequest ?? {}) };
  if (avatarId && body.avatarId === undefined) body.avatarId = avatarId;
  if (sampleRate && body.sampleRate === undefined) body.sampleRate = sampleRate;
  return postJson(fetchImpl, `${base}/v1/relay/sessions`, fetchOptions, body);
}

// --- SDK (direct) mode: session tokens from the broker -------------------------------------------

/**
 * Get a single-use SpatialReal session token from this server's broker (POST /v1/session-tokens),
 * for AvatarSDK.setSessionToken() in SDK (direct) mode. Resolves with
 * `{sessionToken, expireAt, appId, region}`; rejects with a RelayError (e.g. `unauthorized`,
 * `rateLimited`, `upstreamUnavailable`).
 */
export function fetchSessionToken({ baseUrl, fetchOptions, ttlSeconds, idempotencyKey, fetch: fetchImpl } = {}) {
  const base = trimSlash(baseUrl ?? globalThis.location?.origin ?? '');
  const headers = idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {};
  const body = ttlSeconds == null ? {} : { ttlSeconds };
  return postJson(fetchImpl, `${base}/v1/session-tokens`, fetchOptions, body, headers);
}

// --- microphone -----------------------------------------------------------------------------------

/**
 * Capture the microphone with an AudioWorklet, resample to the session's rate and stream it as
 * s16le mono through `client.sendAudio()`. Resolves with `{stop({end}), sampleRate, context}`;
 * `stop()` closes the utterance (END) unless `{end: false}`.
 *
 * options: `chunkMs` (default 40), `constraints` (getUserMedia audio constraints),
 * `audioContext` (reuse one), `workletUrl`, `onLevel(rms 0..1)`, `onChunk(Int16Array)`.
 */
export async function startMicrophone(client, options = {}) {
  const targetRate = options.sampleRate ?? client.sampleRate;
  if (!targetRate) throw new RelayError('invalidRequest', 'connect() first: the session decides the sample rate');
  const chunkMs = options.chunkMs ?? 40;
  const constraints = options.constraints ?? { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const stream = options.stream ?? (await navigator.mediaDevices.getUserMedia({ audio: constraints }));
  const context = options.audioContext ?? new AudioContext();
  const ownsContext = !options.audioContext;
  const workletUrl = options.workletUrl ?? new URL('./pcm-capture-worklet.js', import.meta.url).href;
  await context.audioWorklet.addModule(workletUrl);
  if (context.state === 'suspended') await context.resume();
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, 'avatar-relay-capture', {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit',
    processorOptions: { batchFrames: Math.max(128, Math.round(context.sampleRate * 0.02)) },
  });
  const resampler = new Resampler(context.sampleRate, targetRate);
  const samplesPerChunk = Math.max(1, Math.round((targetRate * chunkMs) / 1000));
  let pending = new Int16Array(0);
  let stopped = false;
  node.port.onmessage = (event) => {
    if (stopped) return;
    const converted = floatToInt16(resampler.process(event.data));
    const joined = new Int16Array(pending.length + converted.length);
    joined.set(pending);
    joined.set(converted, pending.length);
    let offset = 0;
    while (joined.length - offset >= samplesPerChunk) {
      const chunk = joined.slice(offset, offset + samplesPerChunk);
      offset += samplesPerChunk;
      try {
        client.sendAudio(chunk);
      } catch (err) {
        client.emit('error', { code: err.code ?? 'internalError', message: err.message, fatal: false });
      }
      options.onChunk?.(chunk);
      options.onLevel?.(pcmLevel(pcmBytes(chunk)));
    }
    pending = joined.slice(offset);
  };
  source.connect(node);
  return {
    sampleRate: targetRate,
    context,
    stream,
    stop({ end = true } = {}) {
      if (stopped) return;
      stopped = true;
      source.disconnect();
      node.port.onmessage = null;
      node.disconnect();
      for (const track of stream.getTracks()) track.stop();
      if (ownsContext) context.close();
      try {
        if (pending.length) client.sendAudio(pending, { end });
        else if (end) client.endUtterance();
      } catch (err) {
        client.emit('error', { code: err.code ?? 'internalError', message: err.message, fatal: false });
      }
    },
  };
}
