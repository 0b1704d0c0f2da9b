// Endpoint: the sans-IO protocol engine of one agent (protocol §3–§5), the TypeScript port of the C++
// core's `Endpoint`. It turns the application's requests and replies into envelope frames and
// received frames into events, and owns the sessions, handshakes, replay protection, retries,
// timeouts and stream reassembly in between. No sockets, no clocks: the caller feeds frames and the
// time, and sends what takeOutgoing() returns through its relay connection (relay_link.ts).
//
// Decisions are the C++ core's (docs/protocol.md "Endpoint engine"): the responder's deadline counts
// from receipt; the requester sends its remaining time; cold requests ride in message 1 with
// timeout_ms always set; early replies are held (≤ 32 per peer) until step 2; a handshake is
// abandoned with the request that started it; no_session is retried once with a new envelope id.
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
import { MeshError, type MeshErrorCode } from './errors.js';
import { type Identity, isValidAgentId } from './identity.js';
import { type JsonObject, type JsonValue, parseIJson } from './ijson.js';
import { canonicalBytes, canonicalize } from './jcs.js';
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

export interface EndpointOptions {
  sessions?: Partial<SessionLimits>;
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
  /** Requests of ours in flight; past it requests fail with rate_limited. */
  maxOutstandingRequests?: number;
  /** Requests we serve at once; past it they are answered rate_limited. */
  maxServedRequests?: number;
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

export interface EndpointStats {
  handshakesStarted: number;
  handshakesAccepted: number;
  handshakesCompleted: number;
  noSessionSent: number;
  retries: number;
  /** Frames dropped without an answer, by reason (protocol §5 "Invalid input"). */
  dropped: Map<string, number>;
}

type RequestState = 'queued' | 'in_handshake' | 'sent';

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
  pendingChunks: Map<number, JsonValue>;
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

const DEFAULTS = {
  maxAgeMs: 10 * 60 * 1000,
  maxFutureMs: 2 * 60 * 1000,
  maxEnvelopeBytes: 1024 * 1024,
  defaultTimeoutMs: 30_000,
  maxPendingChunks: 256,
  maxOutstandingRequests: 65536,
  maxServedRequests: 65536,
};
const MAX_EARLY_REPLIES = 32;

function servedKey(from: string, id: string): string {
  return `${from} ${id}`;
}

function fail(code: MeshErrorCode, message: string, retryAfterMs?: number): MeshError {
  return new MeshError(code, message, retryAfterMs === undefined ? undefined : { retryAfterMs });
}

/** Why `value` has no JSON form (undefined, NaN, a function, a cycle…), or undefined if it has one. */
function jsonProblem(value: JsonValue): string | undefined {
  try {
    canonicalize(value);
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

export class Endpoint {
  readonly identity: Identity;
  readonly sessions: SessionTable;
  readonly stats: EndpointStats = {
    handshakesStarted: 0,
    handshakesAccepted: 0,
    handshakesCompleted: 0,
    noSessionSent: 0,
    retries: 0,
    dropped: new Map(),
  };
  readonly #options: typeof DEFAULTS;
  readonly #plaintextPeers: ReadonlySet<string>;
  readonly #newId: () => string;
  readonly #memory: SignedEnvelopeMemory;
  #nextHandle = 1;
  readonly #outstanding = new Map<RequestHandle, Outstanding>();
  readonly #byWireId = new Map<string, RequestHandle>();
  /** Requests waiting for a peer's handshake (single flight), and which request started it. */
  readonly #waiting = new Map<string, RequestHandle[]>();
  readonly #handshakeStarter = new Map<string, RequestHandle>();
  readonly #served = new Map<string, Served>();
  /** Encrypted replies that arrived before the step-2 envelope of their session (bounded). */
  readonly #earlyReplies = new Map<string, Envelope[]>();
  #outgoing: OutgoingFrame[] = [];
  #events: EndpointEvent[] = [];

  constructor(identity: Identity, options: EndpointOptions = {}) {
    this.identity = identity;
    this.#options = {
      maxAgeMs: options.maxAgeMs ?? DEFAULTS.maxAgeMs,
      maxFutureMs: options.maxFutureMs ?? DEFAULTS.maxFutureMs,
      maxEnvelopeBytes: options.maxEnvelopeBytes ?? DEFAULTS.maxEnvelopeBytes,
      defaultTimeoutMs: options.defaultTimeoutMs ?? DEFAULTS.defaultTimeoutMs,
      maxPendingChunks: options.maxPendingChunks ?? DEFAULTS.maxPendingChunks,
      maxOutstandingRequests: options.maxOutstandingRequests ?? DEFAULTS.maxOutstandingRequests,
      maxServedRequests: options.maxServedRequests ?? DEFAULTS.maxServedRequests,
    };
    this.sessions = new SessionTable(options.sessions);
    this.#plaintextPeers = new Set(options.plaintextPeers ?? []);
    this.#newId = options.newId ?? newUuidV4;
    this.#memory = new SignedEnvelopeMemory({ maxAgeMs: this.#options.maxAgeMs });
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

  #drop(reason: string): void {
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

  #sendSigned(header: EnvelopeHeader, payload: JsonValue): boolean {
    const envelope = signEnvelope({ ...header, payload }, this.identity);
    return this.#queueFrame(envelope.to, envelope.id, serializeEnvelope(envelope));
  }

  /** false: not sent (sealing failed or the frame is too large; a request of ours is failed). */
  #sealAndSend(session: NoiseSession, header: EnvelopeHeader, body: JsonValue): boolean {
    let envelope: Envelope;
    try {
      envelope = session.seal(header, canonicalBytes(body));
    } catch (error) {
      session.retire(header.timestamp);
      const handle = this.#byWireId.get(header.id);
      if (handle !== undefined) this.#failRequest(handle, error instanceof MeshError ? error : fail('internal', String(error)));
      return false;
    }
    return this.#queueFrame(envelope.to, envelope.id, serializeEnvelope(envelope));
  }

  // ---- requests of ours ----

  /** Starts a request; its outcome arrives as events carrying the returned handle. */
  request(
    to: string,
    capability: string,
    body: JsonValue,
    options: { stream?: boolean; timeoutMs?: number | undefined },
    nowMs: number,
  ): RequestHandle {
    const handle = this.#nextHandle++;
    if (this.#outstanding.size >= this.#options.maxOutstandingRequests) {
      this.#events.push({ type: 'failure', handle, error: fail('rate_limited', 'too many requests in flight') });
      return handle;
    }
    if (!isCapabilityName(capability)) {
      this.#events.push({ type: 'failure', handle, error: fail('bad_request', 'capability names match [A-Za-z0-9_-]{1,54}') });
      return handle;
    }
    if (!isValidAgentId(to)) {
      this.#events.push({ type: 'failure', handle, error: fail('bad_request', 'the target is not a valid agent ID (43 base64url characters of an Ed25519 key)') });
      return handle;
    }
    const invalid = jsonProblem(body);
    if (invalid !== undefined) {
      this.#events.push({ type: 'failure', handle, error: fail('bad_request', `the request body is not JSON: ${invalid}`) });
      return handle;
    }
    if (options.timeoutMs !== undefined && !(options.timeoutMs > 0)) {
      this.#events.push({ type: 'failure', handle, error: fail('bad_request', 'timeoutMs must be a positive number of milliseconds') });
      return handle;
    }
    const timeoutMs = options.timeoutMs ?? this.#options.defaultTimeoutMs;
    this.#outstanding.set(handle, {
      peer: to,
      capability,
      body,
      stream: options.stream === true,
      deadlineMs: nowMs + Math.max(1, Math.floor(timeoutMs)),
      wireId: undefined,
      state: 'queued',
      sid: undefined,
      retried: false,
      cancelWhenSent: false,
      nextSeq: 0,
      pendingChunks: new Map(),
      endSeq: undefined,
      encrypted: !this.isPlaintextPeer(to),
    });
    this.#dispatch(handle, nowMs);
    return handle;
  }

  #dispatch(handle: RequestHandle, nowMs: number): void {
    const o = this.#outstanding.get(handle);
    if (o === undefined) return;
    if (o.wireId !== undefined) this.#byWireId.delete(o.wireId);
    o.sid = undefined;
    const type: MsgType = o.stream ? 'stream_request' : 'request';
    const remaining = Math.max(1, o.deadlineMs - nowMs);
    if (this.isPlaintextPeer(o.peer)) {
      const header = this.#header(o.peer, type, undefined, nowMs);
      o.wireId = header.id;
      o.state = 'sent';
      this.#byWireId.set(header.id, handle);
      this.#sendSigned(header, requestBody(o.capability, o.body, remaining));
      return;
    }
    const session = this.sessions.sessionForNewRequests(o.peer, nowMs);
    if (session !== undefined) {
      const header = this.#header(o.peer, type, undefined, nowMs);
      o.wireId = header.id;
      o.state = 'sent';
      o.sid = session.sid;
      this.#byWireId.set(header.id, handle);
      this.#sealAndSend(session, header, requestBody(o.capability, o.body, remaining));
      return;
    }
    o.state = 'queued';
    const queue = this.#waiting.get(o.peer);
    if (queue === undefined) this.#waiting.set(o.peer, [handle]);
    else queue.push(handle);
    if (this.sessions.pending(o.peer) === undefined) this.#startHandshakeFor(o.peer, nowMs);
  }

  #startHandshakeFor(peer: string, nowMs: number): void {
    const queue = this.#waiting.get(peer);
    const first = queue?.[0];
    if (queue === undefined || first === undefined) return;
    // Single flight (protocol §5): one handshake per peer; the first waiting request rides in
    // message 1 if it fits, the rest are sealed once message 2 arrives.
    const o = this.#outstanding.get(first)!;
    const step1Id = this.#newId();
    let payload = message1Bytes(o.stream, o.capability, o.body, Math.max(1, o.deadlineMs - nowMs));
    const carried = payload.length <= MESSAGE1_MAX_PAYLOAD;
    if (!carried) payload = new Uint8Array(0);
    let started: ReturnType<typeof startHandshake>;
    try {
      started = startHandshake(this.identity, peer, payload, step1Id, nowMs);
    } catch (error) {
      this.#failRequest(first, error instanceof MeshError ? error : fail('internal', String(error)));
      return;
    }
    this.stats.handshakesStarted += 1;
    const frame = serializeEnvelope(started.step1);
    if (frame.length > this.#options.maxEnvelopeBytes) {
      this.#failRequest(first, fail('too_large', 'handshake envelope exceeds max_envelope_bytes'));
      return;
    }
    if (carried) {
      queue.shift();
      if (queue.length === 0) this.#waiting.delete(peer);
      if (o.wireId !== undefined) this.#byWireId.delete(o.wireId);
      o.wireId = step1Id;
      o.state = 'in_handshake';
      this.#byWireId.set(step1Id, first);
    }
    this.#handshakeStarter.set(peer, first);
    this.sessions.addPending(started.pending);
    this.#outgoing.push({ to: peer, id: step1Id, frame });
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
  }

  #failRequest(handle: RequestHandle, error: MeshError): void {
    if (!this.#outstanding.has(handle)) return;
    this.#events.push({ type: 'failure', handle, error });
    this.#finish(handle);
  }

  /** Cancels a request of ours: reports failure(cancelled) at once and tells the peer. */
  cancel(handle: RequestHandle, nowMs: number, message = 'cancelled by the caller'): void {
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
   * The relay could not deliver the envelope `envelopeId` (its `undeliverable` frame, protocol §6):
   * the request that sent it fails with `code` (a handshake it started is abandoned and the requests
   * waiting on it start a new one). Unknown IDs are ignored.
   */
  undeliverable(envelopeId: string, code: MeshErrorCode, retryAfterMs: number | undefined, nowMs: number): void {
    const handle = this.#byWireId.get(envelopeId);
    if (handle === undefined) return;
    const o = this.#outstanding.get(handle);
    if (o === undefined) return;
    const peer = o.peer;
    if (o.cancelWhenSent) {
      this.#finish(handle);
    } else {
      this.#failRequest(handle, fail(code, `the relay could not deliver the request: ${code}`, retryAfterMs));
    }
    this.#abandonHandshakeIfStartedBy(handle, peer, nowMs);
  }

  #abandonHandshakeIfStartedBy(handle: RequestHandle, peer: string, nowMs: number): void {
    // The initiator abandons a handshake when the request that started it ends (§5); the requests
    // still waiting start a new one.
    if (this.#handshakeStarter.get(peer) !== handle) return;
    this.#handshakeStarter.delete(peer);
    this.sessions.removePending(peer);
    this.#earlyReplies.delete(peer);
    this.#startHandshakeFor(peer, nowMs);
  }

  // ---- receiving ----

  /** A frame from the relay. Invalid input is dropped and counted (stats.dropped), never thrown. */
  receive(frame: string, nowMs: number): void {
    let envelope: Envelope;
    try {
      // parse, `to`, then for signed envelopes freshness, signature and the replay memory.
      envelope = receiveEnvelope(frame, this.id, nowMs, this.#memory, {
        maxBytes: this.#options.maxEnvelopeBytes,
        maxAgeMs: this.#options.maxAgeMs,
        maxFutureMs: this.#options.maxFutureMs,
      }).envelope;
    } catch (error) {
      this.#drop(`invalid envelope: ${error instanceof MeshError ? error.code : 'internal'}`);
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
        this.#onEncrypted(envelope, nowMs);
      } else {
        this.#onPlaintext(envelope, nowMs);
      }
    } catch (error) {
      // Nothing above should throw on hostile input; count it rather than take the caller down.
      this.#drop(`internal: ${error instanceof Error ? error.message : String(error)}`);
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
    const pending = this.sessions.pendingByStep1(envelope.in_reply_to);
    if (pending === undefined || pending.peer !== envelope.from) {
      this.#drop('handshake step 2 for no pending handshake');
      return;
    }
    const peer = pending.peer;
    const step1Id = pending.step1Id;
    let session: NoiseSession | undefined;
    let problem = '';
    try {
      session = finishHandshake(pending, envelope, nowMs);
    } catch (error) {
      problem = (error as Error).message;
    }
    this.sessions.removePending(peer);
    this.#handshakeStarter.delete(peer);
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
      this.#startHandshakeFor(peer, nowMs);
      return;
    }
    this.stats.handshakesCompleted += 1;
    const established = this.sessions.add(session, nowMs);
    const early = this.#earlyReplies.get(peer) ?? [];
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
    for (const held of early) this.#onEncrypted(held, nowMs);
    const queue = this.#waiting.get(peer);
    if (queue === undefined) return;
    this.#waiting.delete(peer);
    for (const handle of queue) {
      if (this.#outstanding.has(handle)) this.#dispatch(handle, nowMs);
    }
  }

  #onEncrypted(envelope: Envelope, nowMs: number): void {
    const sid = envelope.sid!;
    const session = this.sessions.find(envelope.from, sid);
    const isRequest = isRequestType(envelope.msg_type);
    if (session === undefined) {
      if (!isRequest) {
        // A reply can overtake the step-2 envelope of its own session (reordering on a reconnect):
        // hold a few from a peer we are handshaking with and replay them when step 2 lands.
        if (this.sessions.pending(envelope.from) !== undefined) {
          const held = this.#earlyReplies.get(envelope.from) ?? [];
          if (held.length < MAX_EARLY_REPLIES) {
            held.push(envelope);
            this.#earlyReplies.set(envelope.from, held);
            return;
          }
        }
        this.#drop('encrypted reply or cancel for an unknown session');
        return;
      }
      // protocol §5 "no_session": a signed plaintext error, so the requester re-handshakes.
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
    this.#onReply(handle, body, nowMs);
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

  #onReply(handle: RequestHandle, body: Body, nowMs: number): void {
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
        o.pendingChunks.set(chunk.seq, chunk.body);
        if (o.pendingChunks.size > this.#options.maxPendingChunks) {
          // protocol §5: too many chunks waiting for a gap to fill: fail locally and tell the peer.
          const session = o.sid === undefined ? undefined : this.sessions.find(o.peer, o.sid);
          if (session !== undefined && o.wireId !== undefined) {
            this.#sealAndSend(session, this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
          } else if (o.sid === undefined && o.wireId !== undefined) {
            this.#sendSigned(this.#header(o.peer, 'cancel', o.wireId, nowMs), {});
          }
          this.#failRequest(handle, fail('internal', `more than ${this.#options.maxPendingChunks} stream chunks pending reordering`));
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
      if (next === undefined && !o.pendingChunks.has(o.nextSeq)) break;
      o.pendingChunks.delete(o.nextSeq);
      this.#events.push({ type: 'chunk', handle, seq: o.nextSeq, body: next as JsonValue });
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

  #onPlaintextFromPeer(envelope: Envelope, nowMs: number): void {
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
    this.#onReply(handle, body, nowMs);
  }

  #onPlaintext(envelope: Envelope, nowMs: number): void {
    if (this.isPlaintextPeer(envelope.from)) {
      this.#onPlaintextFromPeer(envelope, nowMs);
      return;
    }
    // Signed plaintext errors answering our own outstanding request are always accepted (§5).
    if (envelope.msg_type !== 'error' || envelope.in_reply_to === undefined) {
      this.#drop('plaintext envelope from a peer not configured for plaintext');
      return;
    }
    this.#onPlaintextError(envelope, nowMs);
  }

  #onPlaintextError(envelope: Envelope, nowMs: number): void {
    const handle = this.#byWireId.get(envelope.in_reply_to!);
    const o = handle === undefined ? undefined : this.#outstanding.get(handle);
    if (handle === undefined || o === undefined || o.peer !== envelope.from) {
      this.#drop('plaintext error for no outstanding request');
      return;
    }
    let body: Body;
    try {
      body = parseBody('error', envelope.payload);
    } catch {
      this.#drop('plaintext error with an invalid body');
      return;
    }
    if (body.msg_type !== 'error') return;
    if (o.cancelWhenSent) {
      this.#finish(handle);
      return;
    }
    if (body.body.code === 'no_session' && o.state === 'sent') {
      // The peer lost our session (e.g. it restarted): drop it, handshake again, retry once with a
      // new envelope id (protocol §5).
      if (o.sid !== undefined) this.sessions.remove(o.peer, o.sid);
      if (!o.retried) {
        o.retried = true;
        this.stats.retries += 1;
        this.#dispatch(handle, nowMs);
        return;
      }
    }
    this.#failRequest(handle, errorFromBody(body.body));
  }

  // ---- replying to requests we serve ----

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
      return session !== undefined ? this.#sealAndSend(session, header, payload) : this.#sendSigned(header, payload);
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
    const expired = [...this.#outstanding.entries()]
      .filter(([, o]) => nowMs >= o.deadlineMs)
      .map(([handle]) => handle)
      .sort((a, b) => a - b);
    for (const handle of expired) {
      const o = this.#outstanding.get(handle);
      if (o === undefined) continue;
      const peer = o.peer;
      if (o.cancelWhenSent) this.#finish(handle);
      else this.#failRequest(handle, fail('timeout', 'no reply within the timeout'));
      this.#abandonHandshakeIfStartedBy(handle, peer, nowMs);
    }
    for (const [key, served] of this.#served) {
      if (served.deadlineMs !== undefined && nowMs >= served.deadlineMs) this.#served.delete(key);
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
    return next;
  }
}
