// The stand-in avatar the demo draws when no AvatarKit SDK renders: a face whose mouth opens with
// the level of the audio each animation frame belongs to, fed by the recording controller's calls.
import { pcmLevel } from '/client/avatar-relay.js';

const FRAME_MS = 40;

export class StandInAvatar {
  /** `sampleRate()` answers the session's current PCM rate. */
  constructor(canvas, sampleRate) {
    this.canvas = canvas;
    this.sampleRate = sampleRate;
    this.levelBins = new Map(); // controller conversation id -> RMS per 40 ms of yielded audio
    this.mouth = { target: 0, value: 0, frames: 0, conversation: null, audioOnly: false };
  }

  /** One recorded controller call (RecordingController's `onCall`). */
  onCall(entry) {
    if (entry.call === 'yieldAudioData') {
      // RMS of each 40 ms of this round's audio, so the frame that animates it can look it up.
      const bins = this.levelBins.get(entry.returned) ?? { levels: [], carry: new Uint8Array(0) };
      this.levelBins.set(entry.returned, bins);
      const binBytes = Math.round((this.sampleRate() * FRAME_MS) / 1000) * 2;
      const joined = new Uint8Array(bins.carry.length + entry.audio.length);
      joined.set(bins.carry);
      joined.set(entry.audio, bins.carry.length);
      let offset = 0;
      for (; offset + binBytes <= joined.length; offset += binBytes) bins.levels.push(pcmLevel(joined.subarray(offset, offset + binBytes)));
      bins.carry = joined.slice(offset);
      if (this.levelBins.size > 20) this.levelBins.delete(this.levelBins.keys().next().value);
    } else if (entry.call === 'yieldFramesData') {
      const mouth = this.mouth;
      if (mouth.conversation !== entry.conversationId) {
        Object.assign(mouth, { conversation: entry.conversationId, frames: 0, audioOnly: false });
      }
      if (!entry.payloads.length) mouth.audioOnly = true;
      for (let i = 0; i < entry.payloads.length; i++) {
        const level = this.levelBins.get(entry.conversationId)?.levels[mouth.frames] ?? 0;
        mouth.target = Math.min(1, level * 6);
        mouth.frames += 1;
      }
    } else if (entry.call === 'interrupt') {
      this.mouth.target = 0;
    }
  }

  draw() {
    const canvas = this.canvas;
    if (!canvas?.isConnected) return;
    const mouth = this.mouth;
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
}
