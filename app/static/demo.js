// The demo page: drives avatar-relay.js against this server and shows what arrives.
// No build step: plain ES modules served by the app.
import {
  AvatarRelayClient, Resampler, createRelaySession, floatToInt16, pcmLevel, startMicrophone,
} from '/client/avatar-relay.js';
import { RecordingController } from '/static/recording-controller.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const SAMPLE_URL = '/static/sample_16000.pcm';
const SAMPLE_RATE = 16000;
const CHUNK_MS = 40;
const FRAME_MS = 40;
const DEFAULT_SDK_URL = 'https://esm.sh/@spatialwalk/avatarkit';
const PALETTE = ['#4fb3ff', '#f778ba', '#3fb950', '#e3b341', '#a371f7', '#ff7b72', '#39c5cf', '#d2a8ff'];

// --- state ------------------------------------------------------------------------------------

const recorder = new RecordingController({ onCall: onControllerCall });
const timeline = { t0: null, sent: [], echo: [], frames: [], marks: [] };
const conversationColors = new Map(); // relay conversation id -> palette index
const conversationLatency = new Map(); // relay conversation id -> [latency ms]
const levelBins = new Map(); // controller conversation id -> RMS per 40 ms of yielded audio
let client = null;
let connecting = null;
let mic = null;
let playback = null; // { stop: bool, done: Promise }
let sampleCache = null;
let lastEventAt = 0;
let mouth = { target: 0, value: 0, frames: 0, conversation: null, audioOnly: false };
let dirty = true;

// Tests and curious people: the recording controller's call log and the page's handles.
window.avatarRecording = recorder.log;
window.avatarDemo = {
  recorder,
  timeline,
  get client() { return client; },
  connect,
  disconnect,
  playSample,
  startMic,
  stopMic,
  interrupt: () => client?.interrupt(),
  dropConnection: (options) => client?.dropConnection(options) ?? false,
};

// --- settings ----------------------------------------------------------------------------------

function initSettings() {
  $('api-key').value = params.get('apiKey') ?? sessionStorage.getItem('avatar-relay.apiKey') ?? '';
  $('app-id').value = params.get('appId') ?? localStorage.getItem('avatar-relay.appId') ?? '';
  $('sdk-url').value = params.get('sdk') ?? localStorage.getItem('avatar-relay.sdkUrl') ?? DEFAULT_SDK_URL;
  $('region').value = params.get('region') ?? localStorage.getItem('avatar-relay.region') ?? 'us-west';
  $('api-key').addEventListener('change', () => sessionStorage.setItem('avatar-relay.apiKey', $('api-key').value.trim()));
  for (const [id, key] of [['app-id', 'appId'], ['sdk-url', 'sdkUrl'], ['region', 'region']]) {
    $(id).addEventListener('change', () => localStorage.setItem(`avatar-relay.${key}`, $(id).value.trim()));
  }
  if (params.has('apiKey') || params.has('appId')) $('settings').open = true;
}

function fetchOptions() {
  const key = $('api-key').value.trim();
  return key ? { headers: { Authorization: `Bearer ${key}` } } : {};
}

// --- connecting ----------------------------------------------------------------------------------

function connect() {
  if (client && !['closed', 'failed'].includes(client.state)) return Promise.resolve(client);
  connecting ??= (async () => {
    const c = new AvatarRelayClient({ fetchOptions });
    client = c;
    wireEvents(c);
    try {
      const session = await createRelaySession({ fetchOptions });
      recorder.target = await sdkController(session);
      c.setController(recorder);
      showSession(session);
      await c.connect(session);
      return c;
    } catch (err) {
      logEvent(`error ${err.code ?? ''}: ${err.message}`, 'error');
      updateState(c.state === 'idle' ? 'failed' : c.state);
      throw err;
    } finally {
      connecting = null;
      updateButtons();
    }
  })();
  return connecting;
}

async function disconnect() {
  stopPlayback();
  stopMic({ end: false });
  await client?.close();
  updateButtons();
}

/** The real AvatarKit controller when an App ID is given and the SDK loads; else null. */
async function sdkController(session) {
  const appId = $('app-id').value.trim();
  const container = $('avatar-container');
  if (!appId) {
    $('controller-kind').textContent = 'recording controller (offline)';
    return null;
  }
  try {
    const sdk = await import($('sdk-url').value.trim());
    const { AvatarSDK, AvatarManager, AvatarView, DrivingServiceMode } = sdk;
    await AvatarSDK.initialize(appId, {
      region: $('region').value.trim() || undefined,
      drivingServiceMode: DrivingServiceMode?.backend ?? DrivingServiceMode?.host ?? 'backend',
      audioFormat: { channelCount: 1, sampleRate: session.sampleRate },
    });
    const avatar = await AvatarManager.shared.load(session.avatarId);
    container.replaceChildren();
    const view = new AvatarView(avatar, container);
    await view.controller.initializeAudioContext?.();
    $('controller-kind').textContent = `AvatarKit SDK ${AvatarSDK.version ?? ''} (recorded)`;
    $('avatar-note').textContent = 'Rendering with the AvatarKit web SDK; calls are also recorded (window.avatarRecording).';
    return view.controller;
  } catch (err) {
    logEvent(`AvatarKit SDK unavailable (${err.message}); using the recording controller`, 'error');
    $('controller-kind').textContent = 'recording controller (SDK failed to load)';
    return null;
  }
}

function showSession(session) {
  $('session-id').textContent = session.sessionId;
  $('sample-rate').textContent = `${session.sampleRate} Hz`;
  $('avatar-id').textContent = session.avatarId;
}

function wireEvents(c) {
  c.on('*', (event) => {
    if (client !== c) return;
    lastEventAt = performance.now();
    dirty = true;
    switch (event.type) {
      case 'state':
        updateState(event.state);
        if (event.state === 'reconnecting') mark('drop', event.reason);
        if (event.state === 'open' && event.resumed) mark('resumed');
        logEvent(`state ${event.previous} → ${event.state}${event.reason ? ` (${event.reason})` : ''}`, 'state');
        break;
      case 'welcome':
        logEvent(`WELCOME${event.resumed ? ' resumed' : ''}: clientAck ${event.clientAck}, serverSeq ${event.serverSeq}${event.resumed ? `, resent ${event.resent}` : ''}`);
        break;
      case 'conversationstart':
        conversationColors.set(event.conversationId, conversationColors.size % PALETTE.length);
        logEvent(`conversation ${short(event.conversationId)} started`);
        break;
      case 'conversationid':
        logEvent(`  ${short(event.conversationId)} → controller id ${event.controllerConversationId}`);
        break;
      case 'conversationend':
        logEvent(`conversation ${short(event.conversationId)} ${event.status}${event.code ? ` (${event.code})` : ''}`);
        break;
      case 'interrupted':
        mark('interrupt');
        logEvent('INTERRUPTED');
        break;
      case 'error':
        logEvent(`error ${event.code}${event.fatal ? ' (fatal)' : ''}: ${event.message}`, 'error');
        break;
      case 'audio':
        timeline.echo.push({ t: event.receivedAt, level: pcmLevel(event.pcm), conv: event.conversationId, ms: event.pcm.length / 2 / c.sampleRate * 1000 });
        break;
      case 'frame':
        timeline.frames.push({ t: event.receivedAt, conv: event.conversationId, end: event.end, latency: event.latencyMs });
        if (event.latencyMs != null) {
          if (!conversationLatency.has(event.conversationId)) conversationLatency.set(event.conversationId, []);
          conversationLatency.get(event.conversationId).push(event.latencyMs);
        }
        break;
      default:
    }
    timeline.t0 ??= performance.now();
  });
}

function mark(kind, label = '') {
  timeline.marks.push({ t: performance.now(), kind, label });
}

// --- sending audio -----------------------------------------------------------------------------

async function loadSample(rate) {
  sampleCache ??= fetch(SAMPLE_URL).then((r) => {
    if (!r.ok) throw new Error(`sample: HTTP ${r.status}`);
    return r.arrayBuffer();
  });
  const pcm = new Int16Array((await sampleCache).slice(0));
  if (rate === SAMPLE_RATE) return pcm;
  const floats = Float32Array.from(pcm, (s) => s / 32768);
  return floatToInt16(new Resampler(SAMPLE_RATE, rate).process(floats));
}

function recordSent(pcm) {
  const bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  timeline.sent.push({ t: performance.now(), level: pcmLevel(bytes), ms: pcm.length / client.sampleRate * 1000 });
  timeline.t0 ??= performance.now();
  dirty = true;
}

/**
 * Send the bundled speech sample as one utterance, paced in real time (one 40 ms chunk every
 * 40 ms, scheduled against the start time so timer jitter never accumulates).
 * `seconds` limits how much of the sample is sent. Resolves when the last chunk (END) is queued.
 */
async function playSample({ seconds = null, chunkMs = CHUNK_MS } = {}) {
  if (playback) return playback.done;
  const c = await connect();
  const pcm = await loadSample(c.sampleRate);
  const perChunk = Math.round((c.sampleRate * chunkMs) / 1000);
  const total = seconds == null ? pcm.length : Math.min(pcm.length, Math.round(seconds * c.sampleRate));
  const chunks = Math.ceil(total / perChunk);
  const state = { stop: false };
  playback = state;
  updateButtons();
  state.done = (async () => {
    const start = performance.now();
    try {
      for (let i = 0; i < chunks; i++) {
        const wait = start + i * chunkMs - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (state.stop || client !== c) break;
        const chunk = pcm.subarray(i * perChunk, Math.min(total, (i + 1) * perChunk));
        const last = i === chunks - 1;
        c.sendAudio(chunk, { end: last });
        recordSent(chunk);
      }
      if (state.stop && client === c && c.state !== 'closed' && c.state !== 'failed' && !state.interrupted) c.endUtterance();
    } catch (err) {
      logEvent(`error ${err.code ?? ''}: ${err.message}`, 'error');
    } finally {
      playback = null;
      updateButtons();
    }
  })();
  return state.done;
}

function stopPlayback(interrupted = false) {
  if (playback) {
    playback.stop = true;
    playback.interrupted = interrupted;
  }
}

async function startMic() {
  if (mic) return;
  const c = await connect();
  try {
    mic = await startMicrophone(c, { onChunk: recordSent });
    logEvent(`microphone on (${mic.context.sampleRate} Hz → ${mic.sampleRate} Hz)`);
  } catch (err) {
    logEvent(`microphone: ${err.message}`, 'error');
  }
  updateButtons();
}

function stopMic({ end = true } = {}) {
  if (!mic) return;
  mic.stop({ end });
  mic = null;
  logEvent('microphone off');
  updateButtons();
}

// --- the recording controller's stand-in avatar --------------------------------------------------

function onControllerCall(entry) {
  dirty = true;
  if (entry.call === 'yieldAudioData') {
    // RMS of each 40 ms of this round's audio, so the frame that animates it can look it up.
    const bins = levelBins.get(entry.returned) ?? { levels: [], carry: new Uint8Array(0) };
    levelBins.set(entry.returned, bins);
    const rate = client?.sampleRate ?? SAMPLE_RATE;
    const binBytes = Math.round((rate * FRAME_MS) / 1000) * 2;
    const joined = new Uint8Array(bins.carry.length + entry.audio.length);
    joined.set(bins.carry);
    joined.set(entry.audio, bins.carry.length);
    let offset = 0;
    for (; offset + binBytes <= joined.length; offset += binBytes) bins.levels.push(pcmLevel(joined.subarray(offset, offset + binBytes)));
    bins.carry = joined.slice(offset);
    if (levelBins.size > 20) levelBins.delete(levelBins.keys().next().value);
  } else if (entry.call === 'yieldFramesData') {
    if (mouth.conversation !== entry.conversationId) {
      mouth = { ...mouth, conversation: entry.conversationId, frames: 0, audioOnly: false };
    }
    if (!entry.payloads.length) mouth.audioOnly = true;
    for (let i = 0; i < entry.payloads.length; i++) {
      const level = levelBins.get(entry.conversationId)?.levels[mouth.frames] ?? 0;
      mouth.target = Math.min(1, level * 6);
      mouth.frames += 1;
    }
  } else if (entry.call === 'interrupt') {
    mouth.target = 0;
  }
}

function drawStandIn() {
  const canvas = $('stand-in');
  if (!canvas?.isConnected) return;
  const g = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  mouth.value += (mouth.target - mouth.value) * 0.35;
  mouth.target *= 0.9;
  g.clearRect(0, 0, w, h);
  g.fillStyle = '#1d2a37';
  g.beginPath();
  g.arc(w / 2, h / 2 - 6, 88, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = '#e6edf3';
  for (const dx of [-32, 32]) {
    g.beginPath();
    g.arc(w / 2 + dx, h / 2 - 34, 9, 0, Math.PI * 2);
    g.fill();
  }
  g.fillStyle = mouth.audioOnly ? '#8b98a5' : '#f778ba';
  g.beginPath();
  g.ellipse(w / 2, h / 2 + 30, 34, 3 + mouth.value * 26, 0, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = '#8b98a5';
  g.font = '12px ui-monospace, monospace';
  g.textAlign = 'center';
  const label = mouth.conversation ? `${mouth.conversation} · ${mouth.frames} frames${mouth.audioOnly ? ' · audio-only' : ''}` : 'waiting for audio';
  g.fillText(label, w / 2, h - 8);
}

// --- the timeline ----------------------------------------------------------------------------------

const SPAN_MS = 16000;

function colorOf(conversationId) {
  return PALETTE[conversationColors.get(conversationId) ?? 0];
}

function drawTimeline() {
  const canvas = $('timeline');
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 1200;
  if (canvas.width !== Math.round(cssWidth * ratio)) {
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(320 * ratio);
  }
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  const W = cssWidth;
  const H = 320;
  g.clearRect(0, 0, W, H);
  const left = 118;
  const lanes = [
    { name: 'audio sent', y: 12, h: 50 },
    { name: 'yieldAudioData', y: 72, h: 50 },
    { name: 'yieldFramesData', y: 132, h: 50 },
    { name: 'latency', y: 192, h: 96 },
  ];
  g.font = '12px system-ui, sans-serif';
  g.textBaseline = 'middle';
  for (const lane of lanes) {
    g.fillStyle = '#121a22';
    g.fillRect(left, lane.y, W - left - 8, lane.h);
    g.fillStyle = '#8b98a5';
    g.fillText(lane.name, 8, lane.y + lane.h / 2);
  }
  if (timeline.t0 == null) {
    g.fillStyle = '#8b98a5';
    g.fillText('Connect, then play the sample or start the microphone.', left + 16, 100);
    return;
  }
  // Follow the present while things happen; freeze shortly after they stop.
  const nowMs = performance.now();
  const end = nowMs - lastEventAt > 3000 ? lastEventAt + 1000 : nowMs;
  const start = Math.max(timeline.t0 - 500, end - SPAN_MS);
  const span = Math.max(SPAN_MS, end - start);
  const x = (t) => left + ((t - start) / span) * (W - left - 8);
  const visible = (t) => t >= start - 100;

  // seconds axis
  g.fillStyle = '#5a6673';
  g.textAlign = 'center';
  for (let s = Math.ceil((start - timeline.t0) / 1000); s * 1000 + timeline.t0 <= start + span; s++) {
    const px = x(timeline.t0 + s * 1000);
    g.fillRect(px, 12, 1, 276);
    g.fillText(`${s}s`, px, 304);
  }
  g.textAlign = 'left';

  const bar = (lane, item, color) => {
    const px = x(item.t);
    const width = Math.max(1.5, (item.ms / span) * (W - left - 8) - 0.5);
    const height = Math.max(1, Math.min(1, item.level * 5) * lane.h);
    g.fillStyle = color;
    g.fillRect(px - width, lane.y + lane.h - height, width, height);
  };
  for (const item of timeline.sent) if (visible(item.t)) bar(lanes[0], item, '#6e7b88');
  for (const item of timeline.echo) if (visible(item.t)) bar(lanes[1], item, colorOf(item.conv));

  const frameLane = lanes[2];
  const latencies = timeline.frames.filter((f) => f.latency != null).map((f) => f.latency);
  const maxLatency = niceMax(Math.max(200, percentile(latencies, 0.98) * 1.15));
  const latLane = lanes[3];
  for (const f of timeline.frames) {
    if (!visible(f.t)) continue;
    const px = x(f.t);
    g.fillStyle = colorOf(f.conv);
    g.fillRect(px, frameLane.y + (f.end ? 2 : 12), 1.2, f.end ? frameLane.h - 4 : frameLane.h - 24);
    if (f.latency != null) {
      const py = latLane.y + latLane.h - Math.min(1, Math.max(0, f.latency) / maxLatency) * (latLane.h - 4) - 2;
      g.fillStyle = '#e3b341';
      g.fillRect(px - 1, py - 1, 2.5, 2.5);
    }
  }
  g.fillStyle = '#5a6673';
  g.fillText(`${maxLatency} ms`, left + 4, latLane.y + 8);
  g.fillText('0', left + 4, latLane.y + latLane.h - 8);

  // conversation labels at their first echoed audio
  const labelled = new Set();
  for (const item of timeline.echo) {
    if (labelled.has(item.conv)) continue;
    labelled.add(item.conv);
    if (!visible(item.t)) continue;
    g.fillStyle = colorOf(item.conv);
    g.fillText(`#${[...conversationColors.keys()].indexOf(item.conv) + 1}`, x(item.t) + 3, lanes[1].y + 9);
  }

  for (const m of timeline.marks) {
    if (!visible(m.t)) continue;
    const px = x(m.t);
    g.strokeStyle = m.kind === 'resumed' ? '#3fb950' : m.kind === 'interrupt' ? '#e3b341' : '#f85149';
    g.setLineDash([4, 3]);
    g.beginPath();
    g.moveTo(px, 12);
    g.lineTo(px, 288);
    g.stroke();
    g.setLineDash([]);
    g.fillStyle = g.strokeStyle;
    g.fillText(m.kind, px + 3, m.kind === 'resumed' ? 280 : 22);
  }
}

function percentile(values, q) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function niceMax(value) {
  const steps = [200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000, 60000];
  return steps.find((s) => s >= value) ?? Math.ceil(value / 10000) * 10000;
}

// --- tables, stats, log ----------------------------------------------------------------------------

function short(id) {
  return id.length > 16 ? `…${id.slice(-12)}` : id;
}

function renderConversations() {
  const rows = (client?.conversations() ?? []).map((conv, i) => {
    const lat = conversationLatency.get(conv.conversationId) ?? [];
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
  $('conversations').tBodies[0].replaceChildren(...rows);
}

const STAT_KEYS = [
  ['state', 'state'], ['connects', 'connections'], ['drops', 'drops'],
  ['replayedOnResume', 'replayed by the server on resume'], ['resentMessages', 'sent again after resume'],
  ['duplicatesIgnored', 'replayed duplicates ignored'], ['audioChunksSent', 'audio chunks sent'],
  ['audioChunksReceived', 'audio chunks yielded'], ['framesReceived', 'frames received'],
  ['framesHeld', 'frames held (no id yet)'], ['lastServerSeq', 'server seq'], ['clientSeqAcked', 'client seq acked'],
  ['outboxMessages', 'unacked client messages'], ['rttMs', 'ping RTT'],
];

function renderStats() {
  const stats = client?.stats();
  const items = [];
  for (const [key, label] of STAT_KEYS) {
    let value = stats ? stats[key] : '–';
    if (key === 'rttMs') value = value == null ? '–' : `${Math.round(value)} ms`;
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = String(value);
    dd.dataset.stat = key;
    items.push(dt, dd);
  }
  $('stats').replaceChildren(...items);
}

function logEvent(text, kind = '') {
  const li = document.createElement('li');
  const t = timeline.t0 == null ? 0 : (performance.now() - timeline.t0) / 1000;
  li.textContent = `${t.toFixed(2).padStart(6)}s  ${text}`;
  if (kind) li.className = kind;
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function updateState(state) {
  const badge = $('state');
  badge.textContent = state;
  badge.dataset.state = state;
  badge.className = `badge state-${state}`;
  updateButtons();
}

function updateButtons() {
  const live = client && !['closed', 'failed', 'idle'].includes(client.state);
  $('connect').textContent = live ? 'Disconnect' : 'Connect';
  $('play').textContent = playback ? '■ Stop sample' : '▶ Play speech sample';
  $('mic').textContent = mic ? '■ Stop microphone' : '● Start microphone';
  $('mic').classList.toggle('active', !!mic);
  $('play').classList.toggle('active', !!playback);
  $('interrupt').disabled = !live;
  $('drop').disabled = !live;
}

// --- wiring ------------------------------------------------------------------------------------------

function guarded(fn) {
  return () => fn().catch((err) => logEvent(`error ${err.code ?? ''}: ${err.message}`, 'error'));
}

$('connect').addEventListener('click', guarded(async () => {
  if (client && !['closed', 'failed', 'idle'].includes(client.state)) await disconnect();
  else await connect();
}));
$('play').addEventListener('click', guarded(async () => {
  if (playback) stopPlayback();
  else await playSample();
}));
$('mic').addEventListener('click', guarded(async () => {
  if (mic) stopMic();
  else await startMic();
}));
$('interrupt').addEventListener('click', () => {
  stopPlayback(true);
  client?.interrupt();
});
// One second offline: long enough to see audio queue up, be resent and the frames catch up.
const OFFLINE_MS = Number(params.get('offlineMs') ?? 1000);
$('drop').addEventListener('click', () => {
  if (client?.dropConnection({ offlineMs: OFFLINE_MS })) logEvent(`simulated dropped connection (${OFFLINE_MS} ms offline)`, 'error');
});

async function showUpstream() {
  try {
    const health = await (await fetch('/healthz')).json();
    $('upstream').textContent = health.upstream === 'emulator' ? 'emulator mode' : `SpatialReal ${health.region}`;
  } catch {
    $('upstream').textContent = 'server unreachable';
  }
}

function frame() {
  drawStandIn();
  drawTimeline();
  if (dirty) {
    dirty = false;
    renderConversations();
  }
  requestAnimationFrame(frame);
}

initSettings();
updateButtons();
renderStats();
showUpstream();
setInterval(renderStats, 250);
requestAnimationFrame(frame);
document.documentElement.dataset.ready = 'true';
