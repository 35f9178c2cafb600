// Type declarations for avatar-relay.js (served at /client/avatar-relay.js).
// Wire protocol: avatar-relay.v1 (docs/protocol.md).

export declare const PROTOCOL: 'avatar-relay.v1';
export declare const VERSION: string;

/** Stable error codes: the server's (docs/protocol.md, docs/api.md) plus the client's own. */
export type RelayErrorCode =
  | 'invalidRequest' | 'unknownMessageType' | 'badAudio' | 'badSequence' | 'badAck'
  | 'messageTooLarge' | 'resumeFailed' | 'slowConsumer' | 'idleTimeout'
  | 'sessionDurationExceeded' | 'connectionReplaced' | 'sessionClosed' | 'goingAway'
  /** A draining server handed the session over (close 1012): the client reconnects and resumes. */
  | 'sessionMoved'
  | 'ticketInvalid' | 'originNotAllowed' | 'sessionNotFound' | 'sessionLimit' | 'internalError'
  | 'unauthorized' | 'forbidden' | 'notFound' | 'rateLimited' | 'serverError' | 'upstreamError'
  | 'upstreamUnavailable' | 'connectionClosed' | 'connectionFailed' | 'protocolError'
  /** The avatar service refused the session for good (docs/protocol.md, section 3). */
  | 'creditsExhausted' | 'concurrencyLimit' | 'sessionTokenInvalid'
  /** A producer session's page sent audio, and the session does not forward the microphone. */
  | 'microphoneDisabled' | 'producerNotAllowed'
  /** Client only: too much audio waiting for the server's acknowledgement. */
  | 'bufferFull'
  /** Client only: the AvatarController threw or rejected. */
  | 'controllerError'
  | (string & {});

export declare class RelayError extends Error {
  constructor(code: RelayErrorCode, message?: string, details?: Record<string, unknown>);
  readonly code: RelayErrorCode;
  /** HTTP status, for errors answered by the REST API. */
  readonly status?: number;
  readonly requestId?: string | null;
  readonly retryAfter?: number | null;
  /** WebSocket close code, for errors that closed the socket. */
  readonly closeCode?: number;
  /** Set for `goingAway`: this server is shutting down; connect() again for a new session. */
  readonly retryWithNewSession?: boolean;
}

/** What `POST /v1/relay/sessions` answers. */
export interface RelaySession {
  sessionId: string;
  /** Single-use credential for the WebSocket (browsers cannot set headers on one). */
  ticket: string;
  /** Socket URL (absolute or a path) carrying `?session=...&ticket=...`. */
  url: string;
  sampleRate: number;
  avatarId: string;
  resumeWindowSeconds: number;
  ticketTtlSeconds: number;
  /** The SpatialReal app id, for `new SpatialReal({appId})`. */
  appId: string;
  /** With `withSessionToken`: the web SDK's `credential` (it downloads the avatar). */
  sessionToken?: string;
  sessionTokenExpireAt?: number;
  /** Whose audio is the avatar's speech: this page's, or a server-side producer's. */
  audioSource?: 'browser' | 'producer';
  /** In a producer session: this page's audio is the user's microphone, for the producer. */
  forwardMicrophone?: boolean;
  allowProducer?: boolean;
  /** false: the relay does not send this page's audio back; the client yields its own. */
  audioEcho?: boolean;
}

/** The AvatarKit `AvatarController` methods Host Mode uses (DrivingServiceMode.backend). */
export interface HostModeController {
  /** PCM s16le mono for the current round; returns the round's conversation id (or null). */
  yieldAudioData(audio: Uint8Array, end?: boolean): string | null | Promise<string | null>;
  /** The round's animation messages, verbatim; `[]` switches the round to audio-only. */
  yieldFramesData(payloads: (Uint8Array | ArrayBuffer)[], conversationId: string): boolean | unknown;
  interrupt(): void;
}

/**
 * A Host-mode session of the current web SDK (`@spatialreal/web-sdk`,
 * `new SpatialReal({appId}).createSession({avatarId, credential, container,
 * drivingServiceMode: 'host', audioFormat})`): no conversation ids; `end` closes the round.
 */
export interface HostAvatarSessionLike {
  yieldAudioData(audio: ArrayBuffer, end?: boolean): unknown;
  yieldFramesData(frames: Uint8Array[]): unknown;
  interrupt(): void;
}

export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed';
export declare const States: Readonly<{
  IDLE: 'idle'; CONNECTING: 'connecting'; OPEN: 'open'; RECONNECTING: 'reconnecting';
  CLOSED: 'closed'; FAILED: 'failed';
}>;

export type FetchOptions = Omit<RequestInit, 'method' | 'body'>;

export interface AvatarRelayOptions {
  /** Origin of the avatar-relay server; default: the page's origin. */
  baseUrl?: string;
  /** Merged into every REST call (auth headers, credentials); a function is called each time. */
  fetchOptions?: FetchOptions | (() => FetchOptions | Promise<FetchOptions>);
  /** The Host-mode session of `@spatialreal/web-sdk` to drive (or later: setAvatarSession()). */
  avatarSession?: HostAvatarSessionLike | null;
  /** The older SDK's AvatarController to drive (`@spatialwalk/avatarkit`; or setController()). */
  controller?: HostModeController | null;
  /** Requested avatar; default: the server's configured avatar. */
  avatarId?: string;
  /** Requested PCM sample rate (8000, 16000, 22050, 24000, 32000, 44100, 48000). */
  sampleRate?: number;
  /** Ask for a session token in the same call (the answer's `sessionToken`). */
  withSessionToken?: boolean;
  /**
   * false: a session without the echo of this page's audio (half the messages down); the client
   * yields the audio it sent itself, before the frames, in the conversation's id.
   */
  audioEcho?: boolean;
  /** Extra fields for the session-creation body. */
  sessionRequest?: Record<string, unknown>;
  /** Acknowledge after this many sequenced messages (default 25) ... */
  ackEvery?: number;
  /** ... or this long after the first unacknowledged one (default 1000 ms). */
  ackDelayMs?: number;
  /** Larger sendAudio() buffers are split into messages of at most this size (default 32 KiB). */
  chunkBytes?: number;
  /** Unacknowledged audio kept for resends before sendAudio() throws `bufferFull` (16 MiB). */
  maxOutboxBytes?: number;
  /** A connection without WELCOME after this long is dropped and retried (default 10 s). */
  connectTimeoutMs?: number;
  /** Client PING interval (default 15 s; 0 disables) and how long to wait for its PONG. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** Reconnect backoff: first retry at once, then initialBackoffMs doubling up to maxBackoffMs. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Injection points for tests and non-browser runtimes. */
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket;
}

export interface SendAudioOptions {
  /** Last chunk of the utterance (the chunk may then be empty). */
  end?: boolean;
}

export interface RelayStats {
  state: ClientState;
  sessionId: string | null;
  sampleRate: number | null;
  connects: number;
  reconnects: number;
  drops: number;
  messagesReceived: number;
  /** Replayed messages already delivered, ignored (exactly-once). */
  duplicatesIgnored: number;
  audioChunksSent: number;
  audioBytesSent: number;
  /** Client messages (re)sent right after a resume: unacknowledged or queued while away. */
  resentMessages: number;
  /** Server messages replayed on resumes (sent before a drop, never processed). */
  replayedOnResume: number;
  audioChunksReceived: number;
  audioBytesReceived: number;
  framesReceived: number;
  frameBytesReceived: number;
  conversationsStarted: number;
  conversationsCompleted: number;
  conversationsAborted: number;
  interruptsSent: number;
  interruptsReceived: number;
  acksSent: number;
  /** Round trip of the last PING/PONG, ms. */
  rttMs: number | null;
  lastServerSeq: number;
  nextClientSeq: number;
  clientSeqAcked: number;
  outboxMessages: number;
  outboxBytes: number;
  /** Frames waiting for their conversation's controller id. */
  framesHeld: number;
}

export type ConversationStatus = 'active' | 'completed' | 'aborted' | 'interrupted';

export interface ConversationInfo {
  /** The relay's id (the upstream request id). */
  conversationId: string;
  /** The id the controller's yieldAudioData() returned for it. */
  controllerConversationId: string | null;
  /** When the utterance's first chunk was sent (performance.now() ms), if sent by this client. */
  utteranceStartedAt: number | null;
  startedAt: number;
  firstFrameAt: number | null;
  endedAt: number | null;
  audioChunks: number;
  audioBytes: number;
  frames: number;
  status: ConversationStatus;
  code: string | null;
}

interface EventBase<T extends string> {
  type: T;
  /** performance.now() when emitted. */
  time: number;
}

export interface RelayEvents {
  state: EventBase<'state'> & { state: ClientState; previous: ClientState; reason?: string; resumed?: boolean; code?: string };
  welcome: EventBase<'welcome'> & { sessionId: string; clientAck: number; serverSeq: number; sampleRate: number; resumeWindowMs: number; resumed: boolean; noEcho: boolean; resent: number };
  conversationstart: EventBase<'conversationstart'> & { conversationId: string; utteranceStartedAt: number | null };
  conversationid: EventBase<'conversationid'> & { conversationId: string; controllerConversationId: string };
  /** `own`: audio this client sent, yielded in place of the echo (`audioEcho: false`). */
  audio: EventBase<'audio'> & { conversationId: string; seq: number; first: boolean; end: boolean; pcm: Uint8Array; receivedAt: number; own: boolean };
  frame: EventBase<'frame'> & { conversationId: string; seq: number; index: number; end: boolean; payload: Uint8Array; receivedAt: number; latencyMs: number | null };
  conversationend: EventBase<'conversationend'> & { conversationId: string; status: ConversationStatus; code: string | null };
  conversationaborted: EventBase<'conversationaborted'> & { conversationId: string; code: string; message: string };
  interrupted: EventBase<'interrupted'> & { conversationId: string | null };
  ack: EventBase<'ack'> & { seq: number };
  error: EventBase<'error'> & { code: RelayErrorCode; message: string; fatal: boolean; error?: RelayError };
  close: EventBase<'close'> & { code: RelayErrorCode | null };
  /**
   * The session is over and cannot be resumed (`sessionNotFound`: its instance died and its
   * state was not kept, or it expired; `goingAway`: the server shut down without handing it
   * over; `resumeFailed`, `sessionClosed`, `idleTimeout`, `sessionDurationExceeded`), but nothing
   * is wrong with the setup. `action` is what to do: `'newSession'`, call connect() again for a
   * new session. Emitted once, after the fatal `error` and before `close`.
   */
  sessionlost: EventBase<'sessionlost'> & { code: RelayErrorCode; message: string; action: 'newSession' };
}

export declare class AvatarRelayClient {
  constructor(options?: AvatarRelayOptions);
  readonly state: ClientState;
  readonly sessionId: string | null;
  readonly sampleRate: number | null;
  readonly resumeWindowMs: number | null;
  readonly session: RelaySession | null;
  /** The relay echoes this page's audio (false: the client yields its own, `audioEcho: false`). */
  readonly audioEcho: boolean;

  on<K extends keyof RelayEvents>(type: K, handler: (event: RelayEvents[K]) => void): () => void;
  on(type: '*', handler: (event: RelayEvents[keyof RelayEvents]) => void): () => void;
  once<K extends keyof RelayEvents>(type: K, handler: (event: RelayEvents[K]) => void): () => void;
  off(type: string, handler: (event: never) => void): void;

  setController(controller: HostModeController | null): void;
  setAvatarSession(session: HostAvatarSessionLike | null): void;
  /** Create the session (or use `session`) and connect; resolves once the server welcomed us. */
  connect(session?: RelaySession): Promise<RelaySession>;
  /** Queue PCM s16le mono at `sampleRate`; kept until acknowledged, resent after a resume. */
  sendAudio(pcm: Int16Array | ArrayBuffer | Uint8Array | null, options?: SendAudioOptions): number;
  endUtterance(): number;
  interrupt(): void;
  /** Drop the socket as a network failure would (demo/tests); the client resumes, after
   *  `offlineMs` as if the network were down that long. With `loseMs`, the link is first deaf
   *  that long: what the server sends is lost (then replayed on the resume).
   *  False when there is no socket. */
  dropConnection(options?: { offlineMs?: number; loseMs?: number }): boolean;
  /** End the session (BYE). */
  close(): Promise<void>;
  stats(): RelayStats;
  conversations(): ConversationInfo[];
}

/** Feeds a HostModeController in stream order; used by AvatarRelayClient. */
export declare class HostModeDriver {
  constructor(controller: HostModeController, emit?: (type: string, event: object) => void);
  readonly held: number;
  audio(conversationId: string, pcm: Uint8Array, flags?: { first?: boolean; end?: boolean }): unknown;
  frame(conversationId: string, payload: Uint8Array, flags?: { end?: boolean }): unknown;
  aborted(conversationId: string): unknown;
  interrupted(): void;
}

/** Feeds a HostAvatarSessionLike in stream order (no ids: rounds end after their last frame). */
export declare class HostSessionDriver {
  constructor(session: HostAvatarSessionLike, emit?: (type: string, event: object) => void);
  readonly held: number;
  audio(conversationId: string, pcm: Uint8Array, flags?: { first?: boolean; end?: boolean }): unknown;
  frame(conversationId: string, payload: Uint8Array, flags?: { end?: boolean }): unknown;
  aborted(conversationId: string): unknown;
  interrupted(): void;
}

export interface SessionToken {
  sessionToken: string;
  expireAt: number;
  appId: string;
  region: string;
}

/** SDK (direct) mode: a single-use session token from this server's broker. */
export declare function fetchSessionToken(options?: {
  baseUrl?: string;
  fetchOptions?: FetchOptions | (() => FetchOptions | Promise<FetchOptions>);
  ttlSeconds?: number;
  idempotencyKey?: string;
  fetch?: typeof fetch;
}): Promise<SessionToken>;

export interface MicrophoneOptions {
  /** Target rate; default: the connected session's. */
  sampleRate?: number;
  /** Audio per message (default 40 ms). */
  chunkMs?: number;
  constraints?: MediaTrackConstraints;
  /** Use this stream instead of asking for the microphone. */
  stream?: MediaStream;
  audioContext?: AudioContext;
  /** Default: pcm-capture-worklet.js beside avatar-relay.js. */
  workletUrl?: string;
  onLevel?(rms: number): void;
  onChunk?(pcm: Int16Array): void;
}

export interface Microphone {
  readonly sampleRate: number;
  readonly context: AudioContext;
  readonly stream: MediaStream;
  /** Stop capturing; closes the utterance (END) unless `{end: false}`. */
  stop(options?: { end?: boolean }): void;
}

/** Capture the microphone (AudioWorklet), resample to the session's rate, send s16le mono. */
export declare function startMicrophone(client: AvatarRelayClient, options?: MicrophoneOptions): Promise<Microphone>;

export declare class Resampler {
  constructor(fromRate: number, toRate: number);
  process(input: Float32Array): Float32Array;
}
export declare function floatToInt16(samples: Float32Array | number[]): Int16Array;
export declare function pcmBytes(pcm: Int16Array | ArrayBuffer | Uint8Array): Uint8Array;
export declare function pcmLevel(pcm: Uint8Array | ArrayBuffer): number;

// --- codec ---

export declare const ClientType: Readonly<Record<'HELLO' | 'AUDIO' | 'INTERRUPT' | 'ACK' | 'PING' | 'PONG' | 'BYE', number>>;
export declare const ServerType: Readonly<Record<'WELCOME' | 'AUDIO' | 'FRAME' | 'CONVERSATION_ABORTED' | 'INTERRUPTED' | 'ACK' | 'PING' | 'PONG' | 'ERROR' | 'RESUME_FAILED', number>>;

export type ClientMessage =
  | { type: 'HELLO'; lastSeq: number }
  | { type: 'AUDIO'; seq: number; end: boolean; pcm: Uint8Array }
  | { type: 'INTERRUPT'; seq: number }
  | { type: 'ACK'; seq: number }
  | { type: 'PING'; nonce: number }
  | { type: 'PONG'; nonce: number }
  | { type: 'BYE' };

export type ServerMessage =
  | { type: 'WELCOME'; sessionId: string; clientAck: number; serverSeq: number; sampleRate: number; resumeWindowMs: number; resumed: boolean }
  | { type: 'AUDIO'; seq: number; conversationId: string; first: boolean; end: boolean; pcm: Uint8Array }
  | { type: 'FRAME'; seq: number; conversationId: string; end: boolean; payload: Uint8Array }
  | { type: 'CONVERSATION_ABORTED'; seq: number; conversationId: string; code: string; message: string }
  | { type: 'INTERRUPTED'; seq: number; conversationId: string }
  | { type: 'ACK'; seq: number }
  | { type: 'PING'; nonce: number }
  | { type: 'PONG'; nonce: number }
  | { type: 'ERROR'; code: string; message: string }
  | { type: 'RESUME_FAILED'; lastSeq: number; availableFrom: number; code: string };

export declare function encodeClient(message: ClientMessage): Uint8Array;
export declare function decodeClient(data: ArrayBuffer | ArrayBufferView, maxBytes?: number): ClientMessage;
export declare function encodeServer(message: ServerMessage): Uint8Array;
/** Strict: throws RelayError (invalidRequest, unknownMessageType, badAudio, messageTooLarge). */
export declare function decodeServer(data: ArrayBuffer | ArrayBufferView, maxBytes?: number): ServerMessage;

/** Create a relay session without connecting (learn its rate/avatar first); then connect(session). */
export declare function createRelaySession(options?: {
  baseUrl?: string;
  fetchOptions?: FetchOptions | (() => FetchOptions | Promise<FetchOptions>);
  avatarId?: string;
  sampleRate?: number;
  /** Include a session token for the web SDK (`sessionToken` in the answer). */
  withSessionToken?: boolean;
  audioEcho?: boolean;
  sessionRequest?: Record<string, unknown>;
  fetch?: typeof fetch;
}): Promise<RelaySession>;
