// What the connection decides by: its states, which closes end a session, the defaults of its
// timers and backoff, and the socket URL it opens.

export const States = Object.freeze({
  IDLE: 'idle', CONNECTING: 'connecting', OPEN: 'open', RECONNECTING: 'reconnecting',
  CLOSED: 'closed', FAILED: 'failed',
});

// Close codes after which the session is over: reconnecting cannot help (docs/protocol.md §6).
// Everything else (1005, 1006, 1012-1014, 4008, ...) is a drop: get a new ticket and resume.
export const FATAL_CLOSE = new Map([
  [1000, 'sessionClosed'], [1001, 'goingAway'], [1009, 'messageTooLarge'], [1011, 'internalError'],
  [4001, 'connectionReplaced'], [4400, 'invalidRequest'], [4401, 'ticketInvalid'], [4403, 'originNotAllowed'],
  [4404, 'sessionNotFound'], [4408, 'idleTimeout'], [4409, 'resumeFailed'],
  [4410, 'sessionClosed'], [4429, 'sessionLimit'],
]);

// Endings after which this session cannot continue but a new one would work: the connection emits
// one `sessionlost` event for them (docs/protocol.md §9), with what the application should do.
export const SESSION_LOST = new Set([
  'sessionNotFound', 'goingAway', 'resumeFailed', 'sessionClosed', 'idleTimeout',
  'sessionDurationExceeded',
]);

export const DEFAULTS = Object.freeze({
  ackEvery: 25,
  ackDelayMs: 1000,
  chunkBytes: 32 * 1024,
  maxOutboxBytes: 16 * 1024 * 1024,
  connectTimeoutMs: 10000,
  pingIntervalMs: 15000,
  pongTimeoutMs: 10000,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
});

// Socket attempts before a session that never got a WELCOME gives up.
export const MAX_UNWELCOMED_ATTEMPTS = 4;

/** The socket URL: absolute or relative to the API base, http(s) mapped to ws(s), with the ticket. */
export function socketUrl(url, ticket, base) {
  const resolved = new URL(url, base || undefined);
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  if (ticket && !resolved.searchParams.has('ticket')) resolved.searchParams.set('ticket', ticket);
  return resolved.toString();
}

export function codeFromReason(reason) {
  return /^[A-Za-z]+$/.test(reason ?? '') ? reason : /^([A-Za-z]+)[:\s]/.exec(reason ?? '')?.[1] ?? null;
}
