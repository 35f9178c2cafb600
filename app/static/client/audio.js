// PCM helpers: s16le bytes, float conversion, levels and a streaming resampler.
import { asBytes, evenPcm } from './codec.js';

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * PCM as s16le bytes. Int16Array samples are converted to little-endian when the platform is not;
 * ArrayBuffer / Uint8Array are taken to be s16le bytes already.
 */
export function pcmBytes(pcm) {
  if (pcm instanceof Int16Array) {
    if (LITTLE_ENDIAN) return new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    const out = new Uint8Array(pcm.length * 2);
    const view = new DataView(out.buffer);
    pcm.forEach((sample, i) => view.setInt16(i * 2, sample, true));
    return out;
  }
  return evenPcm(pcm);
}

/** Float samples in [-1, 1] to Int16 (clipped). */
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}

/** Root-mean-square level (0..1) of s16le PCM bytes; the demo's audio meter. */
export function pcmLevel(bytes) {
  const b = asBytes(bytes);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = b.length >> 1;
  if (!n) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const s = view.getInt16(i * 2, true) / 32768;
    sum += s * s;
  }
  return Math.sqrt(sum / n);
}

/**
 * Streaming sample-rate converter for mono float audio. Downsampling averages the input over
 * each output step (a box low-pass, so speech does not alias badly) and upsampling interpolates
 * linearly. State carries across calls, so chunk boundaries leave no clicks or drift.
 */
export class Resampler {
  constructor(fromRate, toRate) {
    if (!(fromRate > 0 && toRate > 0)) throw new RangeError('sample rates must be positive');
    this.fromRate = fromRate;
    this.toRate = toRate;
    this.step = fromRate / toRate; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples relative to `prev`
    this.prev = 0; // the last input sample of the previous call (index -1)
  }

  process(input) {
    if (this.fromRate === this.toRate) return Float32Array.from(input);
    const out = [];
    const n = input.length;
    const at = (i) => (i < 0 ? this.prev : input[i]);
    let pos = this.pos;
    if (this.step <= 1) {
      // Upsampling: output sample at fractional input index pos-1 .. interpolate prev/input.
      while (pos < n) {
        const i = Math.floor(pos) - 1;
        const frac = pos - Math.floor(pos);
        out.push(at(i) + (at(i + 1) - at(i)) * frac);
        pos += this.step;
      }
    } else {
      // Downsampling: average the inputs in (pos - step, pos].
      while (pos + 1 <= n) {
        const start = Math.max(0, Math.ceil(pos - this.step));
        const end = Math.floor(pos);
        let sum = 0;
        for (let i = start; i <= end; i++) sum += input[i];
        out.push(sum / (end - start + 1));
        pos += this.step;
      }
    }
    this.pos = pos - n;
    if (n) this.prev = input[n - 1];
    return Float32Array.from(out);
  }
}
