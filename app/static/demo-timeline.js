// The demo's timeline: what was sent, what the controller was given and when each frame came,
// per conversation, against time (a canvas, redrawn every animation frame).

export const PALETTE = ['#4fb3ff', '#f778ba', '#3fb950', '#e3b341', '#a371f7', '#ff7b72', '#39c5cf', '#d2a8ff'];
const SPAN_MS = 16000;

export function percentile(values, q) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// The latency lane: a fixed log scale, 10 ms .. 10 s, clipped at both ends. A fixed scale never
// rescales: the burst of late frames after a resume cannot flatten everything else.
const LATENCY_MIN_MS = 10;
const LATENCY_MAX_MS = 10000;
const LATENCY_TICKS = [10, 100, 1000, 10000];

/** Where a latency sits on the lane, 0 (bottom) .. 1 (top). */
export function latencyFraction(ms) {
  const clipped = Math.min(LATENCY_MAX_MS, Math.max(LATENCY_MIN_MS, ms));
  return Math.log(clipped / LATENCY_MIN_MS) / Math.log(LATENCY_MAX_MS / LATENCY_MIN_MS);
}

const tickLabel = (ms) => (ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`);

export class Timeline {
  constructor() {
    this.t0 = null; // performance.now() of the first thing shown
    this.sent = []; // {t, level, ms}
    this.echo = []; // {t, level, conv, ms}
    this.frames = []; // {t, conv, end, latency}
    this.marks = []; // {t, kind, label}
    this.colors = new Map(); // relay conversation id -> palette index
  }

  start() {
    this.t0 ??= performance.now();
  }

  mark(kind, label = '') {
    this.marks.push({ t: performance.now(), kind, label });
  }

  addConversation(conversationId) {
    this.colors.set(conversationId, this.colors.size % PALETTE.length);
  }

  colorOf(conversationId) {
    return PALETTE[this.colors.get(conversationId) ?? 0];
  }

  /** Draw on `canvas`; after `lastEventAt` + 3 s of quiet the view stops following the present. */
  draw(canvas, lastEventAt) {
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
      { name: 'audio → frame', y: 192, h: 96 },
    ];
    g.font = '12px system-ui, sans-serif';
    g.textBaseline = 'middle';
    for (const lane of lanes) {
      g.fillStyle = '#121a22';
      g.fillRect(left, lane.y, W - left - 8, lane.h);
      g.fillStyle = '#8b98a5';
      g.fillText(lane.name, 8, lane.y + lane.h / 2);
    }
    if (this.t0 == null) {
      g.fillStyle = '#8b98a5';
      g.fillText('Connect, then play the sample or start the microphone.', left + 16, 100);
      return;
    }
    // Follow the present while things happen; freeze shortly after they stop.
    const nowMs = performance.now();
    const end = nowMs - lastEventAt > 3000 ? lastEventAt + 1000 : nowMs;
    const start = Math.max(this.t0 - 500, end - SPAN_MS);
    const span = Math.max(SPAN_MS, end - start);
    const x = (t) => left + ((t - start) / span) * (W - left - 8);
    const visible = (t) => t >= start - 100;

    // seconds axis
    g.fillStyle = '#5a6673';
    g.textAlign = 'center';
    for (let s = Math.ceil((start - this.t0) / 1000); s * 1000 + this.t0 <= start + span; s++) {
      const px = x(this.t0 + s * 1000);
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
    for (const item of this.sent) if (visible(item.t)) bar(lanes[0], item, '#6e7b88');
    for (const item of this.echo) if (visible(item.t)) bar(lanes[1], item, this.colorOf(item.conv));

    const frameLane = lanes[2];
    const latLane = lanes[3];
    const latY = (ms) => latLane.y + latLane.h - 2 - latencyFraction(ms) * (latLane.h - 4);
    g.fillStyle = '#2a3642';
    for (const tick of LATENCY_TICKS) g.fillRect(left, latY(tick), W - left - 8, 1);
    for (const f of this.frames) {
      if (!visible(f.t)) continue;
      const px = x(f.t);
      g.fillStyle = this.colorOf(f.conv);
      g.fillRect(px, frameLane.y + (f.end ? 2 : 12), 1.2, f.end ? frameLane.h - 4 : frameLane.h - 24);
      if (f.latency != null) {
        g.fillStyle = f.latency > LATENCY_MAX_MS ? '#f85149' : '#e3b341'; // clipped: red
        g.fillRect(px - 1, latY(f.latency) - 1, 2.5, 2.5);
      }
    }
    g.fillStyle = '#5a6673';
    for (const tick of LATENCY_TICKS) g.fillText(tickLabel(tick), left + 4, latY(tick) + (tick === LATENCY_MAX_MS ? 7 : -6));

    // conversation labels at their first echoed audio
    const labelled = new Set();
    const order = [...this.colors.keys()];
    for (const item of this.echo) {
      if (labelled.has(item.conv)) continue;
      labelled.add(item.conv);
      if (!visible(item.t)) continue;
      g.fillStyle = this.colorOf(item.conv);
      g.fillText(`#${order.indexOf(item.conv) + 1}`, x(item.t) + 3, lanes[1].y + 9);
    }

    for (const m of this.marks) {
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
}
