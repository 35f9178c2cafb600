// The demo page: drives avatar-relay.js against this server and shows what arrives.
// No build step: plain ES modules served by the app.
import {
  AvatarRelayClient, Resampler, createRelaySession, floatToInt16, pcmLevel, startMicrophone,
} from '/client/avatar-relay.js';
import { RecordingController } from '/static/recording-controller.js';
import { StandInAvatar } from '/static/demo-avatar.js';
import { logEvent as appendEvent, renderConversations, renderStats as fillStats, short } from '/static/demo-panels.js';
import { Timeline, latencyFraction } from '/static/demo-timeline.js';
import { refusalText, say as askAgent } from '/static/demo-say.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const SAMPLE_URL = '/static/sample_16000.pcm';
const SAMPLE_RATE = 16000;
const CHUNK_MS = 40;
const DEFAULT_SDK_URL = 'https://esm.sh/@spatialwalk/avatarkit';
// `?audioEcho=false`: a session without the echo of the page's audio (the client yields its own).
const AUDIO_ECHO = params.get('audioEcho') !== 'false';

// --- state ------------------------------------------------------------------------------------

const standIn = new StandInAvatar($('stand-in'), () => client?.sampleRate ?? SAMPLE_RATE);
const recorder = new RecordingController({
  onCall: (entry) => {
    dirty = true;
    standIn.onCall(entry);
  },
});
const timeline = new Timeline();
const conversationLatency = new Map(); // relay conversation id -> [latency ms]
let client = null;
let connecting = null;
let mic = null;
let playback = null; // { stop: bool, done: Promise }
let sampleCache = null;
let lastEventAt = 0;
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
  say,
  latencyFraction,
  interrupt: () => client?.interrupt(),
  dropConnection: (options) => client?.dropConnection(options) ?? false,
};

// --- settings ----------------------------------------------------------------------------------

function initSettings() {
  $('api-key').value = params.get('apiKey') ?? sessionStorage.getItem('avatar-relay.apiKey') ?? '';
  $('app-id').value = params.get('appId') ?? localStorage.getItem('avatar-relay.appId') ?? '';
  $('sdk-url').value = params.get('sdk') ?? localStorage.getItem('avatar-relay.sdkUrl') ?? DEFAULT_SDK_URL;
  // Empty until the server says its region (showUpstream), unless chosen here before.
  $('region').value = params.get('region') ?? localStorage.getItem('avatar-relay.region') ?? '';
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
    const c = new AvatarRelayClient({ fetchOptions, audioEcho: AUDIO_ECHO });
    client = c;
    wireEvents(c);
    try {
      // allowProducer: the server's demo agent may speak in this session too ("say this").
      const session = await createRelaySession({
        fetchOptions,
        audioEcho: AUDIO_ECHO,
        sessionRequest: { allowProducer: true },
      });
      // The producer credential stays with the server: the demo agent mints its own.
      delete session.producer;
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
        timeline.addConversation(event.conversationId);
        logEvent(`conversation ${short(event.conversationId)} started`);
        break;
      case 'conversationid':
        logEvent(`  ${short(event.conversationId)} → controller id ${event.controllerConversationId}`);
        break;
      case 'conversationend':
        showSayError(null); // a refusal ("still speaking") is over once the conversation is
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
    timeline.start();
  });
}

function mark(kind, label = '') {
  timeline.mark(kind, label);
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
  timeline.start();
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
  showMicError(null);
  try {
    mic = await startMicrophone(c, { onChunk: recordSent });
    logEvent(`microphone on (${mic.context.sampleRate} Hz → ${mic.sampleRate} Hz)`);
  } catch (err) {
    logEvent(`microphone: ${err.message}`, 'error');
    showMicError(err);
  }
  updateButtons();
}

/** Have the server's demo agent say `text` here; its speech arrives as a conversation. */
async function say(text) {
  const words = text.trim();
  showSayError(null);
  if (!words) return null;
  const c = await connect();
  try {
    const accepted = await askAgent(c.sessionId, words, fetchOptions());
    logEvent(`demo agent: saying “${words.length > 40 ? `${words.slice(0, 40)}…` : words}”`);
    return accepted;
  } catch (err) {
    logEvent(`say: error ${err.code}: ${err.message}`, 'error');
    showSayError(err);
    throw err;
  }
}

function showSayError(err) {
  const note = $('say-error');
  note.hidden = !err;
  note.textContent = err ? refusalText(err) : '';
}

/** Beside the button, where the person who pressed it looks (the event log is below the fold). */
function showMicError(err) {
  const note = $('mic-error');
  note.hidden = !err;
  if (!err) return;
  const denied = err.name === 'NotAllowedError' || err.name === 'SecurityError';
  note.textContent = denied
    ? 'Microphone blocked: allow it for this page (the icon in the address bar), then try again.'
    : `Microphone unavailable: ${err.message || err.name}`;
}

function stopMic({ end = true } = {}) {
  if (!mic) return;
  mic.stop({ end });
  mic = null;
  logEvent('microphone off');
  updateButtons();
}

// --- panels --------------------------------------------------------------------------------------

function renderStats() {
  fillStats($('stats'), client);
}

function logEvent(text, kind = '') {
  appendEvent($('events'), timeline.t0, text, kind);
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
$('say-form').addEventListener('submit', (event) => {
  event.preventDefault();
  say($('say-text').value).catch(() => {}); // shown beside the box and in the event log
});
$('interrupt').addEventListener('click', () => {
  stopPlayback(true);
  client?.interrupt();
});
// One second offline: long enough to see audio queue up, be resent and the frames catch up. Just
// before, the link goes deaf for a moment: what the server sends then is lost, and replayed.
const OFFLINE_MS = Number(params.get('offlineMs') ?? 1000);
const LOSE_MS = Number(params.get('loseMs') ?? 300);
$('drop').addEventListener('click', () => {
  if (client?.dropConnection({ offlineMs: OFFLINE_MS, loseMs: LOSE_MS })) {
    logEvent(`simulated dropped connection (server messages lost for ${LOSE_MS} ms, then ${OFFLINE_MS} ms offline)`, 'error');
  }
});

async function showUpstream() {
  try {
    const health = await (await fetch('/healthz')).json();
    $('upstream').textContent = health.upstream === 'emulator' ? 'emulator mode' : `SpatialReal ${health.region}`;
    if (!$('region').value) $('region').value = health.region; // the SDK in the server's region
  } catch {
    $('upstream').textContent = 'server unreachable';
  }
}

function frame() {
  standIn.draw();
  timeline.draw($('timeline'), lastEventAt);
  if (dirty) {
    dirty = false;
    renderConversations($('conversations').tBodies[0], client, conversationLatency, (id) => timeline.colorOf(id));
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
