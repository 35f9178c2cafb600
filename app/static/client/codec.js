// The avatar-relay.v1 wire codec (docs/protocol.md), strict in both directions. Tested under Node
// against docs/protocol-vectors.json, the same golden vectors the Python codec is tested with.
import { RelayError, invalid } from './errors.js';

export const PROTOCOL = 'avatar-relay.v1';

export const ClientType = Object.freeze({
  HELLO: 0x01, AUDIO: 0x02, INTERRUPT: 0x03, ACK: 0x04, PING: 0x05, PONG: 0x06, BYE: 0x07,
});
export const ServerType = Object.freeze({
  WELCOME: 0x81, AUDIO: 0x82, FRAME: 0x83, CONVERSATION_ABORTED: 0x84, INTERRUPTED: 0x85,
  ACK: 0x86, PING: 0x87, PONG: 0x88, ERROR: 0x89, RESUME_FAILED: 0x8a, CONVERSATION_STARTED: 0x8b,
});
const CLIENT_NAMES = Object.fromEntries(Object.entries(ClientType).map(([k, v]) => [v, k]));
const SERVER_NAMES = Object.fromEntries(Object.entries(ServerType).map(([k, v]) => [v, k]));

const FLAG_END = 0x01;
const FLAG_FIRST = 0x02;
const FLAG_RESUMED = 0x01;
const FLAG_NO_ECHO = 0x02; // WELCOME: the session does not echo our audio; we yield our own
const MAX_SHORT = 64;
const MAX_U32 = 0xffffffff;
const WELCOME_FIXED = 18; // type, flags, 4 x u32
const RESUME_FAILED_FIXED = 10; // type, flags, 2 x u32
const STARTED_FIXED = 14; // type, flags, seq, inputSeq, untilSeq
export const EMPTY = new Uint8Array(0);

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

export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected an ArrayBuffer or a typed array');
}

export function evenPcm(pcm) {
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
      out[1] = (message.resumed ? FLAG_RESUMED : 0) | (message.noEcho ? FLAG_NO_ECHO : 0);
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
    case 'CONVERSATION_STARTED': {
      const out = new Uint8Array(STARTED_FIXED);
      const view = new DataView(out.buffer);
      out[0] = ServerType.CONVERSATION_STARTED;
      view.setUint32(2, u32(message.seq, 'seq'), true);
      view.setUint32(6, u32(message.inputSeq, 'inputSeq'), true);
      view.setUint32(10, u32(message.untilSeq ?? 0, 'untilSeq'), true);
      return concat([out, shortString(message.conversationId, 'conversationId')]);
    }
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
    case ServerType.CONVERSATION_STARTED: {
      checkFlags(flags, 0);
      if (bytes.length < STARTED_FIXED) throw invalid('truncated CONVERSATION_STARTED');
      const seq = r.u32();
      const inputSeq = r.u32();
      const untilSeq = r.u32();
      const conversationId = r.short('conversation id');
      r.done();
      return { type: 'CONVERSATION_STARTED', seq, inputSeq, untilSeq, conversationId };
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
      checkFlags(flags, FLAG_RESUMED | FLAG_NO_ECHO);
      if (bytes.length < WELCOME_FIXED) throw invalid('truncated WELCOME');
      const clientAck = r.u32();
      const serverSeq = r.u32();
      const sampleRate = r.u32();
      const resumeWindowMs = r.u32();
      const sessionId = r.short('session id');
      r.done();
      return {
        type: 'WELCOME', sessionId, clientAck, serverSeq, sampleRate, resumeWindowMs,
        resumed: !!(flags & FLAG_RESUMED), noEcho: !!(flags & FLAG_NO_ECHO),
      };
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
