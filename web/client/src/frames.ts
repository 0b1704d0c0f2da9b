// The relay connection's control frames (protocol §6, relay.md), sans-IO: parsing (strict, per
// direction), building, the bytes an auth signature covers, the relay_id comparison and the close
// codes. A frame with a top-level `type` is a control frame, one with `msg_type` an envelope.
//
// Every parse error is MeshError(bad_request) naming the frame and member, except the version
// checks of hello and welcome (`unsupported_version`, checked before anything else) and an
// oversized frame (`too_large`); closeCodeFor() gives the close code for an error.
import { MeshError, badRequest, isKnownErrorCode, quoteForMessage, type MeshErrorCode } from './errors.js';
import { concatBytes, utf8Encode } from './bytes.js';
import { decodeBase64url, encodeBase64url } from './base64url.js';
import { isIntegerLiteral, isJsonObject, parseIJson, type JsonObject, type JsonValue } from './ijson.js';
import { canonicalize } from './jcs.js';
import { checkAgentId, signingInput, verifySigned, type Identity } from './identity.js';
import { checkUuidV4 } from './uuid.js';
import { FieldReader } from './fields.js';

export const PROTOCOL_VERSION = 1;
/** §3: before authentication every frame is a control frame of at most 64 KiB. */
export const MAX_CONTROL_FRAME_BYTES = 64 * 1024;
export const AUTH_NONCE_BYTES = 32;
export const RESUME_TOKEN_BYTES = 32;
/** §6: acks are batched, at most 256 IDs per frame. */
export const MAX_ACK_IDS = 256;

/** WebSocket close codes (§6). */
export const CLOSE_CODES = {
  normal: 1000,
  draining: 1001,
  tooBig: 1009,
  badRequest: 4000,
  authFailed: 4001, // also auth_timeout
  unsupportedVersion: 4002,
  revoked: 4003,
  rateLimited: 4008,
  replaced: 4009,
  slowConsumer: 4010,
} as const;

/** The close code that goes with an error, if any (as the C++ core's close_code_for). */
export function closeCodeFor(code: MeshErrorCode): number | undefined {
  switch (code) {
    case 'bad_request':
      return CLOSE_CODES.badRequest;
    case 'auth_failed':
    case 'auth_timeout':
      return CLOSE_CODES.authFailed;
    case 'unsupported_version':
      return CLOSE_CODES.unsupportedVersion;
    case 'revoked':
      return CLOSE_CODES.revoked;
    case 'rate_limited':
      return CLOSE_CODES.rateLimited;
    case 'slow_consumer':
      return CLOSE_CODES.slowConsumer;
    case 'too_large':
      return CLOSE_CODES.tooBig;
    default:
      return undefined;
  }
}

export const UNDELIVERABLE_CODES = ['rate_limited', 'buffer_full', 'revoked', 'bad_envelope', 'expired', 'unreachable'] as const;
export type UndeliverableCode = (typeof UNDELIVERABLE_CODES)[number];

export function isUndeliverableCode(text: unknown): text is UndeliverableCode {
  return typeof text === 'string' && (UNDELIVERABLE_CODES as readonly string[]).includes(text);
}

// ---- the ten control frames ----

export interface HelloFrame {
  type: 'hello';
  v: 1;
  agent_id: string;
  /** A resume token from an earlier welcome, exactly as received. */
  resume?: string;
}
export interface ChallengeFrame {
  type: 'challenge';
  /** base64url of 32 bytes. */
  nonce: string;
  /** The relay's public_url exactly as sent: the signature covers these bytes. */
  relay_id: string;
}
export interface AuthFrame {
  type: 'auth';
  /** base64url of 64 bytes. */
  signature: string;
}
export interface WelcomeFrame {
  type: 'welcome';
  v: 1;
  session_token: string;
  heartbeat_ms: number;
  /** How many stored envelopes follow before any live traffic. */
  buffered: number;
}
export interface ErrorFrame {
  type: 'error';
  code: MeshErrorCode;
  message: string;
}
export interface QueuedFrame {
  type: 'queued';
  id: string;
}
export interface UndeliverableFrame {
  type: 'undeliverable';
  /** null when the relay could not read the envelope's id (the one null on the wire). */
  id: string | null;
  code: UndeliverableCode;
  retry_after_ms?: number;
}
export interface AckFrame {
  type: 'ack';
  ids: string[];
}
export interface PingFrame {
  type: 'ping';
}
export interface PongFrame {
  type: 'pong';
}

export type ControlFrame =
  | HelloFrame
  | ChallengeFrame
  | AuthFrame
  | WelcomeFrame
  | ErrorFrame
  | QueuedFrame
  | UndeliverableFrame
  | AckFrame
  | PingFrame
  | PongFrame;
export type ControlFrameType = ControlFrame['type'];

export const CONTROL_FRAME_TYPES: readonly ControlFrameType[] = [
  'hello',
  'challenge',
  'auth',
  'welcome',
  'error',
  'queued',
  'undeliverable',
  'ack',
  'ping',
  'pong',
];
const SENT_BY_CLIENT: ReadonlySet<ControlFrameType> = new Set(['hello', 'auth', 'ack', 'ping']);

/** Who sent the frame being parsed: a client accepts only relay frames and the reverse. */
export type FrameSender = 'client' | 'relay';

// §6 "Versions": `v` comes before anything else, so a client of a future version learns
// `unsupported_version` even if the rest of its frame means nothing to us.
function checkVersion(object: JsonObject, frame: string): void {
  if (!Object.prototype.hasOwnProperty.call(object, 'v')) throw badRequest(`${frame}: missing member "v"`);
  const v = object.v;
  if (isIntegerLiteral(object, 'v') && v === PROTOCOL_VERSION) return;
  // "anything but the integer 1": 1.0, "1", true and null are versions we don't speak either.
  if (isIntegerLiteral(object, 'v')) {
    throw new MeshError(
      'unsupported_version',
      `${frame}: protocol version ${String(v)} is not supported (only ${PROTOCOL_VERSION})`,
    );
  }
  throw new MeshError('unsupported_version', `${frame}: v must be the integer ${PROTOCOL_VERSION}`);
}

function helloFrom(object: JsonObject): HelloFrame {
  checkVersion(object, 'hello');
  const fields = new FieldReader(object, 'hello');
  fields.rejectUnknown(['type', 'v', 'agent_id', 'resume']);
  // A malformed token is a malformed hello (bad_request); an unknown or expired one only leads to a
  // normal challenge (§6 "Resume tokens").
  const resume = fields.has('resume') ? fields.requiredString('resume') : undefined;
  if (resume !== undefined) fields.requiredBytes('resume', RESUME_TOKEN_BYTES);
  // Last: the point validation is the one costly check.
  const agentId = fields.requiredAgentId('agent_id');
  return resume === undefined ? { type: 'hello', v: 1, agent_id: agentId } : { type: 'hello', v: 1, agent_id: agentId, resume };
}

function challengeFrom(object: JsonObject): ChallengeFrame {
  const fields = new FieldReader(object, 'challenge');
  fields.rejectUnknown(['type', 'nonce', 'relay_id']);
  fields.requiredBytes('nonce', AUTH_NONCE_BYTES);
  const relayId = fields.requiredString('relay_id');
  // Its syntax is judged by relayIdMatches (an unparseable relay_id never matches).
  if (relayId.length === 0) throw badRequest('challenge: relay_id must not be empty');
  return { type: 'challenge', nonce: object.nonce as string, relay_id: relayId };
}

function authFrom(object: JsonObject): AuthFrame {
  const fields = new FieldReader(object, 'auth');
  fields.rejectUnknown(['type', 'signature']);
  fields.requiredBytes('signature', 64);
  return { type: 'auth', signature: object.signature as string };
}

function welcomeFrom(object: JsonObject): WelcomeFrame {
  checkVersion(object, 'welcome'); // §6: a client receiving welcome with v ≠ 1 closes with 4002
  const fields = new FieldReader(object, 'welcome');
  fields.rejectUnknown(['type', 'v', 'session_token', 'heartbeat_ms', 'buffered']);
  fields.requiredBytes('session_token', RESUME_TOKEN_BYTES);
  const heartbeat = fields.requiredInteger('heartbeat_ms');
  // A zero interval would make "silent for 3 intervals" close every connection at once.
  if (heartbeat <= 0) throw badRequest('welcome: heartbeat_ms must be positive');
  const buffered = fields.requiredNonNegative('buffered');
  return { type: 'welcome', v: 1, session_token: object.session_token as string, heartbeat_ms: heartbeat, buffered };
}

function errorFrom(object: JsonObject): ErrorFrame {
  const fields = new FieldReader(object, 'error');
  fields.rejectUnknown(['type', 'code', 'message']);
  const code = fields.requiredString('code');
  // Clients map codes to actions, so an invented code is refused.
  if (!isKnownErrorCode(code)) throw badRequest(`error: unknown code ${quoteForMessage(code)}`);
  return { type: 'error', code, message: fields.requiredString('message') };
}

function queuedFrom(object: JsonObject): QueuedFrame {
  const fields = new FieldReader(object, 'queued');
  fields.rejectUnknown(['type', 'id']);
  return { type: 'queued', id: fields.requiredUuid('id') };
}

function undeliverableFrom(object: JsonObject): UndeliverableFrame {
  const fields = new FieldReader(object, 'undeliverable');
  fields.rejectUnknown(['type', 'id', 'code', 'retry_after_ms']);
  // Always present; null when the relay could not read the envelope's id (§6).
  if (!fields.has('id')) throw badRequest('undeliverable: missing member "id"');
  const rawId = object.id;
  let id: string | null = null;
  if (typeof rawId === 'string') id = fields.requiredUuid('id');
  else if (rawId !== null) throw badRequest('undeliverable: id must be a UUID string or null');
  const code = fields.requiredString('code');
  if (!isUndeliverableCode(code)) {
    throw badRequest(
      `undeliverable: code ${quoteForMessage(code)} is not one of rate_limited, buffer_full, revoked, bad_envelope, expired, unreachable`,
    );
  }
  const retry = fields.optionalInteger('retry_after_ms');
  if (retry !== undefined && retry < 0) throw badRequest('undeliverable: retry_after_ms must not be negative');
  return retry === undefined ? { type: 'undeliverable', id, code } : { type: 'undeliverable', id, code, retry_after_ms: retry };
}

function ackFrom(object: JsonObject): AckFrame {
  const fields = new FieldReader(object, 'ack');
  fields.rejectUnknown(['type', 'ids']);
  const ids = fields.requiredArray('ids');
  if (ids.length === 0 || ids.length > MAX_ACK_IDS) {
    throw badRequest(`ack: ids must hold 1 to ${MAX_ACK_IDS} IDs, got ${ids.length}`);
  }
  return {
    type: 'ack',
    ids: ids.map((element, i) => {
      if (typeof element !== 'string') throw badRequest(`ack: ids[${i}] must be a string`);
      try {
        return checkUuidV4(element, `ids[${i}]`);
      } catch (error) {
        throw badRequest(`ack: ${(error as Error).message}`);
      }
    }),
  };
}

function emptyFrom<T extends PingFrame | PongFrame>(object: JsonObject, type: T['type']): T {
  new FieldReader(object, type).rejectUnknown(['type']);
  return { type } as T;
}

/** The kind of a parsed frame: `type` at the top level means control, `msg_type` envelope (§6). */
export function classifyFrame(value: JsonValue): 'control' | 'envelope' {
  if (!isJsonObject(value)) throw badRequest('frame must be a JSON object');
  const hasType = Object.prototype.hasOwnProperty.call(value, 'type');
  const hasMsgType = Object.prototype.hasOwnProperty.call(value, 'msg_type');
  if (hasType && hasMsgType) throw badRequest('frame has both "type" (control frame) and "msg_type" (envelope)');
  if (!hasType && !hasMsgType) throw badRequest('frame has neither "type" (control frame) nor "msg_type" (envelope)');
  return hasType ? 'control' : 'envelope';
}

/**
 * A control frame from an already parsed object (for a link that parses each frame once and
 * dispatches on classifyFrame). With `sentBy`, frames the other side never sends are refused.
 */
export function controlFrameFromObject(object: JsonObject, sentBy?: FrameSender): ControlFrame {
  if (!Object.prototype.hasOwnProperty.call(object, 'type')) throw badRequest('control frame: missing member "type"');
  const type = object.type;
  if (typeof type !== 'string') throw badRequest('control frame: type must be a string');
  if (!(CONTROL_FRAME_TYPES as readonly string[]).includes(type)) {
    throw badRequest(`control frame: unknown type ${quoteForMessage(type)}`);
  }
  const frameType = type as ControlFrameType;
  if (sentBy !== undefined && SENT_BY_CLIENT.has(frameType) !== (sentBy === 'client')) {
    throw badRequest(`${sentBy === 'client' ? 'a client' : 'a relay'} does not send ${frameType} frames`);
  }
  switch (frameType) {
    case 'hello':
      return helloFrom(object);
    case 'challenge':
      return challengeFrom(object);
    case 'auth':
      return authFrom(object);
    case 'welcome':
      return welcomeFrom(object);
    case 'error':
      return errorFrom(object);
    case 'queued':
      return queuedFrom(object);
    case 'undeliverable':
      return undeliverableFrom(object);
    case 'ack':
      return ackFrom(object);
    case 'ping':
      return emptyFrom<PingFrame>(object, 'ping');
    case 'pong':
      return emptyFrom<PongFrame>(object, 'pong');
  }
}

export interface ParseFrameOptions {
  /** Default 64 KiB (the bound before authentication); pass max_envelope_bytes after it. */
  maxBytes?: number;
  /** Who sent it: 'relay' for what a client receives, 'client' for what a relay receives. */
  sentBy?: FrameSender;
}

/** Parses a control frame strictly (unknown members, nulls, wrong types, non-integer integers refused). */
export function parseControlFrame(text: string | Uint8Array, options: ParseFrameOptions = {}): ControlFrame {
  let value: JsonValue;
  try {
    value = parseIJson(text, { maxBytes: options.maxBytes ?? MAX_CONTROL_FRAME_BYTES });
  } catch (error) {
    if (error instanceof MeshError) throw new MeshError(error.code, `control frame: ${error.message}`);
    throw error;
  }
  if (!isJsonObject(value)) throw badRequest('control frame must be a JSON object');
  return controlFrameFromObject(value, options.sentBy);
}

/** What a client accepts from a relay: challenge, welcome, error, queued, undeliverable, pong. */
export function parseRelayFrame(text: string | Uint8Array, maxBytes?: number): ControlFrame {
  return parseControlFrame(text, maxBytes === undefined ? { sentBy: 'relay' } : { sentBy: 'relay', maxBytes });
}

/** What a relay accepts from a client: hello, auth, ack, ping. */
export function parseClientFrame(text: string | Uint8Array, maxBytes?: number): ControlFrame {
  return parseControlFrame(text, maxBytes === undefined ? { sentBy: 'client' } : { sentBy: 'client', maxBytes });
}

/** The frame's text (JCS). */
export function serializeControlFrame(frame: ControlFrame): string {
  return canonicalize(frame as unknown as JsonObject);
}

// ---- building (client side) ----

export function helloFrame(agentId: string, resume?: string): string {
  checkAgentId(agentId);
  const frame: HelloFrame = { type: 'hello', v: 1, agent_id: agentId };
  if (resume !== undefined) {
    // A malformed token would make the relay close with 4000 instead of challenging.
    decodeBase64url(resume, RESUME_TOKEN_BYTES);
    frame.resume = resume;
  }
  return serializeControlFrame(frame);
}

/** nonce ‖ relay_id (UTF-8, exactly as the challenge sent it): the auth message before the prefix. */
export function authMessage(nonce: Uint8Array | string, relayId: string): Uint8Array {
  const nonceBytes = typeof nonce === 'string' ? decodeBase64url(nonce, AUTH_NONCE_BYTES) : nonce;
  if (nonceBytes.length !== AUTH_NONCE_BYTES) throw badRequest(`auth nonce must be ${AUTH_NONCE_BYTES} bytes`);
  return concatBytes(nonceBytes, utf8Encode(relayId));
}

/** "agent-mesh/v1/auth\n" ‖ nonce ‖ relay_id: the exact bytes the auth signature covers (§6). */
export function authSignedBytes(nonce: Uint8Array | string, relayId: string): Uint8Array {
  return signingInput('auth', authMessage(nonce, relayId));
}

/** The client's answer to a challenge. Check relayIdMatches first: the signature names relay_id. */
export function authFrame(identity: Identity, challenge: ChallengeFrame): string {
  const signature = identity.sign('auth', authMessage(challenge.nonce, challenge.relay_id));
  return serializeControlFrame({ type: 'auth', signature: encodeBase64url(signature) });
}

/** The relay's check of an auth frame (tests and tools). */
export function verifyAuth(agentId: string, challenge: ChallengeFrame, auth: AuthFrame): boolean {
  let signature: Uint8Array;
  try {
    signature = decodeBase64url(auth.signature, 64);
  } catch {
    return false;
  }
  return verifySigned(agentId, 'auth', authMessage(challenge.nonce, challenge.relay_id), signature);
}

/** {"type":"ack","ids":[...]}: 1 to 256 UUIDs (the caller batches). */
export function ackFrame(ids: readonly string[]): string {
  if (ids.length === 0 || ids.length > MAX_ACK_IDS) {
    throw badRequest(`ack: ids must hold 1 to ${MAX_ACK_IDS} IDs, got ${ids.length}`);
  }
  for (const id of ids) checkUuidV4(id, 'ack id');
  return serializeControlFrame({ type: 'ack', ids: [...ids] });
}

export function pingFrame(): string {
  return '{"type":"ping"}';
}

// ---- relay_id comparison (§6) ----

const REG_NAME = /^[A-Za-z0-9\-._~]+$/;
const IP_LITERAL = /^[0-9A-Fa-f:.]+$/;
const PRINTABLE_ASCII = /^[\x21-\x7e]*$/;

/** A port in its one canonical spelling: 1–65535, digits only, no leading zero. */
function isCanonicalPort(port: string): boolean {
  return /^[1-9][0-9]{0,4}$/.test(port) && Number(port) <= 65535;
}

/**
 * The comparison form of a ws:// or wss:// URL: scheme and host lower-cased, the scheme's default
 * port removed, an empty path written "/", and localhost, 127.0.0.1 and [::1] written 127.0.0.1.
 * Everything else is kept exactly (no percent-decoding, no other address spellings). null for
 * anything that is not such a URL: another scheme, userinfo, a fragment, an empty or ill-formed
 * host, a bad port, characters outside printable ASCII.
 */
export function normalizeRelayUrl(url: string): string | null {
  if (!PRINTABLE_ASCII.test(url)) return null;
  if (url.includes('#')) return null; // RFC 6455 §3: WebSocket URIs have no fragment
  const schemeEnd = url.indexOf('://');
  if (schemeEnd < 0) return null;
  const scheme = url.slice(0, schemeEnd).toLowerCase();
  if (scheme !== 'ws' && scheme !== 'wss') return null;
  const rest = url.slice(schemeEnd + 3);
  const authorityEnd = rest.search(/[/?]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  // Credentials have no place in a relay URL, and "user@host" invites look-alike hosts.
  if (authority.includes('@')) return null;

  let host: string;
  let port: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close <= 1) return null;
    host = authority.slice(0, close + 1);
    if (!IP_LITERAL.test(host.slice(1, -1))) return null;
    const after = authority.slice(close + 1);
    if (after.length > 0) {
      if (!after.startsWith(':')) return null;
      port = after.slice(1);
    }
  } else {
    const colon = authority.indexOf(':');
    host = colon < 0 ? authority : authority.slice(0, colon);
    if (colon >= 0) port = authority.slice(colon + 1);
    if (!REG_NAME.test(host)) return null;
  }
  if (port !== undefined && !isCanonicalPort(port)) return null;

  let normalHost = host.toLowerCase();
  // §6: the three loopback names are one relay; no other address spelling is folded.
  if (normalHost === 'localhost' || normalHost === '[::1]') normalHost = '127.0.0.1';
  const defaultPort = (scheme === 'ws' && port === '80') || (scheme === 'wss' && port === '443');
  let out = `${scheme}://${normalHost}`;
  if (port !== undefined && !defaultPort) out += `:${port}`;
  if (tail.length === 0 || tail.startsWith('?')) out += '/';
  return out + tail;
}

/** True if both are relay URLs with the same comparison form; a client aborts otherwise (§6). */
export function relayIdMatches(dialled: string, relayId: string): boolean {
  const a = normalizeRelayUrl(dialled);
  const b = normalizeRelayUrl(relayId);
  return a !== null && b !== null && a === b;
}
