// Byte helpers on plain Uint8Array (no Buffer: the client runs in browsers and edge runtimes).
import { MeshError, badRequest } from './errors.js';

const HEX_DIGITS = '0123456789abcdef';

/** Lower-case hex (protocol vectors and diagnostics). */
export function bytesToHex(bytes: Uint8Array): string {
  let out = '';
  for (const byte of bytes) out += HEX_DIGITS[byte >> 4]! + HEX_DIGITS[byte & 0xf]!;
  return out;
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  return -1;
}

/** Hex of either case (docs/protocol.md); throws MeshError on odd length or a non-hex digit. */
export function hexToBytes(text: string): Uint8Array {
  if (text.length % 2 !== 0) throw badRequest('hex has an odd number of digits');
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexValue(text.charCodeAt(2 * i));
    const lo = hexValue(text.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) {
      const offset = hi < 0 ? 2 * i : 2 * i + 1;
      throw badRequest(`hex contains a non-hex character at offset ${offset}`);
    }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

const encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, never U+FFFD. ignoreBOM: a leading U+FEFF stays in the text
// (the default would silently strip it, so two byte strings would decode to one text).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * UTF-8 of a string. Lone surrogates are refused (TextEncoder would turn them into U+FFFD, and a
 * signature over such text would not cover what the caller meant).
 */
export function utf8Encode(text: string): Uint8Array {
  if (hasLoneSurrogate(text)) throw badRequest('text contains a lone UTF-16 surrogate');
  return encoder.encode(text);
}

/** Strict UTF-8 decoding: invalid sequences (overlong, surrogates, > U+10FFFF) are refused. */
export function utf8Decode(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw badRequest('invalid UTF-8');
  }
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** True if `text` holds a surrogate code unit that is not half of a pair (not valid Unicode). */
export function hasLoneSurrogate(text: string): boolean {
  // With the u flag a well-formed pair is one code point and does not match the class.
  return LONE_SURROGATE.test(text);
}

/** Number of bytes of the UTF-8 encoding of a well-formed string (lone surrogates count 3). */
export function utf8Length(text: string): number {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) length += 1;
    else if (code < 0x800) length += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        length += 4;
        i++;
      } else {
        length += 3;
      }
    } else length += 3;
  }
  return length;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Constant-time equality for equal lengths (secrets, tags, tokens): the time depends only on the
 * length, never on where the first difference is. Lengths are not secret.
 */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** getRandomValues fills at most 65,536 bytes per call (WebCrypto's quota). */
const MAX_RANDOM_CHUNK = 65536;

/** Cryptographically secure random bytes from WebCrypto (browsers, Node ≥ 20, Deno, workers). */
export function randomBytes(length: number): Uint8Array {
  const cryptoApi = (globalThis as { crypto?: Crypto }).crypto;
  if (cryptoApi === undefined || typeof cryptoApi.getRandomValues !== 'function') {
    throw new MeshError('internal', 'no WebCrypto getRandomValues in this runtime');
  }
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += MAX_RANDOM_CHUNK) {
    cryptoApi.getRandomValues(out.subarray(offset, Math.min(length, offset + MAX_RANDOM_CHUNK)));
  }
  return out;
}

/** Overwrites a secret buffer (best effort: JavaScript may have copied it elsewhere). */
export function wipe(bytes: Uint8Array): void {
  bytes.fill(0);
}
