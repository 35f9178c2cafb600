// The REST side of the client: relay sessions, tickets and session tokens, and the server's
// error shape turned into RelayError.
import { RelayError } from './errors.js';

export function trimSlash(url) {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

/** The socket URL of a new ticket: the session's URL with the ticket swapped in. */
export function withTicket(url, ticket) {
  const base = globalThis.location?.href ?? 'http://localhost/';
  const resolved = new URL(url, base);
  resolved.searchParams.set('ticket', ticket);
  return /^[a-z]+:/i.test(url) ? resolved.toString() : resolved.pathname + resolved.search;
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

export async function postJson(fetchImpl, url, fetchOptions, body, headers = {}) {
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
 * `withSessionToken: true` also gets the web SDK's credential (`sessionToken`) in the same call.
 */
export function createRelaySession({ baseUrl, fetchOptions, avatarId, sampleRate, withSessionToken, audioEcho, sessionRequest, fetch: fetchImpl } = {}) {
  const base = trimSlash(baseUrl ?? globalThis.location?.origin ?? '');
  const body = { ...(sessionRequest ?? {}) };
  if (avatarId && body.avatarId === undefined) body.avatarId = avatarId;
  if (sampleRate && body.sampleRate === undefined) body.sampleRate = sampleRate;
  if (audioEcho === false && body.audioEcho === undefined) body.audioEcho = false;
  if (withSessionToken && body.withSessionToken === undefined) body.withSessionToken = true;
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
