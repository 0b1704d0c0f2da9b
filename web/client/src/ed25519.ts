// Ed25519 and X25519 with libsodium's verdicts (protocol §1, §2) on @noble/curves.
//
// noble's verify() is cofactored (and ZIP-215 by default); libsodium's crypto_sign_verify_detached,
// which the protocol adopts, is cofactorless and refuses small-order R and A and non-canonical A.
// So verification is written here from noble's point arithmetic, step by step as libsodium does
// it; tests/vectors/agent-mesh/ed25519-edge-cases.json lists where the two differ.
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { MeshError, badRequest } from './errors.js';

const Point = ed25519.Point;
const { p: FIELD_PRIME, n: GROUP_ORDER } = Point.CURVE();

function bytesToBigintLE(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
  return value;
}

/** The y coordinate an encoding names (sign bit of x cleared), possibly ≥ p. */
function encodedY(encoding: Uint8Array): bigint {
  const copy = encoding.slice(0, 32);
  copy[31]! &= 0x7f;
  return bytesToBigintLE(copy);
}

// The y coordinate of a point of order 8 (the other one is p − y). With 0 (order 4), 1 (the
// identity) and p − 1 (order 2) these are the y's of all 8 small-order points, whatever the sign
// of x; p and p + 1 are the non-canonical spellings of 0 and 1. Same set as libsodium's
// ge25519_has_small_order; a unit test checks the order-8 claim with noble's point arithmetic.
const ORDER_8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
const SMALL_ORDER_Y: ReadonlySet<bigint> = new Set([
  0n,
  1n,
  ORDER_8_Y,
  FIELD_PRIME - ORDER_8_Y,
  FIELD_PRIME - 1n,
  FIELD_PRIME,
  FIELD_PRIME + 1n,
]);

/** libsodium ge25519_has_small_order: looks at the encoding only (sign bit ignored). */
function hasSmallOrderEncoding(encoding: Uint8Array): boolean {
  return SMALL_ORDER_Y.has(encodedY(encoding));
}

/** libsodium ge25519_is_canonical: y < p (the sign bit is not judged). */
function isCanonicalEncoding(encoding: Uint8Array): boolean {
  return encodedY(encoding) < FIELD_PRIME;
}

/** Strict decoding (y < p, on the curve); undefined when the bytes name no point. */
function decodePoint(encoding: Uint8Array): ReturnType<typeof Point.fromBytes> | undefined {
  try {
    return Point.fromBytes(encoding, false);
  } catch {
    return undefined;
  }
}

/**
 * crypto_core_ed25519_is_valid_point: canonical, not of small order, on the curve and in the
 * prime-order subgroup. The protocol's test for an agent ID's key (§1).
 */
export function isValidPoint(publicKey: Uint8Array): boolean {
  if (publicKey.length !== 32) return false;
  if (!isCanonicalEncoding(publicKey) || hasSmallOrderEncoding(publicKey)) return false;
  const point = decodePoint(publicKey);
  return point !== undefined && point.isTorsionFree();
}

/**
 * libsodium's crypto_sign_verify_detached verdict, preceded by the length checks its detached API
 * leaves to the caller: signature exactly 64 bytes, key 32; S < L; R not of small order; A
 * canonical, not of small order and on the curve; then the cofactorless equation
 * encode([S]B − [k]A) == R, k = SHA-512(R ‖ A ‖ message) mod L. `message` is the complete signed
 * bytes (domain prefix included). A is not required to be in the prime-order subgroup, exactly as
 * libsodium: agent IDs get that check when they are parsed (isValidPoint).
 */
export function verifyLibsodium(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  const encodedR = signature.subarray(0, 32);
  const s = bytesToBigintLE(signature.subarray(32, 64));
  if (s >= GROUP_ORDER) return false;
  if (hasSmallOrderEncoding(encodedR)) return false;
  if (!isCanonicalEncoding(publicKey) || hasSmallOrderEncoding(publicKey)) return false;
  const a = decodePoint(publicKey);
  if (a === undefined) return false;
  const k = bytesToBigintLE(sha512.create().update(encodedR).update(publicKey).update(message).digest()) % GROUP_ORDER;
  const sB = s === 0n ? Point.ZERO : Point.BASE.multiplyUnsafe(s);
  const kA = k === 0n ? Point.ZERO : a.multiplyUnsafe(k);
  const check = sB.subtract(kA).toBytes();
  // Comparing encodings (not points) is what libsodium does: a non-canonical R never matches.
  let diff = 0;
  for (let i = 0; i < 32; i++) diff |= check[i]! ^ encodedR[i]!;
  return diff === 0;
}

/** Public key of a 32-byte seed (RFC 8032, as libsodium's crypto_sign_seed_keypair). */
export function edPublicKeyOfSeed(seed: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw badRequest(`Ed25519 seed must be 32 bytes, got ${seed.length}`);
  return ed25519.getPublicKey(seed);
}

/** Deterministic RFC 8032 signature over the complete signed bytes. */
export function edSign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw badRequest(`Ed25519 seed must be 32 bytes, got ${seed.length}`);
  return ed25519.sign(message, seed);
}

/**
 * libsodium crypto_sign_ed25519_pk_to_curve25519: u = (1 + y) / (1 − y). Refuses (MeshError) keys
 * libsodium refuses: small order, not on the curve, outside the prime-order subgroup.
 */
export function edPublicToX25519(publicKey: Uint8Array): Uint8Array {
  if (!isValidPoint(publicKey)) {
    throw badRequest('Ed25519 public key is not a valid point (small order, non-canonical or not on the curve)');
  }
  return edValidPublicToX25519(publicKey);
}

/**
 * The same for a key already found valid (an agent ID that parsed): skips the subgroup check, which
 * costs more than the conversion (~0.85 ms in JavaScript) and would run on every cold handshake.
 */
export function edValidPublicToX25519(publicKey: Uint8Array): Uint8Array {
  return ed25519.utils.toMontgomery(publicKey);
}

/** libsodium crypto_sign_ed25519_sk_to_curve25519: clamped first half of SHA-512(seed). */
export function edSeedToX25519(seed: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw badRequest(`Ed25519 seed must be 32 bytes, got ${seed.length}`);
  return Uint8Array.from(ed25519.utils.toMontgomerySecret(seed));
}

/** X25519 public key of a private key (RFC 7748). */
export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== 32) throw badRequest(`X25519 private key must be 32 bytes, got ${privateKey.length}`);
  return x25519.getPublicKey(privateKey);
}

/**
 * X25519 DH (RFC 7748; non-canonical and twist inputs computed as the RFC says). protocol §1: an
 * all-zero output (a low-order public key) aborts the handshake: MeshError(bad_request).
 */
export function x25519Dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  if (privateKey.length !== 32 || publicKey.length !== 32) {
    throw badRequest('X25519 keys must be 32 bytes');
  }
  let shared: Uint8Array;
  try {
    // noble refuses the low-order inputs (the exact set whose output is all zeros) before the
    // ladder, so no timing depends on the secret for them.
    shared = x25519.getSharedSecret(privateKey, publicKey);
  } catch {
    throw zeroSharedSecret();
  }
  let bits = 0;
  for (const byte of shared) bits |= byte;
  if (bits === 0) throw zeroSharedSecret();
  return shared;
}

function zeroSharedSecret(): MeshError {
  return badRequest('X25519 shared secret is all zeros (low-order public key); handshake aborted');
}
