// The connection: one live WebSocket per relay session, kept across drops. Tickets, HELLO /
// WELCOME, the resend of unacknowledged messages after a resume, acks, pings and the reconnect
// backoff live here; what the sequenced messages mean is the subclass's business (`_deliver`).
import { PROTOCOL, decodeServer, encodeClient } from './codec.js';
import { Emitter, now } from './emitter.js';
import { RelayError, asRelayError } from './errors.js';
import { createRelaySession, postJson, trimSlash, withTicket } from './rest.js';
import {
  DEFAULTS, FATAL_CLOSE, MAX_UNWELCOMED_ATTEMPTS, SESSION_LOST, States, codeFromReason, socketUrl,
} from './connection-policy.js';

export { States };

/**
 * The socket half of a relay session. Subclasses implement `_deliver(message)` for AUDIO, FRAME,
 * CONVERSATION_ABORTED and INTERRUPTED, each handed over exactly once and in order.
 */
export class RelayConnection extends Emitter {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.baseUrl = trimSlash(options.baseUrl ?? globalThis.location?.origin ?? '');
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
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
    this._losing = null;
    this._stats = {
      connects: 0, reconnects: 0, drops: 0, messagesReceived: 0, duplicatesIgnored: 0,
      resentMessages: 0, replayedOnResume: 0, acksSent: 0, rttMs: null,
    };
  }

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
   * Simulate a network failure: the socket goes away without a goodbye (whatever is in flight
   * is lost) and the client resumes, after `offlineMs` (default 0) as if the network were down.
   * With `loseMs`, the link first goes deaf for that long: what the server sends is lost on the
   * way (it is replayed after the resume) while what the client sends still arrives.
   */
  dropConnection({ offlineMs = 0, loseMs = 0 } = {}) {
    const ws = this._ws;
    if (!ws) return false;
    const drop = () => {
      this._losing = null;
      if (this._ws !== ws) return;
      this._offlineUntil = now() + offlineMs;
      this._abandonSocket(4000, 'simulated drop');
      this._onDrop('simulated drop');
    };
    if (loseMs > 0) {
      this._losing = ws;
      setTimeout(drop, loseMs);
    } else {
      drop();
    }
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
    if (SESSION_LOST.has(error.code)) {
      this.emit('sessionlost', { code: error.code, message: error.message, action: 'newSession' });
    }
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
    if (this._ws !== ws || this._losing === ws) return; // (lost on a deaf link: dropConnection)
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
      case 'CONVERSATION_STARTED':
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


  _deliver() {
    throw new Error('a RelayConnection subclass delivers sequenced messages');
  }
}
