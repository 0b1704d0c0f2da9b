// Signed objects outside envelopes: Agent Cards (registry.md, purpose `card`), self-signed
// revocations and rotations (protocol §7, purposes `revoke` / `rotate`), and the agent signature
// of registry REST calls (registry.md "Credentials", purpose `http`).
//
// Every signature covers "agent-mesh/v1/<purpose>\n" ‖ JCS(object as received minus its
// signature member(s)) (§1). Parsing is strict (unknown members, nulls, wrong types refused), and
// cheap structural checks come before any Ed25519 verification.
import { MeshError, badRequest } from './errors.js';
import { utf8Length } from './bytes.js';
import { decodeBase64url, encodeBase64url } from './base64url.js';
import { isJsonObject, parseIJson, type JsonObject, type JsonValue } from './ijson.js';
import { canonicalBytes, canonicalize } from './jcs.js';
import { verifySigned, type Identity, type Purpose } from './identity.js';
import { FieldReader, requireObject } from './fields.js';
import { isCapabilityName } from './bodies.js';

/** Revocation and rotation objects are a few hundred bytes; bound their text before parsing. */
export const MAX_KEY_LIFECYCLE_OBJECT_BYTES = 4 * 1024;
/** A revocation's reason is a short note; relays keep revocations forever. */
export const MAX_REVOCATION_REASON_BYTES = 1024;
/** protocol §7: grace_until ≤ timestamp + 7 days; default 24 h. */
export const MAX_GRACE_MS = 7 * 24 * 60 * 60 * 1000;
export const DEFAULT_GRACE_MS = 24 * 60 * 60 * 1000;
/** Card bounds (docs/protocol.md "Agent Card"). */
export const MAX_CARD_BYTES = 256 * 1024;
export const MAX_CARD_NAME_BYTES = 128;
export const MAX_CARD_DESCRIPTION_BYTES = 4096;
export const MAX_CARD_CAPABILITIES = 64;

/** Parses text (bounded) or takes an already parsed value; `context` prefixes JSON errors. */
function toValue(input: string | JsonValue, context: string, maxBytes: number): JsonValue {
  if (typeof input !== 'string') return input;
  try {
    return parseIJson(input, { maxBytes });
  } catch (error) {
    if (error instanceof MeshError) throw new MeshError(error.code, `${context}: ${error.message}`);
    throw error;
  }
}

/** JCS of `object` without the named members: the message its signatures cover. */
function messageWithout(object: JsonObject, ...names: string[]): Uint8Array {
  const copy: JsonObject = { ...object };
  for (const name of names) delete copy[name];
  return canonicalBytes(copy);
}

function checkSignatureOf(
  signer: string,
  purpose: Purpose,
  message: Uint8Array,
  signature: string,
  failure: string,
): void {
  if (!verifySigned(signer, purpose, message, decodeBase64url(signature, 64))) throw badRequest(failure);
}

function readTimestamp(fields: FieldReader, name: string): number {
  return fields.requiredNonNegative(name);
}

// ---- Revocation (§7) ----

/** {"agent_id","reason","timestamp","signature"}; an admin revocation has no signature. */
// A type alias (not an interface) so that it is assignable to JsonObject.
export type Revocation = {
  agent_id: string;
  reason: string;
  timestamp: number;
  signature?: string;
};

/**
 * Strict parse of a revocation (text of at most 4 KiB, or a parsed value). With
 * `requireSignature` (the default) a missing signature is an error; a present one must always be
 * canonical base64url of 64 bytes. Does not verify it.
 */
export function parseRevocation(input: string | JsonValue, requireSignature = true): Revocation {
  const object = requireObject(toValue(input, 'revocation', MAX_KEY_LIFECYCLE_OBJECT_BYTES), 'revocation');
  const fields = new FieldReader(object, 'revocation');
  fields.rejectUnknown(['agent_id', 'reason', 'timestamp', 'signature']);
  const agentId = fields.requiredAgentId('agent_id');
  const reason = fields.requiredString('reason');
  const reasonBytes = utf8Length(reason);
  if (reasonBytes > MAX_REVOCATION_REASON_BYTES) {
    throw badRequest(`revocation: reason must be at most ${MAX_REVOCATION_REASON_BYTES} bytes, got ${reasonBytes}`);
  }
  const timestamp = readTimestamp(fields, 'timestamp');
  const revocation: Revocation = { agent_id: agentId, reason, timestamp };
  if (requireSignature || fields.has('signature')) {
    fields.requiredBytes('signature', 64);
    revocation.signature = object.signature as string;
  }
  return revocation;
}

/**
 * A self-signed revocation, parsed and verified (signature by agent_id, purpose `revoke`). Returns
 * it, or throws MeshError(bad_request) naming the problem.
 */
export function verifyRevocation(input: string | JsonValue): Revocation {
  const revocation = parseRevocation(input, true);
  checkSignatureOf(
    revocation.agent_id,
    'revoke',
    messageWithout(revocation, 'signature'),
    revocation.signature!,
    'revocation: signature does not verify for agent_id (purpose revoke)',
  );
  return revocation;
}

/** A self-signed revocation of `identity` (only the key being revoked signs it). */
export function signRevocation(identity: Identity, reason: string, timestampMs: number): Revocation {
  const unsigned: Revocation = { agent_id: identity.agentId, reason, timestamp: timestampMs };
  parseRevocation(unsigned, false); // refuse what receivers would refuse
  const signature = identity.sign('revoke', canonicalBytes(unsigned));
  return { ...unsigned, signature: encodeBase64url(signature) };
}

// ---- Rotation (§7) ----

/** {"old","new","timestamp","grace_until","signature_old","signature_new"}. */
export type Rotation = {
  old: string;
  new: string;
  timestamp: number;
  grace_until: number;
  signature_old: string;
  signature_new: string;
};

/** §7: old ≠ new, timestamp < grace_until ≤ timestamp + 7 days, each with its own message. */
function checkRotationWindow(rotation: Pick<Rotation, 'old' | 'new' | 'timestamp' | 'grace_until'>): void {
  if (rotation.old === rotation.new) throw badRequest('rotation: old and new must be different agent IDs');
  if (rotation.timestamp < 0) throw badRequest('rotation: timestamp must not be negative');
  if (rotation.grace_until <= rotation.timestamp) throw badRequest('rotation: grace_until must be later than timestamp');
  if (rotation.grace_until - rotation.timestamp > MAX_GRACE_MS) {
    throw badRequest(`rotation: grace_until must be at most 7 days (${MAX_GRACE_MS} ms) after timestamp`);
  }
}

/**
 * Strict parse of a rotation: every member required, IDs valid, signatures canonical, and the
 * window rules checked here already (they make an object invalid whatever its signatures).
 */
export function parseRotation(input: string | JsonValue): Rotation {
  const object = requireObject(toValue(input, 'rotation', MAX_KEY_LIFECYCLE_OBJECT_BYTES), 'rotation');
  const fields = new FieldReader(object, 'rotation');
  fields.rejectUnknown(['old', 'new', 'timestamp', 'grace_until', 'signature_old', 'signature_new']);
  const rotation: Rotation = {
    old: fields.requiredAgentId('old'),
    new: fields.requiredAgentId('new'),
    timestamp: readTimestamp(fields, 'timestamp'),
    grace_until: fields.requiredInteger('grace_until'),
    signature_old: (fields.requiredBytes('signature_old', 64), object.signature_old as string),
    signature_new: (fields.requiredBytes('signature_new', 64), object.signature_new as string),
  };
  checkRotationWindow(rotation);
  return rotation;
}

/**
 * A rotation, parsed and verified: the window, then signature_old by old, then signature_new by
 * new (the new key proves possession), both purpose `rotate`. Returns it or throws MeshError.
 */
export function verifyRotation(input: string | JsonValue): Rotation {
  const rotation = parseRotation(input);
  const message = messageWithout(rotation, 'signature_old', 'signature_new');
  checkSignatureOf(rotation.old, 'rotate', message, rotation.signature_old, 'rotation: signature_old does not verify for old (purpose rotate)');
  checkSignatureOf(
    rotation.new,
    'rotate',
    message,
    rotation.signature_new,
    'rotation: signature_new does not verify for new (purpose rotate; the new key must prove possession)',
  );
  return rotation;
}

/** True while both IDs route; from grace_until on, `old` counts as revoked. */
export function isInGrace(rotation: Rotation, nowMs: number): boolean {
  return nowMs < rotation.grace_until;
}

/** A rotation from `oldIdentity` to `newIdentity`, signed by both. */
export function signRotation(
  oldIdentity: Identity,
  newIdentity: Identity,
  timestampMs: number,
  graceMs = DEFAULT_GRACE_MS,
): Rotation {
  if (!Number.isSafeInteger(timestampMs) || timestampMs < 0) throw badRequest('rotation: timestamp must be within 0..2^53-1');
  if (!Number.isSafeInteger(graceMs) || graceMs <= 0 || graceMs > MAX_GRACE_MS) {
    throw badRequest('rotation: the grace period must be positive and at most 7 days');
  }
  const unsigned = { old: oldIdentity.agentId, new: newIdentity.agentId, timestamp: timestampMs, grace_until: timestampMs + graceMs };
  checkRotationWindow(unsigned);
  const message = canonicalBytes(unsigned);
  return {
    ...unsigned,
    signature_old: encodeBase64url(oldIdentity.sign('rotate', message)),
    signature_new: encodeBase64url(newIdentity.sign('rotate', message)),
  };
}

// ---- Agent Cards (registry.md) ----

function checkCardName(name: string): void {
  if (name.length === 0) throw badRequest('card: name must not be empty');
  const bytes = utf8Length(name);
  if (bytes > MAX_CARD_NAME_BYTES) throw badRequest(`card: name must be at most ${MAX_CARD_NAME_BYTES} bytes, got ${bytes}`);
}

function checkDescription(context: string, description: string): void {
  const bytes = utf8Length(description);
  if (bytes > MAX_CARD_DESCRIPTION_BYTES) {
    throw badRequest(`${context}: description must be at most ${MAX_CARD_DESCRIPTION_BYTES} bytes, got ${bytes}`);
  }
}

function checkCapability(value: JsonValue, index: number, seen: Set<string>): void {
  const context = `card: capabilities[${index}]`;
  if (!isJsonObject(value)) throw badRequest(`${context} must be an object`);
  const fields = new FieldReader(value, context);
  fields.rejectUnknown(['name', 'description', 'input_schema', 'output_schema']);
  const name = fields.requiredString('name');
  if (!isCapabilityName(name)) {
    throw badRequest(`${context}.name: ${JSON.stringify(name.slice(0, 64))} is not a capability name ([A-Za-z0-9_-]{1,54})`);
  }
  if (seen.has(name)) throw badRequest(`${context}.name: "${name}" is listed twice`);
  seen.add(name);
  const description = fields.optionalString('description');
  if (description !== undefined) checkDescription(context, description);
  for (const member of ['input_schema', 'output_schema']) {
    const schema = fields.optionalNonNull(member);
    // JSON Schema 2020-12 §4.3: a schema is an object or a boolean.
    if (schema !== undefined && !isJsonObject(schema) && typeof schema !== 'boolean') {
      throw badRequest(`${context}: ${member} must be a JSON Schema (an object or a boolean)`);
    }
  }
}

/** The card rules of registry.md and docs/protocol.md; `signed` says whether `signature` must be there. */
function checkCard(object: JsonObject, signed: boolean): void {
  const fields = new FieldReader(object, 'card');
  fields.rejectUnknown(['agent_id', 'group_id', 'name', 'description', 'capabilities', 'metadata', 'timestamp', 'signature']);
  fields.requiredAgentId('agent_id');
  fields.requiredUuid('group_id');
  checkCardName(fields.requiredString('name'));
  const description = fields.optionalString('description');
  if (description !== undefined) checkDescription('card', description);
  const capabilities = fields.requiredArray('capabilities');
  if (capabilities.length === 0) throw badRequest('card: capabilities must list at least one capability');
  if (capabilities.length > MAX_CARD_CAPABILITIES) {
    throw badRequest(`card: capabilities has ${capabilities.length} entries, more than the limit of ${MAX_CARD_CAPABILITIES}`);
  }
  const seen = new Set<string>();
  capabilities.forEach((capability, i) => checkCapability(capability, i, seen));
  fields.optionalObject('metadata');
  readTimestamp(fields, 'timestamp');
  if (signed) fields.requiredBytes('signature', 64);
  else if (fields.has('signature')) throw badRequest('card: already has a signature');
  // JCS can be longer than the text received, and the canonical form is what is signed and stored.
  const canonicalSize = utf8Length(canonicalize(object));
  if (canonicalSize > MAX_CARD_BYTES) {
    throw new MeshError('too_large', `card: larger than ${MAX_CARD_BYTES} bytes in canonical (JCS) form`);
  }
}

/**
 * Signs a card (purpose `card`, over JCS of the card without `signature`) after checking it as the
 * registry will. Returns a copy with `signature`. The identity must be the card's agent_id.
 */
export function signCard(card: JsonObject, identity: Identity): JsonObject {
  checkCard(card, false);
  // "never lets anyone register someone else's key": only the card's own key signs it.
  if (card.agent_id !== identity.agentId) throw new MeshError('bad_request', 'card: agent_id is not the signing identity');
  const signature = identity.sign('card', canonicalBytes(card));
  return { ...card, signature: encodeBase64url(signature) };
}

/** A signed card (text of at most 256 KiB or a parsed value), checked and verified; throws MeshError. */
export function verifyCard(input: string | JsonValue): JsonObject {
  const object = requireObject(toValue(input, 'card', MAX_CARD_BYTES), 'card');
  checkCard(object, true);
  checkSignatureOf(
    object.agent_id as string,
    'card',
    messageWithout(object, 'signature'),
    object.signature as string,
    'card: signature does not verify for agent_id (purpose card)',
  );
  return object;
}

// ---- Agent-signed HTTP (registry.md "Credentials") ----

/**
 * "<METHOD> <request-target as sent>\n<Host header as sent>\n<ts>": what purpose `http` signs.
 * The body is not covered.
 */
export function httpSigningMessage(method: string, requestTarget: string, host: string, tsMs: number): string {
  return `${method} ${requestTarget}\n${host}\n${tsMs}`;
}

/**
 * The header value `MeshAgent agent_id=<id>,ts=<ms>,sig=<b64url>` for a request sent with exactly
 * this method, request-target (path and query as sent) and Host header (as `URL.host` gives it:
 * host, and port unless it is the scheme's default). The registry accepts it for ±2 min, once.
 */
export function httpAuthorization(
  identity: Identity,
  method: string,
  requestTarget: string,
  host: string,
  nowMs: number,
): string {
  if (!Number.isSafeInteger(nowMs) || nowMs < 0) throw badRequest('http signature: ts must be an integer within 0..2^53-1');
  if (!/^[A-Z]+$/.test(method)) throw badRequest('http signature: the method must be upper-case letters (GET, POST, ...)');
  if (/[\s]/.test(requestTarget) || !requestTarget.startsWith('/')) {
    throw badRequest('http signature: the request-target must start with "/" and contain no whitespace');
  }
  if (host.length === 0 || /[\s/]/.test(host)) throw badRequest('http signature: the Host must be non-empty host[:port]');
  const signature = identity.sign('http', httpSigningMessage(method, requestTarget, host, nowMs));
  return `MeshAgent agent_id=${identity.agentId},ts=${nowMs},sig=${encodeBase64url(signature)}`;
}

/** httpAuthorization for a request to `url` (request-target = pathname + search, Host = url.host). */
export function httpAuthorizationForUrl(identity: Identity, method: string, url: string | URL, nowMs: number): string {
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url) : url;
  } catch {
    throw badRequest('http signature: not a URL');
  }
  return httpAuthorization(identity, method, `${parsed.pathname}${parsed.search}`, parsed.host, nowMs);
}
