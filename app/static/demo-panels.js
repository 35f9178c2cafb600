// The demo's text panels: the conversations table, the statistics and the event log.
import { percentile } from '/static/demo-timeline.js';

/** A long id shortened to its tail, for log lines. */
export function short(id) {
  return id.length > 16 ? `…${id.slice(-12)}` : id;
}
/** One row per conversation the client knows, coloured as on the timeline. */
export function renderConversations(tbody, client, latencies, colorOf) {
  const rows = (client?.conversations() ?? []).map((conv, i) => {
    const lat = latencies.get(conv.conversationId) ?? [];
    const first = conv.firstFrameAt != null && conv.utteranceStartedAt != null ? `${Math.round(conv.firstFrameAt - conv.utteranceStartedAt)} ms` : '–';
    const median = lat.length ? `${Math.round(percentile(lat, 0.5))} ms` : '–';
    const tr = document.createElement('tr');
    tr.dataset.conversationId = conv.conversationId;
    const cells = [String(i + 1), conv.conversationId, conv.controllerConversationId ?? '–', conv.status,
      String(conv.audioChunks), String(conv.frames), first, median];
    cells.forEach((text, k) => {
      const td = document.createElement('td');
      if (k === 1) {
        td.className = 'id';
        const dot = document.createElement('i');
        dot.className = 'dot';
        dot.style.background = colorOf(conv.conversationId);
        td.append(dot);
      }
      if (k === 2) td.className = 'id';
      if (k === 3) td.className = `status-${text}`;
      td.append(text);
      tr.append(td);
    });
    return tr;
  });
  tbody.replaceChildren(...rows);
}

const STAT_KEYS = [
  ['state', 'state'], ['connects', 'connections'], ['drops', 'drops'],
  ['replayedOnResume', 'replayed by the server on resume'], ['resentMessages', 'sent again after resume'],
  ['duplicatesIgnored', 'replayed duplicates ignored'], ['audioChunksSent', 'audio chunks sent'],
  ['audioChunksReceived', 'audio chunks yielded'], ['framesReceived', 'frames received'],
  ['framesHeld', 'frames held (no id yet)'], ['lastServerSeq', 'server seq'], ['clientSeqAcked', 'client seq acked'],
  ['outboxMessages', 'unacked client messages'], ['rttMs', 'ping RTT'],
];

export function renderStats(list, client) {
  const stats = client?.stats();
  const items = [];
  for (const [key, label] of STAT_KEYS) {
    let value = stats ? stats[key] : null;
    if (key === 'rttMs' && value != null) value = `${Math.round(value)} ms`;
    value ??= '–';
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = String(value);
    dd.dataset.stat = key;
    items.push(dt, dd);
  }
  list.replaceChildren(...items);
}

/** The newest-first event list, bounded to 200 entries, timed against the timeline's start. */
export function logEvent(list, t0, text, kind = '') {
  const li = document.createElement('li');
  const t = t0 == null ? 0 : (performance.now() - t0) / 1000;
  li.textContent = `${t.toFixed(2).padStart(6)}s  ${text}`;
  if (kind) li.className = kind;
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}
