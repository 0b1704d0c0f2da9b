// The envelope (protocol §3) and the receive checks, as pure steps each throwing a MeshError:
//   parseEnvelope      I-JSON within the size bound, structure, types, canonical IDs, the
//                      per-msg_type rules (in_reply_to, encrypted/sid/n, signature, handshake
//                      payload), then `to` = the receiver's own ID
//   checkFreshness     clock window for signed envelopes (time passed in)
//   verifyEnvelope     signature of a signed envelope: JCS of the object as received minus
//                      `signature`, purpose `envelope`, by `from`
//   SignedEnvelopeMemory.remember   duplicate IDs of signed envelopes per sender
// receiveEnvelope runs them in that order (docs/protocol.md: the clock before the costly
// signature check; only verified envelopes are remembered).
import { MeshError, badRequest, quoteForMessage } from './errors.js';
import { utf8Encode } from './bytes.js';
import { decodeBase64url, encodeBase64url, encodedLength } from './base64url.js';
import { DEFAULT_MAX_JSON_BYTES, parseIJson, type JsonObject, type JsonValue } from './ijson.js';
import { canonicalBytes, canonicalize } from './jcs.js';
import { verifySigned, type Identity } from './identity.js';
import { FieldReader, requireObject } from './fields.js';
import {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_FUTURE_MS,
  SignedEnvelopeMemory,
} from './signed_envelope_memory.js';

export { SignedEnvelopeMemory, DEFAULT_MAX_AGE_MS, DEFAULT_MAX_FUTURE_MS };
export type { SignedEnvelopeMemoryOptions } from './signed_envelope_memory.js';

export const MSG_TYPES = [
  'request',
  'stream_request',
  'response',
  'error',
  'stream_chunk',
  'stream_end',
  'cancel',
  'handshake',
] as const;
export type MsgType = (typeof MSG_TYPES)[number];

export function isMsgType(text: unknown): text is MsgType {
  return typeof text === 'string' && (MSG_TYPES as readonly string[]).includes(text);
}

/** response, error, stream_chunk, stream_end: they answer a request. */
export function isReply(type: MsgType): boolean {
  return type === 'response' || type === 'error' || type === 'stream_chunk' || type === 'stream_end';
}

/** protocol §3 default max_envelope_bytes. */
export const DEFAULT_MAX_ENVELOPE_BYTES = DEFAULT_MAX_JSON_BYTES;
/** protocol §5: session IDs are 16 bytes. */
export const SID_BYTES = 16;
/** Noise messages are at most 65,535 bytes (Noise §3). */
export const MAX_NOISE_MESSAGE_BYTES = 65535;

/** One envelope, with the wire's member names. Optional members are absent, never undefined on the wire. */
export interface Envelope {
  id: string;
  from: string;
  to: string;
  msg_type: MsgType;
  in_reply_to?: string;
  timestamp: number;
  /** `true` on encrypted envelopes, absent otherwise. */
  encrypted?: true;
  /** base64url of 16 bytes, encrypted envelopes only. */
  sid?: string;
  /** The first Noise counter of the payload, encrypted envelopes only. */
  n?: number;
  /** base64url ciphertext when encrypted; otherwise a §4 body or the §5 handshake object. */
  payload: JsonValue;
  /** base64url of 64 bytes, plaintext and handshake envelopes only. */
  signature?: string;
}

/** The §5 handshake object in a handshake envelope's payload. */
export interface HandshakePayload {
  step: 1 | 2;
  noise: Uint8Array;
}

const ENVELOPE_MEMBERS = [
  'id',
  'from',
  'to',
  'msg_type',
  'in_reply_to',
  'timestamp',
  'encrypted',
  'sid',
  'n',
  'payload',
  'signature',
] as const;

/** True for plaintext and handshake envelopes, which carry a signature (§3). */
export function isSigned(envelope: Pick<Envelope, 'encrypted'>): boolean {
  return envelope.encrypted !== true;
}

/** Validates a handshake payload object (§5): {"step": 1|2, "noise": non-empty base64url}. */
export function parseHandshakePayload(payload: JsonValue): HandshakePayload {
  const object = requireObject(payload, 'handshake payload');
  const fields = new FieldReader(object, 'handshake payload');
  fields.rejectUnknown(['step', 'noise']);
  const step = fields.requiredInteger('step');
  if (step !== 1 && step !== 2) throw badRequest('handshake payload: step must be 1 or 2');
  const noise = fields.requiredString('noise');
  if (noise.length === 0) throw badRequest('handshake payload: noise must not be empty');
  if (noise.length > encodedLength(MAX_NOISE_MESSAGE_BYTES)) {
    throw badRequest('handshake payload: noise is longer than a Noise message (65,535 bytes)');
  }
  let bytes: Uint8Array;
  try {
    bytes = decodeBase64url(noise);
  } catch (error) {
    throw badRequest(`handshake payload: noise: ${(error as Error).message}`);
  }
  return { step, noise: bytes };
}

/** in_reply_to is required on replies, cancel and handshake step 2, and forbidden elsewhere (§3, §5). */
function needsInReplyTo(type: MsgType, handshakeStep: number): boolean {
  if (type === 'handshake') return handshakeStep === 2;
  return isReply(type) || type === 'cancel';
}

/**
 * The structural checks of §3 on a parsed object (no size bound, no `to` check). Returns the
 * envelope, whose members are the object's (the payload is shared, not copied).
 */
export function envelopeFromObject(object: JsonObject): Envelope {
  const fields = new FieldReader(object, 'envelope');
  fields.rejectUnknown(ENVELOPE_MEMBERS);
  // Optional members are omitted, never null (§1); no envelope member may be null.
  for (const name of Object.keys(object)) {
    if (object[name] === null) throw badRequest(`envelope: ${quoteForMessage(name)} must not be null`);
  }
  const id = fields.requiredUuid('id');
  const from = fields.requiredAgentId('from');
  const to = fields.requiredAgentId('to');
  const type = fields.requiredString('msg_type');
  if (!isMsgType(type)) throw badRequest(`envelope: unknown msg_type ${quoteForMessage(type)}`);
  const timestamp = fields.requiredInteger('timestamp');
  // Unix milliseconds before 1970 are never valid for a message (docs/protocol.md).
  if (timestamp < 0) throw badRequest('envelope: timestamp must not be negative');
  const encrypted = fields.optionalBool('encrypted');
  // `true` or omitted (§3): false would be a second spelling of a plaintext envelope.
  if (encrypted === false) throw badRequest('envelope: encrypted must be true or omitted');
  if (!fields.has('payload')) throw badRequest('envelope: missing member "payload"');
  const payload = object.payload!;

  const envelope: Envelope = { id, from, to, msg_type: type, timestamp, payload };
  if (encrypted === true) {
    if (type === 'handshake') throw badRequest('envelope: handshake envelopes are never encrypted (§5)');
    if (fields.has('signature')) throw badRequest('envelope: encrypted envelopes must not carry a signature (§3)');
    if (!fields.has('sid')) throw badRequest('envelope: encrypted envelopes need "sid"');
    if (!fields.has('n')) throw badRequest('envelope: encrypted envelopes need "n"');
    fields.requiredBytes('sid', SID_BYTES);
    const n = fields.requiredInteger('n');
    if (n < 0) throw badRequest('envelope: n must not be negative (counters start at 0)');
    if (typeof payload !== 'string') {
      throw badRequest('envelope: the payload of an encrypted envelope must be a base64url string');
    }
    try {
      decodeBase64url(payload);
    } catch (error) {
      throw badRequest(`envelope: payload: ${(error as Error).message}`);
    }
    envelope.encrypted = true;
    envelope.sid = object.sid as string;
    envelope.n = n;
  } else {
    if (fields.has('sid')) throw badRequest('envelope: sid is only allowed on encrypted envelopes');
    if (fields.has('n')) throw badRequest('envelope: n is only allowed on encrypted envelopes');
    if (!fields.has('signature')) throw badRequest('envelope: plaintext and handshake envelopes must be signed');
    fields.requiredBytes('signature', 64);
    envelope.signature = object.signature as string;
  }

  const handshakeStep = type === 'handshake' ? parseHandshakePayload(payload).step : 0;
  const wantsReplyTo = needsInReplyTo(type, handshakeStep);
  const hasReplyTo = fields.has('in_reply_to');
  if (!hasReplyTo && wantsReplyTo) {
    throw badRequest(`envelope: ${type}${handshakeStep === 2 ? ' step 2' : ''} needs "in_reply_to"`);
  }
  if (hasReplyTo && !wantsReplyTo) {
    throw badRequest(`envelope: ${type}${handshakeStep === 1 ? ' step 1' : ''} must not have "in_reply_to"`);
  }
  if (hasReplyTo) envelope.in_reply_to = fields.requiredUuid('in_reply_to');
  return envelope;
}

export interface ParsedEnvelope {
  envelope: Envelope;
  /** The parsed object as received, for the signature check. */
  object: JsonObject;
}

/**
 * Parses and validates one envelope frame (every §3 check), including `to` = `receiverId`.
 * Does not check the signature or the clock. Throws MeshError: `too_large` over maxBytes (the
 * caller closes with 1009), otherwise `bad_request` naming the problem.
 */
export function parseEnvelope(
  text: string | Uint8Array,
  receiverId: string,
  options: { maxBytes?: number } = {},
): ParsedEnvelope {
  let value: JsonValue;
  try {
    value = parseIJson(text, { maxBytes: options.maxBytes ?? DEFAULT_MAX_ENVELOPE_BYTES });
  } catch (error) {
    if (error instanceof MeshError) throw new MeshError(error.code, `envelope: ${error.message}`);
    throw error;
  }
  const object = requireObject(value, 'envelope');
  const envelope = envelopeFromObject(object);
  // Agent IDs are canonical (one text per key), so string equality is key equality.
  if (envelope.to !== receiverId) throw badRequest('envelope: `to` is not this agent');
  return { envelope, object };
}

/**
 * The envelope as a JSON object with only its present members. `withPayload`/`withSignature`
 * build the signing input and the AEAD associated data from the same code.
 */
export function envelopeToObject(envelope: Envelope, withPayload = true, withSignature = true): JsonObject {
  const out: JsonObject = {
    id: envelope.id,
    from: envelope.from,
    to: envelope.to,
    msg_type: envelope.msg_type,
    timestamp: envelope.timestamp,
  };
  if (envelope.in_reply_to !== undefined) out.in_reply_to = envelope.in_reply_to;
  if (envelope.encrypted === true) {
    out.encrypted = true;
    if (envelope.sid !== undefined) out.sid = envelope.sid;
    if (envelope.n !== undefined) out.n = envelope.n;
  }
  if (withPayload) out.payload = envelope.payload;
  if (withSignature && envelope.signature !== undefined && envelope.encrypted !== true) {
    out.signature = envelope.signature;
  }
  return out;
}

/** The frame text: JCS of the envelope (valid I-JSON too). */
export function serializeEnvelope(envelope: Envelope): string {
  return canonicalize(envelopeToObject(envelope));
}

/** JCS of the envelope without `signature`: the message the signature covers (§1). */
export function envelopeSigningInput(envelope: Envelope): string {
  return canonicalize(envelopeToObject(envelope, true, false));
}

/** JCS of the envelope without `payload` and `signature`: the Noise AEAD associated data (§5). */
export function envelopeAd(envelope: Envelope): Uint8Array {
  return canonicalBytes(envelopeToObject(envelope, false, false));
}

/**
 * Signs a plaintext or handshake envelope (purpose `envelope`) and returns it with `signature`.
 * Misuse (an encrypted envelope, or an identity that is not `from`) throws MeshError(internal).
 */
export function signEnvelope(unsigned: Omit<Envelope, 'signature'> & { signature?: string }, identity: Identity): Envelope {
  if (unsigned.encrypted === true) throw new MeshError('internal', 'signEnvelope: encrypted envelopes carry no signature');
  if (identity.agentId !== unsigned.from) throw new MeshError('internal', 'signEnvelope: the identity is not `from`');
  const { signature: _ignored, ...rest } = unsigned;
  void _ignored;
  const envelope: Envelope = { ...rest };
  const signature = identity.sign('envelope', utf8Encode(envelopeSigningInput(envelope)));
  return { ...envelope, signature: encodeBase64url(signature) };
}

/**
 * Verifies the signature of a signed envelope object as received: Ed25519 by `from` over
 * "agent-mesh/v1/envelope\n" ‖ JCS(object minus `signature`). False for anything malformed.
 */
export function verifyEnvelope(object: JsonObject): boolean {
  const { signature, from } = object;
  if (typeof signature !== 'string' || typeof from !== 'string') return false;
  let signatureBytes: Uint8Array;
  let message: Uint8Array;
  try {
    signatureBytes = decodeBase64url(signature, 64);
    const unsigned: JsonObject = { ...object };
    delete unsigned.signature;
    message = canonicalBytes(unsigned);
  } catch {
    return false;
  }
  return verifySigned(from, 'envelope', message, signatureBytes);
}

/** §3 freshness for a signed envelope: at most maxFutureMs ahead and maxAgeMs old (bounds included). */
export function isFresh(
  timestampMs: number,
  nowMs: number,
  maxAgeMs = DEFAULT_MAX_AGE_MS,
  maxFutureMs = DEFAULT_MAX_FUTURE_MS,
): boolean {
  return timestampMs <= nowMs + maxFutureMs && timestampMs >= nowMs - maxAgeMs;
}

export interface FreshnessPolicy {
  maxAgeMs?: number;
  maxFutureMs?: number;
}

/** Throws MeshError(expired) saying whether a signed envelope is too old or too far ahead. */
export function checkFreshness(envelope: Envelope, nowMs: number, policy: FreshnessPolicy = {}): void {
  if (!isSigned(envelope)) return; // the Noise counter window protects encrypted envelopes
  const maxFuture = policy.maxFutureMs ?? DEFAULT_MAX_FUTURE_MS;
  const maxAge = policy.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  if (envelope.timestamp > nowMs + maxFuture) {
    throw new MeshError(
      'expired',
      `envelope: timestamp is ${envelope.timestamp - nowMs} ms in the future (limit ${maxFuture} ms)`,
    );
  }
  if (envelope.timestamp < nowMs - maxAge) {
    throw new MeshError('expired', `envelope: timestamp is ${nowMs - envelope.timestamp} ms old (limit ${maxAge} ms)`);
  }
}

export interface ReceiveOptions extends FreshnessPolicy {
  maxBytes?: number;
  /**
   * Called for a signed envelope after the freshness check and before its signature is verified
   * (the first crypto): throwing refuses it (rate limits, step 2s nobody waits for).
   */
  admit?: (envelope: Envelope) => void;
}

/**
 * Everything a receiver checks (§3) before acting on a frame, in order: parse and `to`; for
 * signed envelopes freshness, signature, then the replay memory. Only an envelope whose signature
 * verified is remembered. Throws MeshError (`bad_request`, `expired`, `too_large`).
 */
export function receiveEnvelope(
  text: string | Uint8Array,
  receiverId: string,
  nowMs: number,
  memory: SignedEnvelopeMemory,
  options: ReceiveOptions = {},
): ParsedEnvelope {
  const parsed = parseEnvelope(text, receiverId, options);
  const { envelope, object } = parsed;
  if (isSigned(envelope)) {
    checkFreshness(envelope, nowMs, options);
    options.admit?.(envelope);
    if (!verifyEnvelope(object)) throw badRequest('envelope: signature does not verify for `from`');
    memory.remember(envelope.from, envelope.id, envelope.timestamp, nowMs);
  }
  return parsed;
}
