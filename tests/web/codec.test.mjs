// Unit tests for app/static/client/avatar-relay.js under Node (`node --test tests/web/codec.test.mjs`).
// The codec is checked against docs/protocol-vectors.json, the same golden vectors the Python
// codec is tested with; the Host Mode driver and the client's resume logic against fakes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  AvatarRelayClient, HostModeDriver, HostSessionDriver, RelayError, Resampler, decodeClient, decodeServer,
  encodeClient, encodeServer, floatToInt16, pcmBytes,
} from '../../app/static/client/avatar-relay.js';

const vectors = JSON.parse(readFileSync(new URL('../../docs/protocol-vectors.json', import.meta.url)));
const BYTE_FIELDS = new Set(['pcm', 'payload']);

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const fromHex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

/** The vector's fields with hex byte fields turned into bytes (what the codec speaks). */
function toMessage(fields) {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, BYTE_FIELDS.has(k) ? fromHex(v) : v]));
}

/** A decoded message with byte fields as hex (comparable with the vector). */
function toFields(message) {
  return Object.fromEntries(Object.entries(message).map(([k, v]) => [k, v instanceof Uint8Array ? hex(v) : v]));
}

test('there are vectors for both directions', () => {
  assert.equal(vectors.protocol, 'avatar-relay.v1');
  assert.ok(vectors.vectors.some((v) => v.direction === 'client'));
  assert.ok(vectors.vectors.some((v) => v.direction === 'server'));
  assert.ok(vectors.invalid.length > 10);
});

for (const vector of vectors.vectors) {
  const encode = vector.direction === 'client' ? encodeClient : encodeServer;
  const decode = vector.direction === 'client' ? decodeClient : decodeServer;

  test(`encodes ${vector.name}`, () => {
    assert.equal(hex(encode(toMessage(vector.fields))), vector.hex);
  });

  test(`decodes ${vector.name}`, () => {
    const decoded = toFields(decode(fromHex(vector.hex)));
    // Flags that are false may be reported even when the vector omits them.
    const expected = { ...vector.fields };
    for (const [k, v] of Object.entries(decoded)) if (!(k in expected) && v === false) delete decoded[k];
    assert.deepEqual(decoded, expected);
  });

  test(`decodes ${vector.name} from an offset inside a larger buffer`, () => {
    const raw = fromHex(`ffff${vector.hex}`);
    const decoded = decode(raw.subarray(2));
    assert.equal(hex(encode(decoded)), vector.hex);
  });
}

for (const entry of vectors.invalid) {
  test(`rejects ${entry.name} with ${entry.error}`, () => {
    const decode = entry.direction === 'client' ? decodeClient : decodeServer;
    assert.throws(() => decode(fromHex(entry.hex)), (err) => {
      assert.ok(err instanceof RelayError, `not a RelayError: ${err}`);
      assert.equal(err.code, entry.error);
      return true;
    });
  });
}

test('a message over the size limit is messageTooLarge', () => {
  const frame = encodeServer({ type: 'FRAME', seq: 1, conversationId: 'c1', end: false, payload: new Uint8Array(100) });
  assert.throws(() => decodeServer(frame, 64), { code: 'messageTooLarge' });
  assert.equal(decodeServer(frame, frame.length).payload.length, 100);
});

test('encoders refuse values the wire cannot carry', () => {
  assert.throws(() => encodeClient({ type: 'ACK', seq: -1 }), RangeError);
  assert.throws(() => encodeClient({ type: 'ACK', seq: 2 ** 32 }), RangeError);
  assert.throws(() => encodeClient({ type: 'AUDIO', seq: 1, pcm: new Uint8Array(3) }), RangeError);
  assert.throws(() => encodeServer({ type: 'FRAME', seq: 1, conversationId: 'has space', payload: new Uint8Array(1) }), RangeError);
  assert.throws(() => encodeServer({ type: 'FRAME', seq: 1, conversationId: 'x'.repeat(65), payload: new Uint8Array(1) }), RangeError);
});

test('Int16Array PCM is sent little-endian', () => {
  assert.equal(hex(pcmBytes(Int16Array.of(1, -1, 0x7fff, -0x8000))), '0100ffffff7f0080');
  assert.throws(() => pcmBytes(new Uint8Array(3)), RangeError);
});

test('floatToInt16 clips and scales', () => {
  assert.deepEqual([...floatToInt16(Float32Array.of(0, 1, -1, 2, -2, 0.5))], [0, 32767, -32768, 32767, -32768, 16384]);
});

test('the resampler keeps the rate ratio across chunk boundaries', () => {
  for (const [from, to] of [[48000, 16000], [44100, 16000], [16000, 24000], [8000, 48000], [16000, 16000]]) {
    const r = new Resampler(from, to);
    let produced = 0;
    const total = from * 2; // two seconds, in odd-sized chunks
    let fed = 0;
    for (let size = 127; fed < total; size = (size * 7) % 1000 + 1) {
      const n = Math.min(size, total - fed);
      produced += r.process(new Float32Array(n).fill(0.25)).length;
      fed += n;
    }
    assert.ok(Math.abs(produced - (total * to) / from) <= 2, `${from}->${to}: ${produced}`);
  }
  // A constant signal stays constant (no clicks at chunk edges once started).
  const r = new Resampler(48000, 16000);
  r.process(new Float32Array(480).fill(0.5));
  for (const v of r.process(new Float32Array(1000).fill(0.5))) assert.ok(Math.abs(v - 0.5) < 1e-6);
});

// --- Host Mode driver ---

class FakeController {
  constructor({ ids = null, async = false } = {}) {
    this.calls = [];
    this.round = 0;
    this.open = false;
    this.ids = ids; // a function returning the id for a call, or null for the normal behaviour
    this.async = async;
    this.resolvers = [];
  }

  yieldAudioData(bytes, end) {
    if (!this.open) {
      this.round += 1;
      this.open = true;
    }
    const id = this.ids ? this.ids(this.calls.length) : `sdk-${this.round}`;
    this.calls.push(['audio', bytes.length, !!end, id]);
    if (end) this.open = false;
    if (!this.async) return id;
    return new Promise((resolve) => this.resolvers.push(() => resolve(id)));
  }

  yieldFramesData(payloads, id) {
    this.calls.push(['frames', payloads.map((p) => hex(p)), id]);
    return false;
  }

  interrupt() {
    this.calls.push(['interrupt']);
    this.open = false;
  }
}

test('driver: audio first, then frames with the id yieldAudioData returned', () => {
  const c = new FakeController();
  const d = new HostModeDriver(c);
  d.audio('A', new Uint8Array(4), { first: true });
  d.frame('A', Uint8Array.of(1));
  d.audio('A', new Uint8Array(2), { end: true });
  d.frame('A', Uint8Array.of(2), { end: true });
  d.audio('B', new Uint8Array(2), { first: true, end: true });
  d.frame('B', Uint8Array.of(3), { end: true });
  assert.deepEqual(c.calls, [
    ['audio', 4, false, 'sdk-1'], ['frames', ['01'], 'sdk-1'], ['audio', 2, true, 'sdk-1'],
    ['frames', ['02'], 'sdk-1'], ['audio', 2, true, 'sdk-2'], ['frames', ['03'], 'sdk-2'],
  ]);
});

test('driver: frames wait for an id that is not known yet, then go in order', async () => {
  const c = new FakeController({ async: true });
  const d = new HostModeDriver(c);
  d.audio('A', new Uint8Array(2), { first: true });
  d.frame('A', Uint8Array.of(1));
  d.frame('A', Uint8Array.of(2));
  assert.equal(d.held, 2);
  assert.deepEqual(c.calls.map((x) => x[0]), ['audio']);
  c.resolvers.shift()();
  await new Promise((r) => setTimeout(r, 0));
  d.frame('A', Uint8Array.of(3));
  assert.equal(d.held, 0);
  assert.deepEqual(c.calls.slice(1), [['frames', ['01', '02'], 'sdk-1'], ['frames', ['03'], 'sdk-1']]);
});

test('driver: a null id holds frames until a later yieldAudioData returns one', () => {
  const c = new FakeController({ ids: (n) => (n === 0 ? null : 'late') });
  const d = new HostModeDriver(c);
  d.audio('A', new Uint8Array(2), { first: true });
  d.frame('A', Uint8Array.of(9));
  assert.equal(c.calls.length, 1);
  d.audio('A', new Uint8Array(2), {});
  assert.deepEqual(c.calls[2], ['frames', ['09'], 'late']);
});

test('driver: an aborted conversation ends its round and goes audio-only', () => {
  const c = new FakeController();
  const d = new HostModeDriver(c);
  d.audio('A', new Uint8Array(2), { first: true });
  d.frame('A', Uint8Array.of(1));
  d.aborted('A');
  d.audio('B', new Uint8Array(2), { first: true });
  assert.deepEqual(c.calls, [
    ['audio', 2, false, 'sdk-1'], ['frames', ['01'], 'sdk-1'],
    ['audio', 0, true, 'sdk-1'], ['frames', [], 'sdk-1'], ['audio', 2, false, 'sdk-2'],
  ]);
});

test('driver: interrupt stops playback and forgets held frames of cancelled conversations', async () => {
  const c = new FakeController({ async: true });
  const d = new HostModeDriver(c);
  d.audio('A', new Uint8Array(2), { first: true });
  d.frame('A', Uint8Array.of(1));
  d.interrupted();
  c.resolvers.shift()();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(d.held, 0);
  assert.deepEqual(c.calls.map((x) => x[0]), ['audio', 'interrupt']);
});

// --- the client against a fake server (WebSocket + fetch) ---

class FakeServer {
  constructor() {
    this.sockets = [];
    this.received = []; // decoded client messages, every connection
    this.tickets = 0;
    this.sessions = 0;
  }

  fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const body = (status, json) => ({ ok: status < 300, status, json: async () => json, headers: new Map() });
    if (path === '/v1/relay/sessions') {
      this.sessions += 1;
      this.lastInit = init;
      return body(201, { sessionId: 'rs_1', ticket: 't0', url: '/v1/relay?session=rs_1&ticket=t0', sampleRate: 16000, avatarId: 'a', resumeWindowSeconds: 30 });
    }
    if (path === '/v1/relay/sessions/rs_1/tickets') {
      this.tickets += 1;
      return body(201, { ticket: `t${this.tickets}` });
    }
    return body(404, { error: { code: 'notFound', message: 'no' } });
  };

  get WebSocket() {
    const server = this;
    return class FakeSocket {
      constructor(url, protocol) {
        this.url = url;
        this.protocol = protocol;
        this.readyState = 0;
        this.closed = null;
        server.sockets.push(this);
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.();
        }, 0);
      }

      send(bytes) {
        server.received.push(decodeClient(bytes));
      }

      close(code, reason) {
        this.readyState = 3;
        this.closed = [code, reason];
      }

      deliver(message) {
        this.onmessage?.({ data: encodeServer(message).slice().buffer });
      }
    };
  }

  get socket() {
    return this.sockets.at(-1);
  }
}

/** Wait (by polling the fake, no fixed sleeps) until `predicate()` holds. */
async function until(predicate) {
  for (let i = 0; i < 1000 && !predicate(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(predicate(), 'condition never held');
}

const helloCount = (server) => server.received.filter((m) => m.type === 'HELLO').length;

test('client: resumes after a drop, resends unacked audio and ignores replayed duplicates', async () => {
  const server = new FakeServer();
  const controller = new FakeController();
  const client = new AvatarRelayClient({
    baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, controller,
    fetchOptions: { headers: { Authorization: 'Bearer k' } }, pingIntervalMs: 0,
  });
  const states = [];
  client.on('state', (e) => states.push(e.state));
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  assert.equal(server.socket.url, 'ws://relay.test/v1/relay?session=rs_1&ticket=t0');
  assert.equal(server.socket.protocol, 'avatar-relay.v1');
  assert.equal(server.lastInit.headers.Authorization, 'Bearer k');
  assert.deepEqual(server.received, [{ type: 'HELLO', lastSeq: 0 }]);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000 });
  await connecting;

  client.sendAudio(Int16Array.of(1, 2));
  client.sendAudio(Int16Array.of(3), { end: true });
  const conv = '20260101120000_V1StGXR8_Z5j';
  server.socket.deliver({ type: 'AUDIO', seq: 1, conversationId: conv, first: true, pcm: Int16Array.of(1, 2) });
  server.socket.deliver({ type: 'ACK', seq: 1 });
  server.received.length = 0;
  client.dropConnection(); // seq 2 (the END chunk) is unacknowledged
  assert.equal(client.state, 'reconnecting');
  await until(() => helloCount(server) === 1);
  assert.ok(server.socket.url.endsWith('ticket=t1'));
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 1, serverSeq: 3, sampleRate: 16000, resumeWindowMs: 30000, resumed: true });
  // The first thing after HELLO{1} is the resend of seq 2 only.
  assert.deepEqual(server.received.map((m) => [m.type, m.lastSeq ?? m.seq]), [['HELLO', 1], ['AUDIO', 2]]);
  server.socket.deliver({ type: 'AUDIO', seq: 1, conversationId: conv, first: true, pcm: Int16Array.of(1, 2) }); // duplicate
  server.socket.deliver({ type: 'AUDIO', seq: 2, conversationId: conv, end: true, pcm: Int16Array.of(3) });
  server.socket.deliver({ type: 'FRAME', seq: 3, conversationId: conv, end: true, payload: Uint8Array.of(7) });
  assert.deepEqual(controller.calls, [
    ['audio', 4, false, 'sdk-1'], ['audio', 2, true, 'sdk-1'], ['frames', ['07'], 'sdk-1'],
  ]);
  assert.equal(client.stats().duplicatesIgnored, 1);
  assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
  // Three messages are fewer than ackEvery: the ack timer sends ACK{3}.
  await until(() => server.received.some((m) => m.type === 'ACK' && m.seq === 3));
  await client.close();
  assert.deepEqual(server.received.at(-1), { type: 'BYE' });
  assert.equal(client.state, 'closed');
});

test('client: answers pings, and RESUME_FAILED ends the session with its code', async () => {
  const server = new FakeServer();
  const client = new AvatarRelayClient({ baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, pingIntervalMs: 0 });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 24000, resumeWindowMs: 30000 });
  await connecting;
  assert.equal(client.sampleRate, 24000);
  server.socket.deliver({ type: 'PING', nonce: 77 });
  assert.deepEqual(server.received.at(-1), { type: 'PONG', nonce: 77 });
  client.dropConnection();
  await until(() => helloCount(server) === 2);
  server.socket.deliver({ type: 'RESUME_FAILED', lastSeq: 0, availableFrom: 5, code: 'slowConsumer' });
  server.socket.onclose({ code: 4409, reason: 'slowConsumer' });
  assert.equal(client.state, 'failed');
  assert.equal(errors.at(-1).code, 'slowConsumer');
  assert.equal(errors.at(-1).fatal, true);
  assert.throws(() => client.sendAudio(Int16Array.of(1)), { code: 'sessionClosed' });
});

test('client: a handover (1012) reconnects and resumes; a lost session says to make a new one', async () => {
  const server = new FakeServer();
  const client = new AvatarRelayClient({ baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, pingIntervalMs: 0 });
  const lost = [];
  const order = [];
  client.on('sessionlost', (e) => { lost.push(e); order.push('sessionlost'); });
  client.on('error', (e) => { if (e.fatal) order.push('error'); });
  client.on('close', () => order.push('close'));
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000 });
  await connecting;
  server.socket.onclose({ code: 1012, reason: 'sessionMoved' });
  await until(() => helloCount(server) === 2);
  assert.equal(server.tickets, 1);
  assert.equal(lost.length, 0);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000, resumed: true });
  assert.equal(client.state, 'open');
  // The next instance does not have the session: one event says what to do.
  server.socket.onclose({ code: 4404, reason: 'sessionNotFound' });
  assert.equal(client.state, 'failed');
  assert.deepEqual(lost.map((e) => [e.code, e.action]), [['sessionNotFound', 'newSession']]);
  assert.deepEqual(order, ['error', 'sessionlost', 'close']);
});

test('client: a sequence gap is never delivered; the client reconnects instead', async () => {
  const server = new FakeServer();
  const controller = new FakeController();
  const client = new AvatarRelayClient({ baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, controller, pingIntervalMs: 0 });
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000 });
  await connecting;
  server.socket.deliver({ type: 'AUDIO', seq: 2, conversationId: 'c', first: true, pcm: Int16Array.of(1) });
  assert.equal(controller.calls.length, 0);
  assert.equal(client.state, 'reconnecting');
  await client.close();
});

test('client: the session-creation error keeps the server code', async () => {
  const client = new AvatarRelayClient({
    baseUrl: 'http://relay.test', WebSocket: class {},
    fetch: async () => ({ ok: false, status: 401, json: async () => ({ error: { code: 'unauthorized', message: 'no key', requestId: 'r1' } }), headers: new Map() }),
  });
  await assert.rejects(client.connect(), (err) => err.code === 'unauthorized' && err.status === 401 && err.requestId === 'r1');
  assert.equal(client.state, 'failed');
});

test('the type declarations declare exactly what the module exports', async () => {
  const module = await import('../../app/static/client/avatar-relay.js');
  const dts = readFileSync(new URL('../../app/static/client/avatar-relay.d.ts', import.meta.url), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(new Set(declared), new Set(Object.keys(module)));
});

test('driver: a throwing controller is reported and does not stop the stream', () => {
  const errors = [];
  let calls = 0;
  const controller = {
    yieldAudioData() {
      calls += 1;
      if (calls === 1) throw new Error('not ready');
      return 'sdk-x';
    },
    yieldFramesData() {},
    interrupt() { throw new Error('boom'); },
  };
  const d = new HostModeDriver(controller, (type, event) => errors.push([type, event.code]));
  d.audio('A', new Uint8Array(2), { first: true });
  d.frame('A', Uint8Array.of(1));
  d.audio('A', new Uint8Array(2), {});
  d.interrupted();
  assert.deepEqual(errors, [['error', 'controllerError'], ['conversationid', undefined], ['error', 'controllerError']]);
});

test('client: a socket that is never welcomed gives up with connectionFailed', async () => {
  const server = new FakeServer();
  const Refusing = class extends server.WebSocket {
    constructor(url, protocol) {
      super(url, protocol);
      setTimeout(() => this.onclose?.({ code: 1006, reason: '' }), 1);
    }
  };
  const client = new AvatarRelayClient({
    baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: Refusing, pingIntervalMs: 0,
    initialBackoffMs: 1, maxBackoffMs: 2,
  });
  await assert.rejects(client.connect(), { code: 'connectionFailed' });
  assert.equal(client.state, 'failed');
  assert.equal(server.sockets.length, 5);
});

// --- the current web SDK's Host-mode session (@spatialreal/web-sdk): no ids, `end` closes ---

/** Behaves as the examples show the session: a round opens with audio, `end` closes it, and
 * motion outside an open round is dropped. Records every call. */
class FakeSession {
  constructor() {
    this.calls = [];
    this.open = false;
    this.round = 0;
  }

  yieldAudioData(audio, end = false) {
    assert.ok(audio instanceof ArrayBuffer, 'the session takes ArrayBuffers');
    if (!this.open && audio.byteLength) {
      this.open = true;
      this.round += 1;
    }
    this.calls.push(['audio', [...new Uint8Array(audio)], end, this.round]);
    if (end) this.open = false;
  }

  yieldFramesData(frames) {
    this.calls.push(['frames', frames.map((f) => [...f]), this.open ? this.round : null]);
  }

  interrupt() {
    this.open = false;
    this.calls.push(['interrupt']);
  }
}

test('session driver: audio without end, frames as they come, the round ends after the last frame', () => {
  const session = new FakeSession();
  const d = new HostSessionDriver(session);
  d.audio('A', Uint8Array.of(1, 0), { first: true });
  d.frame('A', Uint8Array.of(9));
  d.audio('A', Uint8Array.of(2, 0), { end: true }); // the utterance's last audio: round stays open
  d.frame('A', Uint8Array.of(8), { end: true }); // its last frame: now the round ends
  d.audio('B', Uint8Array.of(3, 0), { first: true });
  d.frame('B', Uint8Array.of(7));
  assert.deepEqual(session.calls, [
    ['audio', [1, 0], false, 1],
    ['frames', [[9]], 1],
    ['audio', [2, 0], false, 1],
    ['frames', [[8]], 1],
    ['audio', [], true, 1],
    ['audio', [3, 0], false, 2],
    ['frames', [[7]], 2],
  ]);
  // Every frame landed in an open round (none dropped by the session).
  assert.ok(session.calls.filter((c) => c[0] === 'frames').every((c) => c[2] !== null));
});

test('session driver: a new conversation ends the previous round first', () => {
  const session = new FakeSession();
  const d = new HostSessionDriver(session);
  d.audio('A', Uint8Array.of(1, 0), { first: true });
  d.audio('B', Uint8Array.of(2, 0), { first: true });
  assert.deepEqual(session.calls, [['audio', [1, 0], false, 1], ['audio', [], true, 1], ['audio', [2, 0], false, 2]]);
});

test('session driver: a failed conversation goes audio-only and ends; interrupt cancels the rest', () => {
  const session = new FakeSession();
  const d = new HostSessionDriver(session);
  d.audio('A', Uint8Array.of(1, 0), { first: true });
  d.frame('A', Uint8Array.of(9));
  d.aborted('A');
  d.frame('A', Uint8Array.of(8)); // nothing of it after the abort
  d.audio('B', Uint8Array.of(2, 0), { first: true });
  d.interrupted();
  d.frame('B', Uint8Array.of(7)); // nothing of it after the interrupt
  d.audio('C', Uint8Array.of(3, 0), { first: true });
  assert.deepEqual(session.calls, [
    ['audio', [1, 0], false, 1],
    ['frames', [[9]], 1],
    ['frames', [], 1],
    ['audio', [], true, 1],
    ['audio', [2, 0], false, 2],
    ['interrupt'],
    ['audio', [3, 0], false, 3],
  ]);
});

test('session driver: the bytes handed over are exactly the payload, even from inside a larger buffer', () => {
  const session = new FakeSession();
  const d = new HostSessionDriver(session);
  const wire = Uint8Array.of(0xff, 5, 0, 6, 0, 0xff);
  d.audio('A', wire.subarray(1, 5), { first: true });
  d.frame('A', wire.subarray(2, 4));
  assert.deepEqual(session.calls, [['audio', [5, 0, 6, 0], false, 1], ['frames', [[0, 6]], 1]]);
});

test('client: drives an avatarSession through the socket, and asks for a session token', async () => {
  const server = new FakeServer();
  const session = new FakeSession();
  const client = new AvatarRelayClient({
    baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket,
    avatarSession: session, withSessionToken: true, pingIntervalMs: 0,
  });
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  assert.equal(JSON.parse(server.lastInit.body).withSessionToken, true);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000 });
  await connecting;
  const conv = '20260101120000_V1StGXR8_Z5j';
  server.socket.deliver({ type: 'AUDIO', seq: 1, conversationId: conv, first: true, end: true, pcm: Uint8Array.of(1, 0) });
  server.socket.deliver({ type: 'FRAME', seq: 2, conversationId: conv, end: true, payload: Uint8Array.of(9) });
  assert.deepEqual(session.calls, [['audio', [1, 0], false, 1], ['frames', [[9]], 1], ['audio', [], true, 1]]);
  assert.equal(client.conversations()[0].status, 'completed');
  await client.close();
});

test('client without the echo: yields the audio it sent at the marker, then live, before the frames', async () => {
  const server = new FakeServer();
  const controller = new FakeController();
  const client = new AvatarRelayClient({
    baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, controller,
    pingIntervalMs: 0, audioEcho: false,
  });
  const audio = [];
  client.on('audio', (e) => audio.push([e.conversationId, [...new Int16Array(e.pcm.slice().buffer)], e.first, e.end, e.own]));
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  assert.equal(JSON.parse(server.lastInit.body).audioEcho, false);
  // Audio queued before the WELCOME is ours to yield too.
  client.sendAudio(Int16Array.of(1, 2));
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000, noEcho: true });
  await connecting;
  assert.equal(client.audioEcho, false);
  const conv = '20260101120000_V1StGXR8_Z5j';
  assert.deepEqual(audio, []); // nothing before the marker says which conversation it is
  server.socket.deliver({ type: 'CONVERSATION_STARTED', seq: 1, conversationId: conv, inputSeq: 1, untilSeq: 0 });
  assert.deepEqual(audio, [[conv, [1, 2], true, false, true]]);
  client.sendAudio(Int16Array.of(3), { end: true }); // the conversation is live: yielded at once
  server.socket.deliver({ type: 'FRAME', seq: 2, conversationId: conv, end: true, payload: Uint8Array.of(7) });
  assert.deepEqual(audio, [[conv, [1, 2], true, false, true], [conv, [3], false, true, true]]);
  assert.deepEqual(controller.calls, [['audio', 4, false, 'sdk-1'], ['audio', 2, true, 'sdk-1'], ['frames', ['07'], 'sdk-1']]);
  // A cut: the replayed marker is a duplicate and yields nothing twice.
  client.dropConnection();
  await until(() => helloCount(server) === 2);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 2, serverSeq: 2, sampleRate: 16000, resumeWindowMs: 30000, resumed: true, noEcho: true });
  server.socket.deliver({ type: 'CONVERSATION_STARTED', seq: 1, conversationId: conv, inputSeq: 1, untilSeq: 0 });
  assert.equal(audio.length, 2);
  // A conversation held behind another and cut short: only up to untilSeq is ours to yield.
  client.sendAudio(Int16Array.of(4));
  client.sendAudio(Int16Array.of(5), { end: true });
  const next = '20260101120001_V1StGXR8_Z5k';
  server.socket.deliver({ type: 'CONVERSATION_STARTED', seq: 3, conversationId: next, inputSeq: 3, untilSeq: 3 });
  server.socket.deliver({ type: 'CONVERSATION_ABORTED', seq: 4, conversationId: next, code: 'upstreamError', message: 'x' });
  assert.deepEqual(audio.slice(2), [[next, [4], true, false, true]]);
  await client.close();
});

test('client with the echo: a marker is never turned into audio', async () => {
  const server = new FakeServer();
  const client = new AvatarRelayClient({ baseUrl: 'http://relay.test', fetch: server.fetch, WebSocket: server.WebSocket, pingIntervalMs: 0 });
  const audio = [];
  client.on('audio', (e) => audio.push(e));
  const connecting = client.connect();
  await until(() => helloCount(server) === 1);
  assert.equal(JSON.parse(server.lastInit.body).audioEcho, undefined);
  server.socket.deliver({ type: 'WELCOME', sessionId: 'rs_1', clientAck: 0, serverSeq: 0, sampleRate: 16000, resumeWindowMs: 30000 });
  await connecting;
  assert.equal(client.audioEcho, true);
  client.sendAudio(Int16Array.of(1, 2));
  server.socket.deliver({ type: 'CONVERSATION_STARTED', seq: 1, conversationId: 'c1', inputSeq: 1, untilSeq: 0 });
  assert.deepEqual(audio, []);
  await client.close();
});
