// End-to-end sessions between agents (protocol §5): Noise IK over identity-derived static keys,
// carried in signed handshake envelopes, then transport messages with explicit counters and the
// envelope header as associated data. Pure: envelopes and time in, envelopes and decisions out.
//
//   ReplayWindow      received counters, WireGuard style (4,096 bits as 64 words of 64, as the C++ core)
//   NoiseSession      one established session: seal/open transport envelopes, failure count, lifetime
//   startHandshake / acceptHandshake / finishHandshake
//                     the two handshake steps as envelopes
//   SessionTable      every session and pending handshake of one agent, by peer
import { decodeBase64url, encodeBase64url } from './base64url.js';
import { equalBytes, utf8Encode } from './bytes.js';
import { type Envelope, envelopeAd, parseHandshakePayload, signEnvelope } from './envelope.js';
import { MeshError } from './errors.js';
import { type Identity, x25519PublicOfAgentId } from './identity.js';
import type { JsonObject } from './ijson.js';
import {
  type DhKeyPair,
  HandshakeState,
  MAX_MESSAGE_BYTES,
  MAX_PLAINTEXT_BYTES,
  TAG_BYTES,
  type TransportKeys,
  dhKeyPairFromSecret,
} from './noise.js';

/** Limits of protocol §5, each configurable (tests shorten them). */
export interface SessionLimits {
  /** After this many envelopes (both directions) the initiator hands new requests to a new session. */
  maxEnvelopes: number;
  /** ... or after this age. */
  maxAgeMs: number;
  /** A retired session still serves replies and cancels in flight for this long. */
  retireGraceMs: number;
  /** A responder keeps at most this many sessions per peer (the oldest goes). */
  maxResponderSessionsPerPeer: number;
  /** Bound on all sessions of one agent; the oldest goes first (default 4,096: browser-sized; the C++ core keeps 65,536). */
  maxSessionsTotal: number;
  /** This many consecutive decryption failures drop a session. */
  maxConsecutiveFailures: number;
}

export const DEFAULT_SESSION_LIMITS: Readonly<SessionLimits> = Object.freeze({
  maxEnvelopes: 2 ** 20,
  maxAgeMs: 24 * 60 * 60 * 1000,
  retireGraceMs: 10 * 60 * 1000,
  maxResponderSessionsPerPeer: 8,
  maxSessionsTotal: 4096,
  maxConsecutiveFailures: 16,
});

export const NOISE_PROLOGUE = 'agent-mesh/v1';
/** Message 1 holds at most 65,439 payload bytes: 65,535 − 32 (e) − 48 (encrypted s) − 16 (tag). */
export const MESSAGE1_MAX_PAYLOAD = 65439;
/** Counters are at most 2^53 − 1 (protocol §5). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;
/** A transport payload is split every 65,535 ciphertext bytes (65,519 plaintext bytes). */
export const PIECE_MAX_CIPHERTEXT = MAX_MESSAGE_BYTES;
export const PIECE_MAX_PLAINTEXT = MAX_PLAINTEXT_BYTES;
const SID_BYTES = 16;

export { parseHandshakePayload };

const prologueBytes = utf8Encode(NOISE_PROLOGUE);

// ---- replay window ----

export type ReplayVerdict = 'fresh' | 'replayed' | 'too_old';

const REPLAY_WINDOW_BITS = 4096;
/** The C++ core's geometry (src/core/replay_window.cpp): 64 words of 64 bits. */
const WORD_BITS = 64;
const WORDS = REPLAY_WINDOW_BITS / WORD_BITS;

/**
 * Sliding window of received counters (protocol §5, WireGuard style): accepts each counter once,
 * in any order, as long as it is within the window behind the highest seen. 4,096 bits kept as
 * 64 words of 64 — the C++ core's geometry, so both give the same verdict for every counter: a
 * counter whose word the ring has recycled is too old, so the window always covers at least 4,033
 * counters behind the highest (§5 asks ≥ 2048). Each 64-bit word is two 32-bit halves here. The
 * caller checks first and marks only after the tag verified, so a forged counter never moves the
 * window.
 */
export class ReplayWindow {
  static readonly BITS = REPLAY_WINDOW_BITS;
  static readonly WORD_BITS = WORD_BITS;
  /** Word w's low 32 bits at [2w], high 32 bits at [2w + 1]. */
  readonly #halves = new Uint32Array(WORDS * 2);
  #highest = 0;
  #any = false;

  get highest(): number | undefined {
    return this.#any ? this.#highest : undefined;
  }

  check(counter: number): ReplayVerdict {
    if (!this.#any || counter > this.#highest) return 'fresh';
    if (Math.floor(this.#highest / WORD_BITS) - Math.floor(counter / WORD_BITS) >= WORDS) return 'too_old';
    return this.#bit(counter) ? 'replayed' : 'fresh';
  }

  /** Precondition: check(counter) === 'fresh'. */
  mark(counter: number): void {
    if (!this.#any || counter > this.#highest) {
      // Clear the words the window slides over; a jump of a whole window or more clears everything.
      const lastNew = Math.floor(counter / WORD_BITS);
      const lastOld = Math.floor(this.#highest / WORD_BITS);
      if (!this.#any || lastNew - lastOld >= WORDS) {
        this.#halves.fill(0);
      } else {
        for (let w = lastOld + 1; w <= lastNew; w++) {
          const slot = (w % WORDS) * 2;
          this.#halves[slot] = 0;
          this.#halves[slot + 1] = 0;
        }
      }
      this.#highest = counter;
      this.#any = true;
    }
    const index = this.#index(counter);
    this.#halves[index] = (this.#halves[index]! | (1 << counter % 32)) >>> 0;
  }

  /** The 32-bit half holding `counter`'s bit. */
  #index(counter: number): number {
    const word = Math.floor(counter / WORD_BITS) % WORDS;
    return word * 2 + (counter % WORD_BITS >= 32 ? 1 : 0);
  }

  #bit(counter: number): boolean {
    return ((this.#halves[this.#index(counter)]! >>> counter % 32) & 1) === 1;
  }
}

// ---- sessions ----

/** The session ID of a handshake: base64url of its hash's first 16 bytes (protocol §5). */
export function sessionIdFromHash(handshakeHash: Uint8Array): string {
  return encodeBase64url(handshakeHash.subarray(0, SID_BYTES));
}

/** Why `open` refused an envelope. Only 'authentication' counts as a decryption failure. */
export type Refusal = 'none' | 'malformed' | 'replayed' | 'too_old' | 'authentication';

/** The header fields the caller sets before sealing (the rest are the session's). */
export type EnvelopeHeader = Pick<Envelope, 'id' | 'from' | 'to' | 'msg_type' | 'timestamp'> & {
  in_reply_to?: string | undefined;
};

function refusal(message: string): MeshError {
  return new MeshError('bad_request', message);
}

export class NoiseSession {
  readonly sid: string;
  readonly peer: string;
  readonly weInitiated: boolean;
  readonly createdMs: number;
  readonly #keys: TransportKeys;
  readonly #window = new ReplayWindow();
  #nextSend = 0;
  #envelopes = 0;
  #consecutiveFailures = 0;
  #lastRefusal: Refusal = 'none';
  #retiredAt: number | undefined;

  constructor(sid: string, peer: string, weInitiated: boolean, keys: TransportKeys, createdMs: number) {
    this.sid = sid;
    this.peer = peer;
    this.weInitiated = weInitiated;
    this.#keys = keys;
    this.createdMs = createdMs;
  }

  get envelopes(): number {
    return this.#envelopes;
  }
  get nextSendCounter(): number {
    return this.#nextSend;
  }
  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }
  get lastRefusal(): Refusal {
    return this.#lastRefusal;
  }
  get retiredAt(): number | undefined {
    return this.#retiredAt;
  }

  /** 16 consecutive decryption failures: the session must go (protocol §5). */
  broken(limits: SessionLimits): boolean {
    return this.#consecutiveFailures >= limits.maxConsecutiveFailures;
  }

  wornOut(limits: SessionLimits, nowMs: number): boolean {
    return this.#envelopes >= limits.maxEnvelopes || nowMs - this.createdMs >= limits.maxAgeMs;
  }

  /** Retirement (protocol §5 "Lifetime"): no new requests; the session goes retireGraceMs later. */
  retire(nowMs: number): void {
    if (this.#retiredAt === undefined) this.#retiredAt = nowMs;
  }

  /**
   * Seals `plaintext` into an encrypted envelope with `header`: sets encrypted, sid, n and the
   * ciphertext, in 65,519-byte pieces with consecutive counters. Throws MeshError('expired') when the
   * counters are used up.
   */
  seal(header: EnvelopeHeader, plaintext: Uint8Array): Envelope {
    const pieces = plaintext.length === 0 ? 1 : Math.ceil(plaintext.length / PIECE_MAX_PLAINTEXT);
    if (this.#nextSend > MAX_COUNTER || MAX_COUNTER - this.#nextSend < pieces - 1) {
      throw new MeshError('expired', 'session counters are used up; a new handshake is needed');
    }
    const envelope: Envelope = {
      id: header.id,
      from: header.from,
      to: header.to,
      msg_type: header.msg_type,
      ...(header.in_reply_to !== undefined ? { in_reply_to: header.in_reply_to } : {}),
      timestamp: header.timestamp,
      encrypted: true,
      sid: this.sid,
      n: this.#nextSend,
      payload: '',
    };
    const ad = envelopeAd(envelope);
    const ciphertext = new Uint8Array(plaintext.length + pieces * TAG_BYTES);
    let inOffset = 0;
    let outOffset = 0;
    for (let i = 0; i < pieces; i++) {
      const length = Math.min(PIECE_MAX_PLAINTEXT, plaintext.length - inOffset);
      const piece = this.#keys.send.encryptAt(this.#nextSend + i, ad, plaintext.subarray(inOffset, inOffset + length));
      ciphertext.set(piece, outOffset);
      inOffset += length;
      outOffset += piece.length;
    }
    this.#nextSend += pieces;
    this.#envelopes += 1;
    envelope.payload = encodeBase64url(ciphertext);
    return envelope;
  }

  /**
   * Opens an encrypted envelope of this session (from = peer, sid = ours: the caller found us by
   * them). Marks the counters only if every piece verifies. Throws MeshError('bad_request');
   * `lastRefusal` says why.
   */
  open(envelope: Envelope): Uint8Array {
    this.#lastRefusal = 'malformed';
    if (envelope.encrypted !== true || envelope.n === undefined || typeof envelope.payload !== 'string') {
      throw refusal('not an encrypted envelope');
    }
    let ciphertext: Uint8Array;
    try {
      ciphertext = decodeBase64url(envelope.payload);
    } catch (error) {
      throw refusal(`encrypted payload: ${(error as Error).message}`);
    }
    // The payload is split every 65,535 bytes; every piece holds at least a tag.
    const pieces = Math.ceil(ciphertext.length / PIECE_MAX_CIPHERTEXT);
    const lastPiece = ciphertext.length - (pieces === 0 ? 0 : (pieces - 1) * PIECE_MAX_CIPHERTEXT);
    if (pieces === 0 || lastPiece < TAG_BYTES) throw refusal('encrypted payload is shorter than an AEAD tag');
    const first = envelope.n;
    if (!Number.isSafeInteger(first) || first < 0 || MAX_COUNTER - first < pieces - 1) {
      throw refusal('counter beyond 2^53 − 1');
    }
    for (let i = 0; i < pieces; i++) {
      const verdict = this.#window.check(first + i);
      if (verdict === 'replayed') {
        this.#lastRefusal = 'replayed';
        throw refusal(`counter ${first + i} was already received (replay)`);
      }
      if (verdict === 'too_old') {
        this.#lastRefusal = 'too_old';
        throw refusal(`counter ${first + i} is behind the replay window`);
      }
    }
    const ad = envelopeAd(envelope);
    const plaintext = new Uint8Array(ciphertext.length - pieces * TAG_BYTES);
    let inOffset = 0;
    let outOffset = 0;
    for (let i = 0; i < pieces; i++) {
      const length = Math.min(PIECE_MAX_CIPHERTEXT, ciphertext.length - inOffset);
      const piece = this.#keys.receive.decryptAt(first + i, ad, ciphertext.subarray(inOffset, inOffset + length));
      if (piece === undefined) {
        // One failed payload is one decryption failure, however many pieces it has (§5).
        this.#lastRefusal = 'authentication';
        this.#consecutiveFailures += 1;
        plaintext.fill(0);
        throw refusal('decryption failed (tampered header or payload, or wrong session)');
      }
      plaintext.set(piece, outOffset);
      inOffset += length;
      outOffset += piece.length;
    }
    // Every piece verified: only now do the counters enter the window.
    for (let i = 0; i < pieces; i++) this.#window.mark(first + i);
    this.#consecutiveFailures = 0;
    this.#envelopes += 1;
    this.#lastRefusal = 'none';
    return plaintext;
  }
}

// ---- handshake envelopes ----

function handshakeEnvelope(
  self: Identity,
  to: string,
  id: string,
  step: 1 | 2,
  noise: Uint8Array,
  nowMs: number,
  inReplyTo?: string,
): Envelope {
  const payload: JsonObject = { step, noise: encodeBase64url(noise) };
  return signEnvelope(
    {
      id,
      from: self.agentId,
      to,
      msg_type: 'handshake',
      ...(inReplyTo !== undefined ? { in_reply_to: inReplyTo } : {}),
      timestamp: nowMs,
      payload,
    },
    self,
  );
}

function staticKeyPair(self: Identity): DhKeyPair {
  return dhKeyPairFromSecret(self.x25519Private);
}

/** An initiator's handshake in flight: step 1 sent, waiting for step 2. */
export interface PendingHandshake {
  state: HandshakeState;
  peer: string;
  step1Id: string;
  startedMs: number;
}

/**
 * The signed step-1 envelope (id `step1Id`) carrying Noise message 1 with `payload` (empty, or the
 * message-1 JSON of at most 65,439 bytes).
 */
export function startHandshake(
  self: Identity,
  peer: string,
  payload: Uint8Array,
  step1Id: string,
  nowMs: number,
  fixedEphemeral?: DhKeyPair,
): { step1: Envelope; pending: PendingHandshake } {
  if (payload.length > MESSAGE1_MAX_PAYLOAD) {
    throw new MeshError('too_large', 'message 1 holds at most 65,439 payload bytes');
  }
  const state = HandshakeState.create({
    pattern: 'IK',
    initiator: true,
    prologue: prologueBytes,
    localStatic: staticKeyPair(self),
    remoteStatic: x25519PublicOfAgentId(peer),
    ...(fixedEphemeral !== undefined ? { localEphemeral: fixedEphemeral } : {}),
  });
  const message = state.writeMessage(payload);
  return {
    step1: handshakeEnvelope(self, peer, step1Id, 1, message, nowMs),
    pending: { state, peer, step1Id, startedMs: nowMs },
  };
}

/**
 * The responder's side: `step1` has passed the receive checks (signature, freshness, replay).
 * Checks that the static key in message 1 is the one derived from `from`, answers with the signed
 * step-2 envelope (empty payload) and returns the new session and message 1's payload.
 */
export function acceptHandshake(
  self: Identity,
  step1: Envelope,
  step2Id: string,
  nowMs: number,
  fixedEphemeral?: DhKeyPair,
): { step2: Envelope; session: NoiseSession; message1Payload: Uint8Array } {
  const handshake = parseHandshakePayload(step1.payload);
  if (handshake.step !== 1) throw refusal('handshake: expected step 1');
  const state = HandshakeState.create({
    pattern: 'IK',
    initiator: false,
    prologue: prologueBytes,
    localStatic: staticKeyPair(self),
    ...(fixedEphemeral !== undefined ? { localEphemeral: fixedEphemeral } : {}),
  });
  let message1Payload: Uint8Array;
  try {
    message1Payload = state.readMessage(handshake.noise);
  } catch (error) {
    throw refusal(`handshake message 1: ${(error as Error).message}`);
  }
  // The static key inside message 1 must be the one derived from `from` (protocol §5).
  const remote = state.remoteStatic;
  if (remote === undefined || !equalBytes(remote, x25519PublicOfAgentId(step1.from))) {
    throw refusal("handshake message 1: the initiator's static key does not belong to `from`");
  }
  const message2 = state.writeMessage(new Uint8Array(0));
  const step2 = handshakeEnvelope(self, step1.from, step2Id, 2, message2, nowMs, step1.id);
  const session = new NoiseSession(sessionIdFromHash(state.handshakeHash), step1.from, false, state.split(), nowMs);
  return { step2, session, message1Payload };
}

/**
 * The initiator's side on step 2: checks it answers `pending` and comes from the agent dialled,
 * that message 2 is empty, and returns the session.
 */
export function finishHandshake(pending: PendingHandshake, step2: Envelope, nowMs: number): NoiseSession {
  if (step2.from !== pending.peer) throw refusal('handshake step 2 is not from the agent dialled');
  if (step2.in_reply_to !== pending.step1Id) throw refusal('handshake step 2 does not answer this handshake');
  const handshake = parseHandshakePayload(step2.payload);
  if (handshake.step !== 2) throw refusal('handshake: expected step 2');
  let payload: Uint8Array;
  try {
    payload = pending.state.readMessage(handshake.noise);
  } catch (error) {
    throw refusal(`handshake message 2: ${(error as Error).message}`);
  }
  if (payload.length !== 0) throw refusal('handshake message 2 must have an empty payload');
  if (!pending.state.isComplete()) throw refusal('handshake not complete after message 2');
  return new NoiseSession(sessionIdFromHash(pending.state.handshakeHash), pending.peer, true, pending.state.split(), nowMs);
}

// ---- the table ----

/** All sessions and pending handshakes of one agent. */
export class SessionTable {
  readonly limits: SessionLimits;
  readonly #sessions = new Map<string, NoiseSession[]>();
  readonly #pending = new Map<string, PendingHandshake>();
  #count = 0;

  constructor(limits: Partial<SessionLimits> = {}) {
    this.limits = { ...DEFAULT_SESSION_LIMITS, ...limits };
  }

  /**
   * The session this agent initiated with `peer` that takes new requests, if any (protocol §5: new
   * requests use the session the sender initiated). Retires worn-out ones on the way.
   */
  sessionForNewRequests(peer: string, nowMs: number): NoiseSession | undefined {
    let best: NoiseSession | undefined;
    for (const session of this.#sessions.get(peer) ?? []) {
      if (!session.weInitiated || session.retiredAt !== undefined) continue;
      if (session.wornOut(this.limits, nowMs)) {
        session.retire(nowMs);
        continue;
      }
      if (best === undefined || session.createdMs > best.createdMs) best = session;
    }
    return best;
  }

  /** The session (peer, sid), retired or not. */
  find(peer: string, sid: string): NoiseSession | undefined {
    return this.#sessions.get(peer)?.find((s) => s.sid === sid);
  }

  /**
   * Adds an established session. An initiated one retires the previous initiated sessions with
   * that peer; a responder one evicts the peer's oldest beyond maxResponderSessionsPerPeer.
   */
  add(session: NoiseSession, nowMs: number): NoiseSession {
    while (this.#count >= this.limits.maxSessionsTotal && this.#count > 0) this.#evictOldest();
    let list = this.#sessions.get(session.peer);
    if (list === undefined) {
      list = [];
      this.#sessions.set(session.peer, list);
    }
    if (session.weInitiated) {
      for (const old of list) if (old.weInitiated) old.retire(nowMs);
    } else {
      let responders = list.filter((s) => !s.weInitiated);
      while (responders.length >= this.limits.maxResponderSessionsPerPeer && responders.length > 0) {
        const oldest = responders.reduce((a, b) => (b.createdMs < a.createdMs ? b : a));
        list.splice(list.indexOf(oldest), 1);
        this.#count -= 1;
        responders = responders.filter((s) => s !== oldest);
      }
    }
    list.push(session);
    this.#count += 1;
    return session;
  }

  remove(peer: string, sid: string): void {
    const list = this.#sessions.get(peer);
    if (list === undefined) return;
    const index = list.findIndex((s) => s.sid === sid);
    if (index < 0) return;
    list.splice(index, 1);
    this.#count -= 1;
    if (list.length === 0) this.#sessions.delete(peer);
  }

  #evictOldest(): void {
    let oldest: NoiseSession | undefined;
    for (const list of this.#sessions.values()) {
      for (const s of list) if (oldest === undefined || s.createdMs < oldest.createdMs) oldest = s;
    }
    if (oldest !== undefined) this.remove(oldest.peer, oldest.sid);
  }

  /** Single flight: at most one pending handshake per peer. */
  pending(peer: string): PendingHandshake | undefined {
    return this.#pending.get(peer);
  }

  pendingByStep1(step1Id: string): PendingHandshake | undefined {
    for (const pending of this.#pending.values()) if (pending.step1Id === step1Id) return pending;
    return undefined;
  }

  addPending(pending: PendingHandshake): void {
    this.#pending.set(pending.peer, pending);
  }

  removePending(peer: string): void {
    this.#pending.delete(peer);
  }

  /**
   * Drops sessions past their lifetime: retired ones after retireGraceMs, any session
   * maxAgeMs + retireGraceMs after creation (protocol §5).
   */
  expire(nowMs: number): void {
    for (const [peer, list] of this.#sessions) {
      const kept = list.filter((s) => {
        if (s.retiredAt !== undefined && nowMs - s.retiredAt >= this.limits.retireGraceMs) return false;
        return nowMs - s.createdMs < this.limits.maxAgeMs + this.limits.retireGraceMs;
      });
      this.#count -= list.length - kept.length;
      if (kept.length === 0) this.#sessions.delete(peer);
      else this.#sessions.set(peer, kept);
    }
  }

  get sessionCount(): number {
    return this.#count;
  }

  sessionCountFor(peer: string): number {
    return this.#sessions.get(peer)?.length ?? 0;
  }
}
