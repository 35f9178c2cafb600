// Errors of the browser client: every failure it reports carries a stable `code` (the server's
// codes, docs/protocol.md and docs/api.md, plus the client's own).

/** Every failure this module reports carries a stable `code` (the server's codes plus ours). */
export class RelayError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'RelayError';
    this.code = code;
    Object.assign(this, details);
  }
}

export const invalid = (message) => new RelayError('invalidRequest', message);

/** `err` as a RelayError: itself if it is one, else wrapped with the `fallback` code. */
export function asRelayError(err, fallback) {
  if (err instanceof RelayError) return err;
  return new RelayError(fallback, String(err?.message ?? err), { cause: err });
}
