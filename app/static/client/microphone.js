// The microphone: an AudioWorklet captures, the main thread resamples to the session's rate and
// streams s16le mono through `client.sendAudio()`.
import { Resampler, floatToInt16, pcmBytes, pcmLevel } from './audio.js';
import { RelayError } from './errors.js';

/**
 * Capture the microphone with an AudioWorklet, resample to the session's rate and stream it as
 * s16le mono through `client.sendAudio()`. Resolves with `{stop({end}), sampleRate, context}`;
 * `stop()` closes the utterance (END) unless `{end: false}`.
 *
 * options: `chunkMs` (default 40), `constraints` (getUserMedia audio constraints),
 * `audioContext` (reuse one), `workletUrl`, `onLevel(rms 0..1)`, `onChunk(Int16Array)`.
 */
export async function startMicrophone(client, options = {}) {
  const targetRate = options.sampleRate ?? client.sampleRate;
  if (!targetRate) throw new RelayError('invalidRequest', 'connect() first: the session decides the sample rate');
  const chunkMs = options.chunkMs ?? 40;
  const constraints = options.constraints ?? { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const stream = options.stream ?? (await navigator.mediaDevices.getUserMedia({ audio: constraints }));
  const context = options.audioContext ?? new AudioContext();
  const ownsContext = !options.audioContext;
  const workletUrl = options.workletUrl ?? new URL('./pcm-capture-worklet.js', import.meta.url).href;
  await context.audioWorklet.addModule(workletUrl);
  if (context.state === 'suspended') await context.resume();
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, 'avatar-relay-capture', {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit',
    processorOptions: { batchFrames: Math.max(128, Math.round(context.sampleRate * 0.02)) },
  });
  const resampler = new Resampler(context.sampleRate, targetRate);
  const samplesPerChunk = Math.max(1, Math.round((targetRate * chunkMs) / 1000));
  let pending = new Int16Array(0);
  let stopped = false;
  node.port.onmessage = (event) => {
    if (stopped) return;
    const converted = floatToInt16(resampler.process(event.data));
    const joined = new Int16Array(pending.length + converted.length);
    joined.set(pending);
    joined.set(converted, pending.length);
    let offset = 0;
    while (joined.length - offset >= samplesPerChunk) {
      const chunk = joined.slice(offset, offset + samplesPerChunk);
      offset += samplesPerChunk;
      try {
        client.sendAudio(chunk);
      } catch (err) {
        client.emit('error', { code: err.code ?? 'internalError', message: err.message, fatal: false });
      }
      options.onChunk?.(chunk);
      options.onLevel?.(pcmLevel(pcmBytes(chunk)));
    }
    pending = joined.slice(offset);
  };
  source.connect(node);
  return {
    sampleRate: targetRate,
    context,
    stream,
    stop({ end = true } = {}) {
      if (stopped) return;
      stopped = true;
      source.disconnect();
      node.port.onmessage = null;
      node.disconnect();
      for (const track of stream.getTracks()) track.stop();
      if (ownsContext) context.close();
      try {
        if (pending.length) client.sendAudio(pending, { end });
        else if (end) client.endUtterance();
      } catch (err) {
        client.emit('error', { code: err.code ?? 'internalError', message: err.message, fatal: false });
      }
    },
  };
}
