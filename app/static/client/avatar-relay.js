// avatar-relay.js: browser client for the avatar-relay Host Mode relay (protocol avatar-relay.v1).
//
// Dependency-free ES modules, no build step; this file is the public entry point and re-exports
// what pages use. It creates a relay session over the REST API, keeps one WebSocket to it alive
// across drops (resuming without loss or duplicates), and feeds an AvatarKit controller in Host
// Mode: yieldAudioData() first, then yieldFramesData() with the id that call returned.
//
//   codec.js       the wire format (docs/protocol.md), tested against docs/protocol-vectors.json
//   connection.js  the socket: tickets, resume, acks, pings, reconnect backoff
//   client.js      AvatarRelayClient: utterances, conversations, statistics
//   own-audio.js   without the echo (`audioEcho: false`): our own audio where the echo would be
//   host-mode.js   the avatar calls, in stream order: HostModeDriver (AvatarController of
//                  @spatialwalk/avatarkit), HostSessionDriver (@spatialreal/web-sdk session)
//   rest.js        relay sessions and session tokens over REST
//   microphone.js  startMicrophone() (AudioWorklet: pcm-capture-worklet.js)
//   audio.js       PCM helpers and the resampler

export const VERSION = '1.0.0';

export { RelayError } from './errors.js';
export {
  PROTOCOL, ClientType, ServerType, encodeClient, encodeServer, decodeClient, decodeServer,
} from './codec.js';
export { pcmBytes, floatToInt16, pcmLevel, Resampler } from './audio.js';
export { HostModeDriver, HostSessionDriver } from './host-mode.js';
export { States } from './connection.js';
export { AvatarRelayClient } from './client.js';
export { createRelaySession, fetchSessionToken } from './rest.js';
export { startMicrophone } from './microphone.js';
