// Endpoint: the sans-IO protocol engine of one agent (protocol §3–§5), the TypeScript port of the C++
// core's `Endpoint`. It turns the application's requests and replies into envelope frames and
// received frames into events, and owns the sessions, handshakes, replay protection, retries,
// timeouts and stream reassembly in between. No sockets, no clocks: the caller feeds frames and the
// time, and sends what takeOutgoing() returns through its relay connection (relay_link.ts).
//
// Decisions are the C++ core's (docs/protocol.md "Endpoint engine"): the responder's deadline counts
// from receipt; the requester sends its remaining time; cold requests ride in message 1 with
// timeout_ms always set; early replies are held (≤ 32 per peer, byte-bounded) until step 2; a
// handshake is abandoned when the request that started it ends, and never outlives the requests
// waiting on it; no_session is retried once with a new envelope id, and only while nothing of the
// reply has arrived. TypeScript-only hardening (docs/protocol.md "TypeScript client and web UI"):
// token buckets on incoming step 1s and on no_session answers, byte budgets on held data, and an
// `undeliverable` for a reply frame ends the request served.
import {
  type Body,
  chunkBody,
  endBody,
  errorBody,
  handshakeRequest,
  errorFromBody,
  isCapabilityName,
  parseBody,
  parseHandshakeRequest,
  requestBody,
  responseBody,
} from './bodies.js';
import {
  type Envelope,
  type MsgType,
  SignedEnvelopeMemory,
  parseHandshakePayload,
  receiveEnvelope,
  serializeEnvelope,
  signEnvelope,
} from './envelope.js';
import { MeshError, type MeshErrorCode, isErrorCode } from './errors.js';
import { type Identity, isValidAgentId } from './identity.js';
import { type JsonObject, type JsonValue, MAX_SAFE_INTEGER, parseIJson } from './ijson.js';
import { canonicalBytes, checkJsonForm } from './jcs.js';
import { type RateLimit, RateLimiter } from './rate_limit.js';
import { withDefaults } from './options.js';
import {
  type EnvelopeHeader,
  MESSAGE1_MAX_PAYLOAD,
  type NoiseSession,
  type SessionLimits,
  SessionTable,
  acceptHandshake,
  finishHandshake,
  startHandshake,
} from './session.js';
import { newUuidV4 } from './uuid.js';

export type { RateLimit } from './rate_limit.js';

export interface EndpointOptions {
  sessions?: Partial<SessionLimits>;
  /** Bounds of the signed-envelope replay memory (default 4,096 IDs per sender, 65,536 in all). */
  signedEnvelopeMemory?: { maxPerSender?: number; maxTotal?: number };
  /** Signed envelopes older than this are dropped (protocol §3; default 10 min). */
  maxAgeMs?: number;
  /** ... or further in the future than this (default 2 min). */
  maxFutureMs?: number;
  /** Frames larger than this are neither sent nor accepted (default 1 MiB). */
  maxEnvelopeBytes?: number;
  /** A request without timeoutMs waits this long (default 30 s). */
  defaultTimeoutMs?: number;
  /** Stream chunks pending reordering (protocol §4: 256). */
  maxPendingChunks?: number;
  /** ... and their bytes, per stream (default 4 MiB). */
  maxPendingChunkBytes?: number;
  /** Bytes of early replies held per peer until its step 2 (default 2 MiB; at most 32 replies). */
  maxEarlyReplyBytes?: number;
  /** Requests of ours in flight; past it requests fail with rate_limited. */
  maxOutstandingRequests?: number;
  /** Requests we serve at once; past it they are answered rate_limited. */
  maxServedRequests?: number;
  /**
   * Incoming handshake step 1s admitted, checked before any crypto (default 20/s, burst 40 per
   * peer; 50/s, burst 100 in all); the rest are dropped (stats.dropped).
   */
  handshakeRate?: Partial<RateLimit>;
  /** no_session answers sent, each a signature (default 20/s, burst 40 per peer; 200/s, burst 200 in all). */
  noSessionRate?: Partial<RateLimit>;
  /**
   * Peers exchanged with in plaintext: signed envelopes carrying the §4 body, no Noise (protocol §5
   * "Plaintext"). Configured on both ends; never chosen at run time. Encrypted traffic from such a
   * peer is still accepted.
   */
  plaintextPeers?: Iterable<string>;
  /** Envelope IDs (tests fix them); default random UUID v4. */
  newId?: () => string;
}

export type RequestHandle = number;

/** A request from a peer for this agent to serve (answer with respond/sendChunk/endStream). */
export interface IncomingRequestEvent {
  type: 'incoming';
  from: string;
  id: string;
  stream: boolean;
  capability: string;
  body: JsonValue;
  /** When the caller stops waiting (receipt + timeout_ms): work stops then. */
  deadlineMs: number | undefined;
  /** False for a plaintext peer's request. */
  encrypted: boolean;
}
/** The peer cancelled a request this agent serves: stop work, send nothing more. */
export interface PeerCancelledEvent {
  type: 'peer_cancelled';
  from: string;
  id: string;
}
/**
 * A request this agent serves can no longer be answered completely: the relay refused a frame of
 * its reply (`undeliverable`, e.g. rate_limited) or the link could not take it. Stop work; the
 * caller was sent an `error` with the same code.
 */
export interface ServeFailedEvent {
  type: 'serve_failed';
  from: string;
  id: string;
  error: MeshError;
}
export interface ResponseEvent {
  type: 'response';
  handle: RequestHandle;
  body: JsonValue;
  encrypted: boolean;
}
/** Stream chunks arrive in seq order, without gaps or duplicates. */
export interface ChunkEvent {
  type: 'chunk';
  handle: RequestHandle;
  seq: number;
  body: JsonValue;
  /** Bytes of the chunk as received (its JSON payload): for the reader's byte budget. */
  bytes: number;
}
export interface StreamEndEvent {
  type: 'stream_end';
  handle: RequestHandle;
}
/** A request of ours ended without (complete) success. */
export interface FailureEvent {
  type: 'failure';
  handle: RequestHandle;
  error: MeshError;
}
export type EndpointEvent =
  | IncomingRequestEvent
  | PeerCancelledEvent
  | ServeFailedEvent
  | ResponseEvent
  | ChunkEvent
  | StreamEndEvent
  | FailureEvent;

export interface OutgoingFrame {
  to: string;
  /** The envelope's id (what an `undeliverable` frame names). */
  id: string;
  frame: string;
}

/** Why a received frame was dropped without an answer: a fixed set of labels (stats.dropped). */
export type DropReason =
  | `invalid envelope: ${MeshErrorCode}`
  | 'internal error'
  | 'handshake step 1 rate limited'
  | 'handshake step 1 refused'
  | 'handshake step 2 without in_reply_to'
  | 'handshake step 2 for no pending handshake'
  | 'handshake step 2 refused'
  | 'no_session answer rate limited'
  | 'encrypted reply or cancel for an unknown session'
  | 'early replies over budget'
  | 'decryption failed'
  | 'replayed counter'
  | 'request on a session we initiated'
  | 'reply to no outstanding request'
  | 'reply on the wrong session'
  | 'reply to a cancelled request'
  | 'duplicate request id'
  | 'stream chunk out of place'
  | 'unexpected reply type'
  | 'cancel for no request served on this session'
  | 'plaintext envelope without in_reply_to'
  | 'plaintext reply to an encrypted request'
  | 'plaintext envelope from a peer not configured for plaintext'
  | 'plaintext error for no outstanding request'
  | 'plaintext error with an invalid body';

export interface EndpointStats {
  handshakesStarted: number;
  handshakesAccepted: number;
  handshakesCompleted: number;
  /** Pending handshakes given up (their starter ended, nobody waits any more, or too old). */
  handshakesAbandoned: number;
  noSessionSent: number;
  retries: number;
  /** Frames dropped without an answer, by reason (protocol §5 "Invalid input"); bounded labels. */
  dropped: Map<DropReason, number>;
  /** The message of the last unexpected exception receive() caught (counted as 'internal error'). */
  lastInternalError: string | undefined;
}

type RequestState = 'queued' | 'in_handshake' | 'sent';

interface PendingChunk {
  body: JsonValue;
  bytes: number;
}

interface Outstanding {
  peer: string;
  capability: string;
  body: JsonValue;
  stream: boolean;
  deadlineMs: number;
  wireId: string | undefined;
  state: RequestState;
  sid: string | undefined;
  retried: boolean;
  cancelWhenSent: boolean;
  nextSeq: number;
  pendingChunks: Map<number, PendingChunk>;
  pendingChunkBytes: number;
  endSeq: number | undefined;
  encrypted: boolean;
}

interface Served {
  /** undefined: a plaintext peer's request. */
  sid: string | undefined;
  stream: boolean;
  nextSeq: number;
  deadlineMs: number | undefined;
}

/** A handshake of ours in flight (single flight: at most one per peer). */
interface Handshake {
  step1Id: string;
  /** The request that started it (carried in message 1, or first in the queue if too large). */
  starter: RequestHandle;
  /** Given up at this time at the latest: the longest deadline of the requests relying on it. */
  expiresMs: number;
}

/** A reply frame we sent for a request we serve, in case the relay answers `undeliverable`. */
interface SentReply {
  to: string;
  requestId: string;
  sid: string | undefined;
  type: MsgType;
  deadlineMs: number | undefined;
}

const DEFAULTS = {
  maxAgeMs: 10 * 60 * 1000,
  maxFutureMs: 2 * 60 * 1000,
  maxEnvelopeBytes: 1024 * 1024,
  defaultTimeoutMs: 30_000,
  maxPendingChunks: 256,
  maxPendingChunkBytes: 4 * 1024 * 1024,
  maxEarlyReplyBytes: 2 * 1024 * 1024,
  maxOutstandingRequests: 65536,
  maxServedRequests: 65536,
};
const DEFAULT_HANDSHAKE_RATE: RateLimit = { perPeerPerSecond: 20, perPeerBurst: 40, globalPerSecond: 50, globalBurst: 100 };
const DEFAULT_NO_SESSION_RATE: RateLimit = { perPeerPerSecond: 20, perPeerBurst: 40, globalPerSecond: 200, globalBurst: 200 };
/** Browser-sized replay memory (the C++ core keeps 65,536 per sender and 1,000,000 in all). */
const DEFAULT_MEMORY = { maxPerSender: 4096, maxTotal: 65536 };
const MAX_EARLY_REPLIES = 32;
/** Reply frames remembered for `undeliverable` (the oldest is forgotten first). */
const MAX_SENT_REPLIES = 4096;

function servedKey(from: string, id: string): string {
  return `${from} ${id}`;
}

function fail(code: MeshErrorCode, message: string, retryAfterMs?: number): MeshError {
  return new MeshError(code, message, retryAfterMs === undefined ? undefined : { retryAfterMs });
}

function asMeshError(error: unknown): MeshError {
  return error instanceof MeshError ? error : fail('internal', error instanceof Error ? error.message : String(error));
}

/** Why `value` has no JSON form (undefined, NaN, a function, a cycle…), or undefined if it has one. */
function jsonProblem(value: JsonValue): string | undefined {
  try {
    checkJsonForm(value);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

function isRequestType(type: MsgType): boolean {
  return type === 'request' || type === 'stream_request';
}

/** Message 1's payload (protocol §5): the request with its msg_type, as UTF-8 JSON. */
function message1Bytes(stream: boolean, capability: string, body: JsonValue, timeoutMs: number): Uint8Array {
  return canonicalBytes(handshakeRequest(stream ? 'stream_request' : 'request', capability, body, timeoutMs));
}

interface ErrorReply {
  code: MeshErrorCode;
  message: string;
  retryAfterMs?: number;
}

function errorJson(error: ErrorReply): JsonObject {
  return errorBody(error.code, error.message, error.retryAfterMs);
}

/** The remaining time sent as timeout_ms (at least 1 ms). */
function remainingMs(o: Outstanding, nowMs: number): number {
  return Math.max(1, Math.floor(o.deadlineMs - nowMs));
}

/** A refusal from receive()'s admission check (before the signature is verified). */
class Refused extends Error {
  constructor(readonly reason: DropReason) {
    super(reason);
  }
}

export class Endpoint {
  readonly identity: Identity;
  readonly sessions: SessionTable;
  readonly stats: EndpointStats = {
    handshakesStarted: 0,
    handshakesAccepted: 0,
    handshakesCompleted: 0,
    handshakesAbandoned: 0,
    noSessionSent: 0,
    retries: 0,
    dropped: new Map(),
    lastInternalError: undefined,
  };
  readonly #options: typeof DEFAULTS;
  readonly #plaintextPeers: ReadonlySet<string>;
  readonly #newId: () => string;
  readonly #memory: SignedEnvelopeMemory;
  readonly #step1Rate: RateLimiter;
  readonly #noSessionRate: RateLimiter;
  #nextHandle = 1;
  readonly #outstanding = new Map<RequestHandle, Outstanding>();
  readonly #byWireId = new Map<string, RequestHandle>();
  /** Requests waiting for a peer's handshake (single flight), in order. */
  readonly #waiting = new Map<string, RequestHandle[]>();
  /** Our handshakes in flight, by peer, and the peer of each step-1 id. */
  readonly #handshakes = new Map<string, Handshake>();
  readonly #handshakeByStep1 = new Map<string, string>();
  /** Peers whose waiting requests need a new handshake (started when the current call ends). */
  readonly #restart = new Set<string>();
  readonly #served = new Map<string, Served>();
  /** Reply frames sent for requests we serve, by envelope id (bounded, oldest first). */
  readonly #sentReplies = new Map<string, SentReply>();
  /** Encrypted replies that arrived before the step-2 envelope of their session (bounded). */
  readonly #earlyReplies = new Map<string, { held: { envelope: Envelope; bytes: number }[]; bytes: number }>();
  #outgoing: OutgoingFrame[] = [];
  #events: EndpointEvent[] = [];

  constructor(identity: Identity, options: EndpointOptions = {}) {
    this.identity = identity;
    this.#options = withDefaults(options, DEFAULTS);
    this.sessions = new SessionTable(options.sessions);
    this.#plaintextPeers = new Set(options.plaintextPeers ?? []);
    this.#newId = options.newId ?? newUuidV4;
    this.#memory = new SignedEnvelopeMemory({
      maxAgeMs: this.#options.maxAgeMs,
      maxPerSender: options.signedEnvelopeMemory?.maxPerSender ?? DEFAULT_MEMORY.maxPerSender,
      maxTotal: options.signedEnvelopeMemory?.maxTotal ?? DEFAULT_MEMORY.maxTotal,
    });
    this.#step1Rate = new RateLimiter({ ...DEFAULT_HANDSHAKE_RATE, ...options.handshakeRate }, DEFAULT_HANDSHAKE_RATE);
    this.#noSessionRate = new RateLimiter({ ...DEFAULT_NO_SESSION_RATE, ...options.noSessionRate }, DEFAULT_NO_SESSION_RATE);
  }

  get id(): string {
    return this.identity.agentId;
  }

  isPlaintextPeer(peer: string): boolean {
    return this.#plaintextPeers.has(peer);
  }

  get outstandingCount(): number {
    return this.#outstanding.size;
  }

  get servedCount(): number {
    return this.#served.size;
  }

  /** Whether a handshake of ours with `peer` is in flight. */
  hasPendingHandshake(peer: string): boolean {
    return this.#handshakes.has(peer);
  }

  takeOutgoing(): OutgoingFrame[] {
    const out = this.#outgoing;
    this.#outgoing = [];
    return out;
  }

  takeEvents(): EndpointEvent[] {
    const out = this.#events;
    this.#events = [];
    return out;
  }

  // ---- sending helpers ----

  #drop(reason: DropReason): void {
    this.stats.dropped.set(reason, (this.stats.dropped.get(reason) ?? 0) + 1);
  }

  #header(to: string, type: MsgType, inReplyTo: string | undefined, nowMs: number): EnvelopeHeader {
    return {
      id: this.#newId(),
      from: this.id,
      to,
      msg_type: type,
      ...(inReplyTo !== undefined ? { in_reply_to: inReplyTo } : {}),
      timestamp: nowMs,
    };
  }

  /** Queues a frame for the relay, or fails the request `id` sent if it is too large. */
  #queueFrame(to: string, id: string, frame: string): boolean {
    // UTF-16 length ≤ UTF-8 length; envelope frames are ASCII apart from free-form bodies.
    if (frame.length > this.#options.maxEnvelopeBytes || new TextEncoder().encode(frame).length > this.#options.maxEnvelopeBytes) {
      const handle = this.#byWireId.get(id);
      if (handle !== undefined) {
        this.#failRequest(handle, fail('too_large', `envelope of ${frame.length}+ bytes exceeds max_envelope_bytes`));
      }
      return false;
    }
    this.#outgoing.push({ to, id, frame });
    return true;
  }

  /** false: not sent (signing failed or the frame is too large; a request of ours is failed). */
  #sendSigned(header: EnvelopeHeader, payload: JsonValue): boolean {
    let frame: string;
    try {
      frame = serializeEnvelope(signEnvelope({ ...header, payload }, this.identity));
    } catch (error) {
      const handle = this.#byWireId.get(header.id);
      if (handle !== undefined) this.#failRequest(handle, asMeshError(error));
      return false;
    }
    return this.#queueFrame(header.to, header.id, frame);
  }

  /** false: not sent (sealing failed or the frame is too large; a request of ours is failed). */
  #sealAndSend(session: NoiseSession, header: EnvelopeHeader, body: JsonValue): boolean {
    let envelope: Envelope;
    try {
      envelope = session.seal(header, canonicalBytes(body));
    } catch (error) {
      if (error instanceof MeshError && error.code === 'expired') session.retire(header.timestamp);
      const handle = this.#byWireId.get(header.id);
      if (handle !== undefined) this.#failRequest(handle, asMeshError(error));
      return false;
    }
    return this.#queueFrame(envelope.to, envelope.id, serializeEnvelope(envelope));
  }

  // ---- requests of ours ----

  /**
   * Starts a request; its outcome arrives as events carrying the returned handle. Never throws:
   * invalid arguments fail the request at once (a `failure` event with bad_request).
   */
  request(
    to: string,
    capability: string,
    body: JsonValue,
    options: { stream?: boolean; timeoutMs?: number | undefined },
    nowMs: number,
  ): RequestHandle {
    const handle = this.#nextHandle++;
    const refuse = (code: MeshErrorCode, message: string): RequestHandle => {
      this.#events.push({ type: 'failure', handle, error: fail(code, message) });
      return handle;
    };
    if (this.#outstanding.size >= this.#options.maxOutstandingRequests) return refuse('rate_limited', 'too many requests in flight');
    if (!isCapabilityName(capability)) return refuse('bad_request', 'capability names match [A-Za-z0-9_-]{1,54}');
    if (!isValidAgentId(to)) {
      return refuse('bad_request', 'the target is not a valid agent ID (43 base64url characters of an Ed25519 key)');
    }
    const invalid = jsonProblem(body);
    if (invalid !== undefined) return refuse('bad_request', `the request body is not JSON: ${invalid}`);
    // timeout_ms goes on the wire as an integer and the deadline is now + timeout: both must stay
    // exact (≤ 2^53 − 1), or the request could not be built later (and would block its peer).
    const requested: unknown = options.timeoutMs ?? this.#options.defaultTimeoutMs;
    if (typeof requested !== 'number' || !(requested > 0) || !Number.isFinite(requested)) {
      return refuse('bad_request', 'timeoutMs must be a positive, finite number of milliseconds');
    }
    const timeoutMs = Math.max(1, Math.floor(requested));
    if (!Number.isFinite(nowMs) || timeoutMs > MAX_SAFE_INTEGER - nowMs) {
      return refuse('bad_request', `timeoutMs ${timeoutMs} is too large: the deadline must stay within 2^53 − 1 ms`);
    }
    this.#outstanding.set(handle, {
      peer: to,
      capability,
      body,
      stream: options.stream === true,
      deadlineMs: nowMs + timeoutMs,
      wireId: undefined,
      state: 'queued',
      sid: undefined,
      retried: false,
      cancelWhenSent: false,
      nextSeq: 0,
      pendingChunks: new Map(),
      pendingChunkBytes: 0,
      endSeq: undefined,
      encrypted: !this.isPlaintextPeer(to),
    });
    try {
      this.#dispatch(handle, nowMs);
    } finally {
      this.#settle(nowMs);
    }
    return handle;
  }

  /** Sends (or queues behind a handshake) a request from scratch: also its retry after no_session. */
  #dispatch(handle: RequestHandle, nowMs: number): void {
    const o = this.#outstanding.get(handle);
    if (o === undefined) return;
    if (o.wireId !== undefined && this.#byWireId.get(o.wireId) === handle) this.#byWireId.delete(o.wireId);
    o.wireId = undefined;
    o.sid = undefined;
    // A new run of the request: nothing of an earlier reply counts.
    o.nextSeq = 0;
    o.pendingChunks.clear();
    o.pendingChunkBytes = 0;
    o.endSeq = undefined;
    const type: MsgType = o.stream ? 'stream_request' : 'request';
    const session = this.isPlaintextPeer(o.peer) ? undefined : this.sessions.sessionForNewRequests(o.peer, nowMs);
    if (this.isPlaintextPeer(o.peer) || session !== undefined) {
      // Built before any state changes: nothing thrown here may leave the request half sent.
      let payload: JsonObject;
      try {
        payload = requestBody(o.capability, o.body, remainingMs(o, nowMs));
      } catch (error) {
        this.#failRequest(handle, asMeshError(error));
        return;
      }
      const header = this.#header(o.peer, type, undefined, nowMs);
      o.wireId = header.id;
      o.state = 'sent';
      o.sid = session?.sid;
      this.#byWireId.set(header.id, handle);
      if (session !== undefined) this.#sealAndSend(session, header, payload);
      else this.#sendSigned(header, payload);
      return;
    }
    o.state = 'queued';
    const queue = this.#waiting.get(o.peer);
    if (queue === undefined) this.#waiting.set(o.peer, [handle]);
    else queue.push(handle);
    const handshake = this.#handshakes.get(o.peer);
    if (handshake !== undefined) handshake.expiresMs = Math.max(handshake.expiresMs, o.deadlineMs);
    else this.#startHandshakeFor(o.peer, nowMs);
  }

  /**
   * Starts the peer's handshake for the requests waiting on it (single flight, protocol §5): the
   * first one rides in message 1 if it fits, the rest are sealed once message 2 arrives. A request
   * whose step 1 cannot be built fails, and the next one is tried.
   */
  #startHandshakeFor(peer: string, nowMs: number): void {
    if (this.#handshakes.has(peer)) return;
    const queue = this.#waiting.get(peer);
    while (queue !== undefined && queue.length > 0) {
      const first = queue[0]!;
      const o = this.#outstanding.get(first);
      if (o === undefined) {
        queue.shift();
        continue;
      }
      const step1Id = this.#newId();
      let carried: boolean;
      let started: ReturnType<typeof startHandshake>;
      let frame: string;
      try {
        let payload = message1Bytes(o.stream, o.capability, o.body, remainingMs(o, nowMs));
        carried = payload.length <= MESSAGE1_MAX_PAYLOAD;
        if (!carried) payload = new Uint8Array(0);
        started = startHandshake(this.identity, peer, payload, step1Id, nowMs);
        frame = serializeEnvelope(started.step1);
      } catch (error) {
        this.#failRequest(first, asMeshError(error)); // removes it from the queue
        continue;
      }
      if (frame.length > this.#options.maxEnvelopeBytes) {
        this.#failRequest(first, fail('too_large', 'handshake envelope exceeds max_envelope_bytes'));
        continue;
      }
      this.stats.handshakesStarted += 1;
      if (carried) {
        queue.shift();
        o.wireId = step1Id;
        o.state = 'in_handshake';
        this.#byWireId.set(step1Id, first);
      }
      let expiresMs = o.deadlineMs;
      for (const handle of queue) expiresMs = Math.max(expiresMs, this.#outstanding.get(handle)?.deadlineMs ?? expiresMs);
      this.#handshakes.set(peer, { step1Id, starter: first, expiresMs });
      this.#handshakeByStep1.set(step1Id, peer);
      this.sessions.addPending(started.pending);
      this.#outgoing.push({ to: peer, id: step1Id, frame });
      break;
    }
    if (queue !== undefined && queue.length === 0 && this.#waiting.get(peer) === queue) this.#waiting.delete(peer);
  }

  /** Forgets our handshake with `peer` (completed, failed or abandoned). */
  #forgetHandshake(peer: string): void {
    const handshake = this.#handshakes.get(peer);
    if (handshake === undefined) return;
    this.#handshakes.delete(peer);
    this.#handshakeByStep1.delete(handshake.step1Id);
    this.sessions.removePending(peer);
  }

  /**
   * Gives up our handshake with `peer` (protocol §5: the initiator abandons it when the request that
   * started it ends); the requests still waiting get a new one when the current call ends.
   */
  #abandonHandshake(peer: string): void {
    if (!this.#handshakes.has(peer)) return;
    this.#forgetHandshake(peer);
    this.#earlyReplies.delete(peer);
    this.stats.handshakesAbandoned += 1;
    this.#restart.add(peer);
  }

  /** Work left for the end of each public call: new handshakes for requests left waiting. */
  #settle(nowMs: number): void {
    for (let rounds = 0; this.#restart.size > 0 && rounds < 1000; rounds++) {
      const peers = [...this.#restart];
      this.#restart.clear();
      for (const peer of peers) {
        if (this.#handshakes.has(peer)) continue;
        const queue = this.#waiting.get(peer);
        if (queue === undefined) continue;
        if (queue.length === 0) {
          this.#waiting.delete(peer);
          continue;
        }
        if (this.sessions.sessionForNewRequests(peer, nowMs) !== undefined) {
          this.#waiting.delete(peer);
          for (const handle of queue) this.#dispatch(handle, nowMs);
          continue;
        }
        this.#startHandshakeFor(peer, nowMs);
      }
    }
  }

  #finish(handle: RequestHandle): void {
    const o = this.#outstanding.get(handle);
    if (o === undefined) return;
    if (o.wireId !== undefined && this.#byWireId.get(o.wireId) === handle) this.#byWireId.delete(o.wireId);
    const queue = this.#waiting.get(o.peer);
    if (queue !== undefined) {
      const index = queue.indexOf(handle);
      if (index >= 0) queue.splice(index, 1);
      if (queue.length === 0) this.#waiting.delete(o.peer);
    }
    this.#outstanding.delete(handle);
    // Whatever ended it (reply, error, cancel, timeout, undeliverable), a handshake this request
    // started is abandoned; requests still waiting start a new one.
    if (this.#handshakes.get(o.peer)?.starter === handle) this.#abandonHandshake(o.peer);
  }

  #failRequest(handle: RequestHandle, error: MeshError): void {
    if (!this.#outstanding.has(handle)) return;
    this.#events.push({ type: 'failure', handle, error });
    this.#finish(handle);
  }

  /** Cancels a request of ours: reports failure(cancelled) at once and tells the peer. */
  cancel(handle: RequestHandle, nowMs: number, message = 'cancelled by the caller'): void {
    try {
      this.#cancel(handle, nowMs, message);
    } finally {
      this.#settle(nowMs);
    }
  }

  /**
   * Cancels every request of ours (the client closes or its link gave up): as cancel() for each,
   * but without starting a handshake for requests about to be cancelled anyway.
   */
  cancelAll(nowMs: number, message = 'cancelled by the caller'): void {
    try {
      for (const handle of [...this.#outstanding.keys()]) this.#cancel(handle, nowMs, message);
    } finally {
      this.#settle(nowMs);
    }
  }

  #cancel(handle: RequestHandle, nowMs: number, message: string): void {
    const o = this.#outstanding.get(handle);
    if (o === undefined) return;
    if (o.state === 'sent' && o.sid === undefined && this.isPlaintextPeer(o.peer) && o.wireId !== undefined) {
      this.#sendSigned(this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
    } else if (o.state === 'sent' && o.sid !== undefined && o.wireId !== undefined) {
      const session = this.sessions.find(o.peer, o.sid);
      if (session !== undefined) this.#sealAndSend(session, this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
    } else if (o.state === 'in_handshake') {
      // A cold request can be cancelled once message 2 has arrived (protocol §5): remember to. The
      // request stays known (by its step-1 id) until then, but the caller hears nothing more.
      if (!o.cancelWhenSent) {
        o.cancelWhenSent = true;
        this.#events.push({ type: 'failure', handle, error: fail('cancelled', message) });
      }
      return;
    }
    this.#failRequest(handle, fail('cancelled', message));
  }

  /**
   * The relay could not deliver the envelope `envelopeId` (its `undeliverable` frame, protocol §6),
   * or the link could not take it:
   * - a request (or the step 1 that carried it) fails with `code`; a handshake it started is
   *   abandoned and the requests waiting on it start a new one;
   * - a step 1 that carried no request (the first waiting one did not fit in message 1) was sent
   *   for all the requests waiting on it: they all fail with `code` and the handshake is dropped;
   * - a reply frame of a request we serve: the request is no longer served (`serve_failed`) and
   *   the caller is sent an `error` with the code (once; a lost `error` is not answered again).
   * Unknown IDs are ignored.
   */
  undeliverable(envelopeId: string, code: MeshErrorCode, retryAfterMs: number | undefined, nowMs: number): void {
    try {
      this.#undeliverable(envelopeId, code, retryAfterMs, nowMs);
    } finally {
      this.#settle(nowMs);
    }
  }

  #undeliverable(envelopeId: string, code: MeshErrorCode, retryAfterMs: number | undefined, nowMs: number): void {
    const retry = retryAfterMs !== undefined && Number.isSafeInteger(retryAfterMs) && retryAfterMs >= 0 ? retryAfterMs : undefined;
    const handle = this.#byWireId.get(envelopeId);
    const o = handle === undefined ? undefined : this.#outstanding.get(handle);
    if (handle !== undefined && o !== undefined) {
      if (o.cancelWhenSent) this.#finish(handle);
      else this.#failRequest(handle, fail(code, `the relay could not deliver the request: ${code}`, retry));
      return;
    }
    const peer = this.#handshakeByStep1.get(envelopeId);
    if (peer !== undefined) {
      this.#failWaiting(peer, fail(code, `the relay could not deliver the handshake: ${code}`, retry));
      return;
    }
    const reply = this.#sentReplies.get(envelopeId);
    if (reply !== undefined) {
      this.#sentReplies.delete(envelopeId);
      this.#replyLost(reply, code, retry, nowMs);
    }
  }

  /**
   * Our step 1 to `peer` that carried no request was refused (relay `undeliverable`, or the peer's
   * signed error): it was sent for every request waiting on it, so they all fail with `error`.
   */
  #failWaiting(peer: string, error: MeshError): void {
    this.#forgetHandshake(peer);
    this.#earlyReplies.delete(peer);
    this.stats.handshakesAbandoned += 1;
    for (const handle of [...(this.#waiting.get(peer) ?? [])]) this.#failRequest(handle, error);
    this.#waiting.delete(peer);
  }

  /** A reply frame of a request we serve was not delivered: end the request on both sides. */
  #replyLost(reply: SentReply, code: MeshErrorCode, retryAfterMs: number | undefined, nowMs: number): void {
    const key = servedKey(reply.to, reply.requestId);
    const error = fail(code, `the relay could not deliver the reply: ${code}`, retryAfterMs);
    if (this.#served.delete(key)) {
      this.#events.push({ type: 'serve_failed', from: reply.to, id: reply.requestId, error });
    }
    // An error frame that was lost is not answered again (no loop); nor is anything past the deadline.
    if (reply.type === 'error' || (reply.deadlineMs !== undefined && nowMs >= reply.deadlineMs)) return;
    let session: NoiseSession | undefined;
    if (reply.sid !== undefined) {
      session = this.sessions.find(reply.to, reply.sid);
      if (session === undefined) return;
    }
    const header = this.#header(reply.to, 'error', reply.requestId, nowMs);
    // §4 codes only on the wire; the relay's own (buffer_full, bad_envelope) read as unreachable.
    const wireCode: MeshErrorCode = isErrorCode(code) ? code : 'unreachable';
    const payload = errorJson({ code: wireCode, message: error.message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
    if (session !== undefined) this.#sealAndSend(session, header, payload);
    else this.#sendSigned(header, payload);
  }

  // ---- receiving ----

  /** A frame from the relay. Invalid input is dropped and counted (stats.dropped), never thrown. */
  receive(frame: string, nowMs: number): void {
    let envelope: Envelope;
    try {
      // parse, `to`, then for signed envelopes freshness, admission (rate limits, before any
      // crypto), signature and the replay memory.
      envelope = receiveEnvelope(frame, this.id, nowMs, this.#memory, {
        maxBytes: this.#options.maxEnvelopeBytes,
        maxAgeMs: this.#options.maxAgeMs,
        maxFutureMs: this.#options.maxFutureMs,
        admit: (candidate) => this.#admit(candidate, nowMs),
      }).envelope;
    } catch (error) {
      if (error instanceof Refused) this.#drop(error.reason);
      else this.#drop(`invalid envelope: ${error instanceof MeshError ? error.code : 'internal'}`);
      return;
    }
    try {
      if (envelope.msg_type === 'handshake') {
        let step: number | undefined;
        try {
          step = parseHandshakePayload(envelope.payload).step;
        } catch {
          step = undefined;
        }
        if (step === 1) this.#onStep1(envelope, nowMs);
        else this.#onStep2(envelope, nowMs);
      } else if (envelope.encrypted === true) {
        this.#onEncrypted(envelope, nowMs, frame.length);
      } else {
        this.#onPlaintext(envelope, nowMs, frame.length);
      }
    } catch (error) {
      // Nothing above should throw on hostile input; count it rather than take the caller down.
      this.#drop('internal error');
      this.stats.lastInternalError = (error instanceof Error ? error.message : String(error)).slice(0, 500);
    } finally {
      this.#settle(nowMs);
    }
  }

  /** Before a signed envelope's signature is checked: work a peer can make us do is rationed. */
  #admit(envelope: Envelope, nowMs: number): void {
    if (envelope.msg_type !== 'handshake') return;
    let step: number | undefined;
    try {
      step = parseHandshakePayload(envelope.payload).step;
    } catch {
      return; // refused after the signature check, as before
    }
    if (step === 1) {
      if (!this.#step1Rate.allow(envelope.from, nowMs)) throw new Refused('handshake step 1 rate limited');
      return;
    }
    // A step 2 nobody waits for is dropped without verifying it.
    if (envelope.in_reply_to === undefined) throw new Refused('handshake step 2 without in_reply_to');
    if (this.#handshakeByStep1.get(envelope.in_reply_to) !== envelope.from) {
      throw new Refused('handshake step 2 for no pending handshake');
    }
  }

  #onStep1(envelope: Envelope, nowMs: number): void {
    let accepted: ReturnType<typeof acceptHandshake>;
    try {
      accepted = acceptHandshake(this.identity, envelope, this.#newId(), nowMs);
    } catch {
      this.#drop('handshake step 1 refused');
      return;
    }
    this.stats.handshakesAccepted += 1;
    this.#outgoing.push({ to: envelope.from, id: accepted.step2.id, frame: serializeEnvelope(accepted.step2) });
    const session = this.sessions.add(accepted.session, nowMs);
    if (accepted.message1Payload.length === 0) return;
    let request: { type: MsgType; body: JsonObject };
    try {
      const parsed = parseHandshakeRequest(parseIJson(accepted.message1Payload, { maxBytes: this.#options.maxEnvelopeBytes }));
      const { msg_type: type, ...body } = parsed;
      request = { type, body: body as unknown as JsonObject };
    } catch (error) {
      // An invalid message-1 request is answered bad_request on its session (protocol §5).
      this.#sealAndSend(
        session,
        this.#header(envelope.from, 'error', envelope.id, nowMs),
        errorJson({ code: 'bad_request', message: (error as Error).message }),
      );
      return;
    }
    this.#onIncomingRequest(session, envelope, request.type, request.body, nowMs);
  }

  #onStep2(envelope: Envelope, nowMs: number): void {
    if (envelope.in_reply_to === undefined) {
      this.#drop('handshake step 2 without in_reply_to');
      return;
    }
    const peer = this.#handshakeByStep1.get(envelope.in_reply_to);
    const pending = peer === undefined ? undefined : this.sessions.pending(peer);
    if (peer === undefined || pending === undefined || peer !== envelope.from || pending.step1Id !== envelope.in_reply_to) {
      this.#drop('handshake step 2 for no pending handshake');
      return;
    }
    const step1Id = pending.step1Id;
    let session: NoiseSession | undefined;
    let problem = '';
    try {
      session = finishHandshake(pending, envelope, nowMs);
    } catch (error) {
      problem = (error as Error).message;
    }
    this.#forgetHandshake(peer);
    if (session === undefined) {
      this.#earlyReplies.delete(peer);
      this.#drop('handshake step 2 refused');
      // The peer answered but the handshake failed: fail the carried request, restart the queue.
      const carried = this.#byWireId.get(step1Id);
      if (carried !== undefined) {
        const o = this.#outstanding.get(carried);
        if (o?.cancelWhenSent === true) this.#finish(carried);
        else this.#failRequest(carried, fail('unreachable', problem));
      }
      this.#restart.add(peer);
      return;
    }
    this.stats.handshakesCompleted += 1;
    const established = this.sessions.add(session, nowMs);
    const early = this.#earlyReplies.get(peer)?.held ?? [];
    this.#earlyReplies.delete(peer);
    const carried = this.#byWireId.get(step1Id);
    if (carried !== undefined) {
      const o = this.#outstanding.get(carried)!;
      o.state = 'sent';
      o.sid = established.sid;
      if (o.cancelWhenSent) {
        this.#sealAndSend(established, this.#header(peer, 'cancel', step1Id, nowMs), {});
        this.#finish(carried);
      }
    }
    for (const held of early) this.#onEncrypted(held.envelope, nowMs, held.bytes);
    const queue = this.#waiting.get(peer);
    if (queue === undefined) return;
    this.#waiting.delete(peer);
    // #dispatch never throws; each request is sent or failed on its own.
    for (const handle of queue) {
      if (this.#outstanding.has(handle)) this.#dispatch(handle, nowMs);
    }
  }

  /** Holds an encrypted reply that may have overtaken the step 2 of its session; false: no room. */
  #holdEarly(envelope: Envelope, bytes: number): boolean {
    const entry = this.#earlyReplies.get(envelope.from) ?? { held: [], bytes: 0 };
    if (entry.held.length >= MAX_EARLY_REPLIES || entry.bytes + bytes > this.#options.maxEarlyReplyBytes) return false;
    entry.held.push({ envelope, bytes });
    entry.bytes += bytes;
    this.#earlyReplies.set(envelope.from, entry);
    return true;
  }

  #onEncrypted(envelope: Envelope, nowMs: number, frameBytes: number): void {
    const sid = envelope.sid!;
    const session = this.sessions.find(envelope.from, sid);
    const isRequest = isRequestType(envelope.msg_type);
    if (session === undefined) {
      if (!isRequest) {
        // A reply can overtake the step-2 envelope of its own session (reordering on a reconnect):
        // hold a few from a peer we are handshaking with and replay them when step 2 lands.
        if (this.#handshakes.has(envelope.from)) {
          if (this.#holdEarly(envelope, frameBytes)) return;
          this.#drop('early replies over budget');
          return;
        }
        this.#drop('encrypted reply or cancel for an unknown session');
        return;
      }
      // protocol §5 "no_session": a signed plaintext error, so the requester re-handshakes. Each
      // costs a signature: rationed per peer and in all.
      if (!this.#noSessionRate.allow(envelope.from, nowMs)) {
        this.#drop('no_session answer rate limited');
        return;
      }
      this.#sendSigned(
        this.#header(envelope.from, 'error', envelope.id, nowMs),
        errorJson({ code: 'no_session', message: 'no session for this sid; handshake again' }),
      );
      this.stats.noSessionSent += 1;
      return;
    }
    let plaintext: Uint8Array;
    try {
      plaintext = session.open(envelope);
    } catch {
      this.#drop(session.lastRefusal === 'authentication' ? 'decryption failed' : 'replayed counter');
      if (session.broken(this.sessions.limits)) this.sessions.remove(envelope.from, sid);
      return;
    }
    let payload: JsonValue | undefined;
    let payloadError = '';
    try {
      payload = parseIJson(plaintext, { maxBytes: this.#options.maxEnvelopeBytes });
    } catch (error) {
      payloadError = (error as Error).message;
    }
    if (isRequest) {
      // Requests travel on the session their sender initiated, i.e. one where we are responder.
      if (session.weInitiated) {
        this.#drop('request on a session we initiated');
        return;
      }
      if (payload === undefined) {
        this.#sealAndSend(
          session,
          this.#header(envelope.from, 'error', envelope.id, nowMs),
          errorJson({ code: 'bad_request', message: payloadError }),
        );
        return;
      }
      this.#onIncomingRequest(session, envelope, envelope.msg_type, payload, nowMs);
      return;
    }
    if (envelope.msg_type === 'cancel') {
      this.#onCancel(envelope, sid);
      return;
    }
    // A reply: it must answer a request of ours to this peer, on the session that carried it.
    const handle = envelope.in_reply_to === undefined ? undefined : this.#byWireId.get(envelope.in_reply_to);
    const o = handle === undefined ? undefined : this.#outstanding.get(handle);
    if (handle === undefined || o === undefined) {
      this.#drop('reply to no outstanding request'); // e.g. after our timeout: decrypted, then dropped
      return;
    }
    if (o.peer !== envelope.from || o.state !== 'sent' || o.sid !== sid) {
      this.#drop('reply on the wrong session');
      return;
    }
    if (o.cancelWhenSent) {
      this.#drop('reply to a cancelled request');
      return;
    }
    if (payload === undefined) {
      this.#failRequest(handle, fail('bad_request', `peer sent an invalid reply: ${payloadError}`));
      return;
    }
    let body: Body;
    try {
      body = parseBody(envelope.msg_type, payload);
    } catch (error) {
      this.#failRequest(handle, fail('bad_request', `peer sent an invalid reply: ${(error as Error).message}`));
      return;
    }
    this.#onReply(handle, body, nowMs, plaintext.length);
  }

  #onIncomingRequest(
    session: NoiseSession | undefined,
    envelope: Envelope,
    type: MsgType,
    payload: JsonValue,
    nowMs: number,
  ): void {
    // Answers on the request's session, or signed in plaintext for a plaintext peer (no session).
    const answerError = (error: ErrorReply) => {
      const header = this.#header(envelope.from, 'error', envelope.id, nowMs);
      if (session !== undefined) this.#sealAndSend(session, header, errorJson(error));
      else this.#sendSigned(header, errorJson(error));
    };
    let body: Body;
    try {
      body = parseBody(type, payload);
    } catch (error) {
      answerError({ code: 'bad_request', message: (error as Error).message });
      return;
    }
    if (body.msg_type !== 'request' && body.msg_type !== 'stream_request') {
      answerError({ code: 'bad_request', message: `${type} body is not a request` });
      return;
    }
    const request = body.body;
    if (this.#served.size >= this.#options.maxServedRequests) {
      answerError({ code: 'rate_limited', message: 'too many requests in progress', retryAfterMs: 1000 });
      return;
    }
    const key = servedKey(envelope.from, envelope.id);
    if (this.#served.has(key)) {
      this.#drop('duplicate request id');
      return;
    }
    // The deadline counts from receipt, not from the sender's clock (skew-proof, docs/protocol.md).
    const deadlineMs = request.timeout_ms === undefined ? undefined : nowMs + request.timeout_ms;
    const stream = type === 'stream_request';
    this.#served.set(key, { sid: session?.sid, stream, nextSeq: 0, deadlineMs });
    this.#events.push({
      type: 'incoming',
      from: envelope.from,
      id: envelope.id,
      stream,
      capability: request.capability,
      body: request.body,
      deadlineMs,
      encrypted: session !== undefined,
    });
  }

  /** Sends `cancel` for a request of ours that is being answered (on its session, or signed). */
  #sendCancel(o: Outstanding, nowMs: number): void {
    if (o.wireId === undefined) return;
    if (o.sid !== undefined) {
      const session = this.sessions.find(o.peer, o.sid);
      if (session !== undefined) this.#sealAndSend(session, this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
    } else {
      this.#sendSigned(this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
    }
  }

  #onReply(handle: RequestHandle, body: Body, nowMs: number, bytes: number): void {
    const o = this.#outstanding.get(handle)!;
    switch (body.msg_type) {
      case 'response':
        if (o.stream) {
          this.#failRequest(handle, fail('bad_request', 'peer answered a stream request with a plain response'));
          return;
        }
        this.#events.push({ type: 'response', handle, body: body.body.body, encrypted: o.sid !== undefined });
        this.#finish(handle);
        return;
      case 'error':
        this.#failRequest(handle, errorFromBody(body.body));
        return;
      case 'stream_chunk': {
        const chunk = body.body;
        if (!o.stream || chunk.seq < o.nextSeq || o.pendingChunks.has(chunk.seq)) {
          this.#drop('stream chunk out of place');
          return;
        }
        if (o.endSeq !== undefined && chunk.seq >= o.endSeq) {
          this.#failRequest(handle, fail('bad_request', 'stream chunks beyond the announced end'));
          return;
        }
        o.pendingChunks.set(chunk.seq, { body: chunk.body, bytes });
        o.pendingChunkBytes += bytes;
        let problem: string | undefined;
        if (o.pendingChunks.size > this.#options.maxPendingChunks) {
          problem = `more than ${this.#options.maxPendingChunks} stream chunks pending reordering`;
        } else if (o.pendingChunkBytes > this.#options.maxPendingChunkBytes) {
          problem = `more than ${this.#options.maxPendingChunkBytes} bytes of stream chunks pending reordering`;
        }
        if (problem !== undefined) {
          // protocol §5: too much waiting for a gap to fill: fail locally and tell the peer.
          this.#sendCancel(o, nowMs);
          this.#failRequest(handle, fail('internal', problem));
          return;
        }
        this.#deliverChunks(handle);
        return;
      }
      case 'stream_end':
        if (!o.stream || body.body.seq < o.nextSeq) {
          this.#failRequest(handle, fail('bad_request', 'stream_end does not match the chunks received'));
          return;
        }
        o.endSeq = body.body.seq;
        this.#deliverChunks(handle);
        return;
      default:
        this.#drop('unexpected reply type');
    }
  }

  #deliverChunks(handle: RequestHandle): void {
    const o = this.#outstanding.get(handle)!;
    for (;;) {
      const next = o.pendingChunks.get(o.nextSeq);
      if (next === undefined) break;
      o.pendingChunks.delete(o.nextSeq);
      o.pendingChunkBytes -= next.bytes;
      this.#events.push({ type: 'chunk', handle, seq: o.nextSeq, body: next.body, bytes: next.bytes });
      o.nextSeq += 1;
    }
    if (o.endSeq !== undefined && o.nextSeq === o.endSeq) {
      if (o.pendingChunks.size > 0) {
        this.#failRequest(handle, fail('bad_request', 'stream chunks beyond the announced end'));
        return;
      }
      this.#events.push({ type: 'stream_end', handle });
      this.#finish(handle);
    }
  }

  /** A cancel counts only on the session that carried its request (undefined: a plaintext request). */
  #onCancel(envelope: Envelope, sid: string | undefined): void {
    const key = envelope.in_reply_to === undefined ? undefined : servedKey(envelope.from, envelope.in_reply_to);
    const served = key === undefined ? undefined : this.#served.get(key);
    if (key === undefined || served === undefined || served.sid !== sid) {
      this.#drop('cancel for no request served on this session');
      return;
    }
    this.#served.delete(key);
    this.#events.push({ type: 'peer_cancelled', from: envelope.from, id: envelope.in_reply_to! });
  }

  #onPlaintextFromPeer(envelope: Envelope, nowMs: number, frameBytes: number): void {
    const type = envelope.msg_type;
    if (isRequestType(type)) {
      this.#onIncomingRequest(undefined, envelope, type, envelope.payload, nowMs);
      return;
    }
    if (envelope.in_reply_to === undefined) {
      this.#drop('plaintext envelope without in_reply_to');
      return;
    }
    if (type === 'cancel') {
      this.#onCancel(envelope, undefined);
      return;
    }
    const handle = this.#byWireId.get(envelope.in_reply_to);
    const o = handle === undefined ? undefined : this.#outstanding.get(handle);
    if (handle === undefined || o === undefined) {
      if (type === 'error') {
        this.#onPlaintextError(envelope, nowMs); // perhaps the answer to a step 1 of ours
        return;
      }
      this.#drop('reply to no outstanding request');
      return;
    }
    if (o.peer !== envelope.from || o.state !== 'sent' || o.sid !== undefined) {
      // A no_session error for an encrypted request is handled below like any peer's.
      if (type === 'error') {
        this.#onPlaintextError(envelope, nowMs);
        return;
      }
      this.#drop('plaintext reply to an encrypted request');
      return;
    }
    let body: Body;
    try {
      body = parseBody(type, envelope.payload);
    } catch (error) {
      this.#failRequest(handle, fail('bad_request', `peer sent an invalid reply: ${(error as Error).message}`));
      return;
    }
    this.#onReply(handle, body, nowMs, frameBytes);
  }

  #onPlaintext(envelope: Envelope, nowMs: number, frameBytes: number): void {
    if (this.isPlaintextPeer(envelope.from)) {
      this.#onPlaintextFromPeer(envelope, nowMs, frameBytes);
      return;
    }
    // Signed plaintext errors answering our own outstanding request are always accepted (§5).
    if (envelope.msg_type !== 'error' || envelope.in_reply_to === undefined) {
      this.#drop('plaintext envelope from a peer not configured for plaintext');
      return;
    }
    this.#onPlaintextError(envelope, nowMs);
  }

  /** The body of a plaintext error envelope, or undefined (dropped) when it does not parse. */
  #plaintextErrorBody(envelope: Envelope): Body | undefined {
    try {
      return parseBody('error', envelope.payload);
    } catch {
      this.#drop('plaintext error with an invalid body');
      return undefined;
    }
  }

  #onPlaintextError(envelope: Envelope, nowMs: number): void {
    const inReplyTo = envelope.in_reply_to!;
    const handle = this.#byWireId.get(inReplyTo);
    const step1Peer = handle === undefined ? this.#handshakeByStep1.get(inReplyTo) : undefined;
    if (step1Peer !== undefined && step1Peer === envelope.from) {
      // The peer refused a step 1 that carried no request: as an undeliverable one, every request
      // waiting on it fails with the peer's error.
      const body = this.#plaintextErrorBody(envelope);
      if (body?.msg_type === 'error') this.#failWaiting(step1Peer, errorFromBody(body.body));
      return;
    }
    const o = handle === undefined ? undefined : this.#outstanding.get(handle);
    if (handle === undefined || o === undefined || o.peer !== envelope.from) {
      this.#drop('plaintext error for no outstanding request');
      return;
    }
    const body = this.#plaintextErrorBody(envelope);
    if (body?.msg_type !== 'error') return;
    if (o.cancelWhenSent) {
      this.#finish(handle);
      return;
    }
    if (body.body.code === 'no_session' && o.state === 'sent') {
      // The peer lost our session (e.g. it restarted): drop it, handshake again, retry once with a
      // new envelope id (protocol §5) — but only while nothing of the reply has arrived: a stream
      // that has started cannot be resumed, and running it again would splice two runs into one.
      if (o.sid !== undefined) this.sessions.remove(o.peer, o.sid);
      const untouched = o.nextSeq === 0 && o.pendingChunks.size === 0 && o.endSeq === undefined;
      if (!o.retried && untouched) {
        o.retried = true;
        this.stats.retries += 1;
        this.#dispatch(handle, nowMs);
        return;
      }
      if (!untouched) {
        this.#failRequest(handle, fail('no_session', 'the peer lost the session after part of the stream had arrived; not retried'));
        return;
      }
    }
    this.#failRequest(handle, errorFromBody(body.body));
  }

  // ---- replying to requests we serve ----

  #rememberReply(id: string, reply: SentReply): void {
    if (this.#sentReplies.size >= MAX_SENT_REPLIES) {
      const oldest = this.#sentReplies.keys().next().value;
      if (oldest !== undefined) this.#sentReplies.delete(oldest);
    }
    this.#sentReplies.set(id, reply);
  }

  #reply(to: string, requestId: string, type: MsgType, body: JsonValue, ends: boolean, nowMs: number): void {
    const invalid = jsonProblem(body);
    if (invalid !== undefined) throw fail('bad_request', `the reply is not JSON: ${invalid}`);
    const key = servedKey(to, requestId);
    const served = this.#served.get(key);
    if (served === undefined) {
      throw fail('cancelled', 'no such request in progress (finished, cancelled or timed out)');
    }
    if (served.deadlineMs !== undefined && nowMs >= served.deadlineMs) {
      // After timeout_ms a responder sends nothing more (protocol §5).
      this.#served.delete(key);
      throw fail('timeout', "the caller's timeout has passed");
    }
    let session: NoiseSession | undefined;
    if (served.sid !== undefined) {
      session = this.sessions.find(to, served.sid);
      if (session === undefined) {
        this.#served.delete(key);
        throw fail('unreachable', 'the session that carried the request is gone');
      }
    }
    // On the request's session, or signed in plaintext for a plaintext peer.
    const send = (what: MsgType, payload: JsonValue): boolean => {
      const header = this.#header(to, what, requestId, nowMs);
      const sent = session !== undefined ? this.#sealAndSend(session, header, payload) : this.#sendSigned(header, payload);
      if (sent) this.#rememberReply(header.id, { to, requestId, sid: served.sid, type: what, deadlineMs: served.deadlineMs });
      return sent;
    };
    if (!send(type, body)) {
      // Too large for one envelope: the caller gets too_large rather than waiting for its timeout.
      const message = 'the reply does not fit in one envelope (max_envelope_bytes)';
      send('error', errorJson({ code: 'too_large', message }));
      this.#served.delete(key);
      throw fail('too_large', message);
    }
    if (ends) this.#served.delete(key);
  }

  /** Answers an incoming unary request. Throws MeshError (cancelled, timeout, bad_request, too_large, ...). */
  respond(to: string, requestId: string, body: JsonValue, nowMs: number): void {
    if (this.#served.get(servedKey(to, requestId))?.stream === true) {
      throw fail('bad_request', 'a stream request is answered with chunks and endStream');
    }
    this.#reply(to, requestId, 'response', responseBody(body), true, nowMs);
  }

  respondError(
    to: string,
    requestId: string,
    code: MeshErrorCode,
    message: string,
    nowMs: number,
    retryAfterMs?: number,
  ): void {
    this.#reply(to, requestId, 'error', errorBody(code, message, retryAfterMs), true, nowMs);
  }

  sendChunk(to: string, requestId: string, body: JsonValue, nowMs: number): void {
    const served = this.#served.get(servedKey(to, requestId));
    if (served !== undefined && !served.stream) throw fail('bad_request', 'only a stream request is answered with chunks');
    const seq = served?.nextSeq ?? 0;
    this.#reply(to, requestId, 'stream_chunk', chunkBody(seq, body), false, nowMs);
    served!.nextSeq += 1;
  }

  endStream(to: string, requestId: string, nowMs: number): void {
    const served = this.#served.get(servedKey(to, requestId));
    if (served !== undefined && !served.stream) throw fail('bad_request', 'only a stream request is ended with endStream');
    this.#reply(to, requestId, 'stream_end', endBody(served?.nextSeq ?? 0), true, nowMs);
  }

  /** Whether a request we serve is still in progress (not finished, cancelled or past its deadline). */
  isServing(from: string, requestId: string, nowMs: number): boolean {
    const served = this.#served.get(servedKey(from, requestId));
    return served !== undefined && (served.deadlineMs === undefined || nowMs < served.deadlineMs);
  }

  /** Forgets a request we serve without answering (the handler was told to stop). */
  forgetServed(from: string, requestId: string): void {
    this.#served.delete(servedKey(from, requestId));
  }

  // ---- time ----

  /** Timeouts and lifetimes; call at nextDeadline() at the latest. */
  tick(nowMs: number): void {
    try {
      this.#tick(nowMs);
    } finally {
      this.#settle(nowMs);
    }
  }

  #tick(nowMs: number): void {
    // Every expired request first, so that no new handshake is started for one about to expire.
    const expired = [...this.#outstanding.entries()]
      .filter(([, o]) => nowMs >= o.deadlineMs)
      .map(([handle]) => handle)
      .sort((a, b) => a - b);
    for (const handle of expired) {
      const o = this.#outstanding.get(handle);
      if (o === undefined) continue;
      if (o.cancelWhenSent) this.#finish(handle);
      else this.#failRequest(handle, fail('timeout', 'no reply within the timeout'));
    }
    // A pending handshake lives only while a request relies on it, and never past the longest
    // deadline of those (a stuck handshake must not block its peer).
    // (#finish abandons it with its starter, which is either carried or first in the queue, so a
    // handshake with a live starter is relied on; this is the backstop.)
    for (const [peer, handshake] of [...this.#handshakes]) {
      if (!this.#outstanding.has(handshake.starter) || nowMs >= handshake.expiresMs) this.#abandonHandshake(peer);
    }
    for (const [key, served] of this.#served) {
      if (served.deadlineMs !== undefined && nowMs >= served.deadlineMs) this.#served.delete(key);
    }
    for (const [id, reply] of this.#sentReplies) {
      if (reply.deadlineMs !== undefined && nowMs >= reply.deadlineMs) this.#sentReplies.delete(id);
    }
    this.sessions.expire(nowMs);
    this.#memory.expire(nowMs);
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const o of this.#outstanding.values()) if (next === undefined || o.deadlineMs < next) next = o.deadlineMs;
    for (const served of this.#served.values()) {
      if (served.deadlineMs !== undefined && (next === undefined || served.deadlineMs < next)) next = served.deadlineMs;
    }
    for (const handshake of this.#handshakes.values()) {
      if (next === undefined || handshake.expiresMs < next) next = handshake.expiresMs;
    }
    return next;
  }
}
