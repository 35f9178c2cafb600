// The "say this" box: the server's built-in demo agent speaks the text in this page's session
// (POST /v1/relay/sessions/{id}/say). The agent is a producer on the server (espeak-ng through
// the producer socket); its speech reaches this page as one more conversation of the session's
// stream, drawn and recorded like any other. The call carries the page's own credentials (the
// same it created the session with); the producer's never reach the page.

/** Ask the demo agent to say `text` in session `sessionId`; rejects with `{code, message}`. */
export async function say(sessionId, text, fetchOptions = {}) {
  const response = await fetch(`/v1/relay/sessions/${encodeURIComponent(sessionId)}/say`, {
    ...fetchOptions,
    method: 'POST',
    headers: { ...(fetchOptions.headers ?? {}), 'Content-Type': 'application/json' },
    body: JSON.stringify({ text }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error?.message ?? `HTTP ${response.status}`);
    error.code = body.error?.code ?? 'serverError';
    throw error;
  }
  return body;
}

/** What the person sees beside the box when the agent refuses (the event log is below the fold). */
export function refusalText(err) {
  switch (err.code) {
    case 'agentBusy': return 'The agent is still speaking: say the next text once it has finished.';
    case 'speechUnavailable': return `The demo agent is unavailable: ${err.message}`;
    case 'invalidRequest': return `Not sayable: ${err.message}`;
    default: return `${err.code ?? 'error'}: ${err.message}`;
  }
}
