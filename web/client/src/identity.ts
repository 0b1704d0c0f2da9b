// Agent identity (protocol §1, §2): an Ed25519 key pair whose public key is the agent ID,
// domain-separated signatures, the X25519 static keys derived from it for Noise, and the secret
// key file text.
import { MeshError, badRequest } from './errors.js';
import { concatBytes, randomBytes, utf8Encode, wipe } from './bytes.js';
import { decodeBase64url, encodeBase64url } from './base64url.js';
import {
  edPublicKeyOfSeed,
  edPublicToX25519,
  edValidPublicToX25519,
  edSeedToX25519,
  edSign,
  isValidPoint,
  verifyLibsodium,
} from './ed25519.js';

export const PURPOSES = ['auth', 'envelope', 'revoke', 'rotate', 'card', 'http'] as const;
export type Purpose = (typeof PURPOSES)[number];

const PREFIXES: Readonly<Record<Purpose, Uint8Array>> = Object.fromEntries(
  PURPOSES.map((purpose) => [purpose, utf8Encode(`agent-mesh/v1/${purpose}\n`)]),
) as Record<Purpose, Uint8Array>;

/** "agent-mesh/v1/<purpose>\n": every signature covers it, so one purpose never verifies as another. */
export function signaturePrefix(purpose: Purpose): string {
  return `agent-mesh/v1/${purpose}\n`;
}

/** prefix ‖ message: the exact bytes Ed25519 signs. A string message means its UTF-8. */
export function signingInput(purpose: Purpose, message: Uint8Array | string): Uint8Array {
  const prefix = PREFIXES[purpose];
  if (prefix === undefined) throw badRequest(`unknown signature purpose ${JSON.stringify(String(purpose))}`);
  return concatBytes(prefix, typeof message === 'string' ? utf8Encode(message) : message);
}

// ---- Agent IDs ----

export const AGENT_ID_CHARS = 43;

// The subgroup check costs a scalar multiplication in BigInt arithmetic, and every envelope names
// two agent IDs that are almost always the same few. Positive verdicts are remembered (bounded;
// cleared when full, which only costs recomputation).
const KNOWN_VALID_IDS = new Set<string>();
const MAX_KNOWN_VALID_IDS = 4096;

/**
 * The 32-byte key of an agent ID, or MeshError(bad_request) naming why the text is not one:
 * 43 characters of canonical base64url of a key libsodium's crypto_core_ed25519_is_valid_point
 * accepts. `what` names the field in messages ("from", "agent_id", ...).
 */
export function publicKeyOfAgentId(text: string, what = 'agent ID'): Uint8Array {
  // Length first, so nothing of an arbitrarily long hostile string is processed or echoed.
  if (typeof text !== 'string') throw badRequest(`${what} must be a string`);
  if (text.length !== AGENT_ID_CHARS) {
    throw badRequest(`${what} must be 43 characters, got ${text.length}`);
  }
  let key: Uint8Array;
  try {
    key = decodeBase64url(text, 32);
  } catch (error) {
    throw badRequest(`${what} is not canonical base64url: ${(error as Error).message}`);
  }
  if (KNOWN_VALID_IDS.has(text)) return key;
  if (!isValidPoint(key)) {
    throw badRequest(`${what} is not a valid Ed25519 public key (small order, non-canonical or not on the curve)`);
  }
  if (KNOWN_VALID_IDS.size >= MAX_KNOWN_VALID_IDS) KNOWN_VALID_IDS.clear();
  KNOWN_VALID_IDS.add(text);
  return key;
}

/** Returns `text` if it is a valid agent ID, else throws MeshError(bad_request). */
export function checkAgentId(text: string, what = 'agent ID'): string {
  publicKeyOfAgentId(text, what);
  return text;
}

export function isValidAgentId(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  try {
    publicKeyOfAgentId(text);
    return true;
  } catch {
    return false;
  }
}

/** The agent ID of a 32-byte public key; refuses keys that are not valid points. */
export function agentIdOfPublicKey(publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw badRequest(`agent ID public key must be 32 bytes, got ${publicKey.length}`);
  if (!isValidPoint(publicKey)) {
    throw badRequest('agent ID is not a valid Ed25519 public key (small order, non-canonical or not on the curve)');
  }
  return encodeBase64url(publicKey);
}

/** The X25519 static public key derived from an agent ID (crypto_sign_ed25519_pk_to_curve25519). */
export function x25519PublicOfAgentId(text: string): Uint8Array {
  return edValidPublicToX25519(publicKeyOfAgentId(text)); // validated (and remembered) by the parse
}

// ---- Verification ----

/**
 * True iff `signature` is a valid signature of signingInput(purpose, message) by the signer
 * (an agent ID, which must be valid, or a raw 32-byte public key), with libsodium's verdicts.
 */
export function verifySigned(
  signer: string | Uint8Array,
  purpose: Purpose,
  message: Uint8Array | string,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  let publicKey: Uint8Array;
  if (typeof signer === 'string') {
    if (!isValidAgentId(signer)) return false;
    publicKey = publicKeyOfAgentId(signer);
  } else {
    publicKey = signer;
  }
  return verifyLibsodium(publicKey, signingInput(purpose, message), signature);
}

/** verifySigned that throws MeshError(bad_request) naming the problem instead of returning false. */
export function checkSigned(
  signer: string | Uint8Array,
  purpose: Purpose,
  message: Uint8Array | string,
  signature: Uint8Array,
): void {
  if (signature.length !== 64) throw badRequest(`signature must be 64 bytes, got ${signature.length}`);
  const publicKey = typeof signer === 'string' ? publicKeyOfAgentId(signer, 'signer') : signer;
  if (!verifyLibsodium(publicKey, signingInput(purpose, message), signature)) {
    throw badRequest('signature does not verify');
  }
}

// ---- Key pairs ----

const SEED_CHARS = 43;
const BASE64URL_CHAR = /^[A-Za-z0-9_-]$/;

/**
 * An agent's identity: the 32-byte Ed25519 seed and everything derived from it. The secret fields
 * are readonly references; do not mutate them. `destroy()` wipes them (best effort).
 */
export class Identity {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly agentId: string;
  /** crypto_sign_ed25519_sk_to_curve25519 of the seed: the Noise static private key. */
  readonly x25519Private: Uint8Array;
  /** crypto_sign_ed25519_pk_to_curve25519 of the public key: the Noise static public key. */
  readonly x25519Public: Uint8Array;
  private destroyed = false;

  private constructor(seed: Uint8Array) {
    this.seed = Uint8Array.from(seed);
    this.publicKey = edPublicKeyOfSeed(this.seed);
    // A key derived from a seed is the clamped scalar times the base point: always a valid ID.
    this.agentId = agentIdOfPublicKey(this.publicKey);
    this.x25519Private = edSeedToX25519(this.seed);
    this.x25519Public = edPublicToX25519(this.publicKey);
  }

  static generate(): Identity {
    const seed = randomBytes(32);
    try {
      return new Identity(seed);
    } finally {
      wipe(seed);
    }
  }

  static fromSeed(seed: Uint8Array): Identity {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) {
      throw badRequest(`Ed25519 seed must be 32 bytes, got ${seed instanceof Uint8Array ? seed.length : typeof seed}`);
    }
    return new Identity(seed);
  }

  /**
   * The secret key file format (protocol §2): exactly 43 base64url characters of the seed,
   * optionally followed by one "\n". Each departure has its own message; none quotes the text,
   * which holds a secret.
   */
  static fromKeyFileText(text: string): Identity {
    let body = text;
    if (body.endsWith('\n')) body = body.slice(0, -1);
    const rule = 'it must be 43 base64url characters, optionally followed by one "\\n"';
    if (body.includes('\r')) throw badRequest(`key file contains a carriage return (CRLF line ending?); ${rule}`);
    if (body.includes('\n')) throw badRequest(`key file has more than one line; ${rule}`);
    if (/[ \t\v\f]/.test(body)) throw badRequest('key file contains spaces or tabs; it must be exactly 43 base64url characters');
    if (body.includes('=')) throw badRequest("key file must not use base64 padding ('=')");
    if (body.length !== SEED_CHARS) {
      throw badRequest(
        `key file must hold 43 base64url characters (optionally followed by one "\\n"), got ${body.length} characters`,
      );
    }
    for (const char of body) {
      if (!BASE64URL_CHAR.test(char)) {
        throw badRequest(
          "key file contains a character outside the base64url alphabet (A-Z a-z 0-9 - _; standard base64's '+' and '/' are not accepted)",
        );
      }
    }
    let seed: Uint8Array;
    try {
      seed = decodeBase64url(body, 32);
    } catch {
      // Length and alphabet are checked: only non-zero trailing bits are left (protocol §1 aliases).
      throw badRequest('key file is not canonical base64url (non-zero unused trailing bits)');
    }
    try {
      return new Identity(seed);
    } finally {
      wipe(seed);
    }
  }

  /** The key file text: 43 characters and "\n". */
  keyFileText(): string {
    return `${encodeBase64url(this.seed)}\n`;
  }

  /** Ed25519 over "agent-mesh/v1/<purpose>\n" ‖ message (a string means its UTF-8). */
  sign(purpose: Purpose, message: Uint8Array | string): Uint8Array {
    if (this.destroyed) throw new MeshError('internal', 'this identity was destroyed and can no longer sign');
    return edSign(this.seed, signingInput(purpose, message));
  }

  /** Wipes the secret keys; the identity cannot sign afterwards. */
  destroy(): void {
    this.destroyed = true;
    wipe(this.seed);
    wipe(this.x25519Private);
  }
}
