// AudioWorklet processor for avatar-relay.js startMicrophone(): mixes the input to mono and posts
// Float32 batches (about 20 ms) to the main thread, which resamples and sends them. Batching keeps
// the message rate low; the buffers are transferred, not copied.
class AvatarRelayCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.batchFrames = options?.processorOptions?.batchFrames ?? 960;
    this.buffer = new Float32Array(this.batchFrames);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.buffer[this.filled++] = sum / channels.length;
      if (this.filled === this.batchFrames) {
        this.port.postMessage(this.buffer, [this.buffer.buffer]);
        this.buffer = new Float32Array(this.batchFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor('avatar-relay-capture', AvatarRelayCapture);
