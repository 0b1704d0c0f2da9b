// Canonical base64url without padding (protocol §1, RFC 4648 §5): every byte string has exactly
// one text form, otherwise a revoked key could come back under an alias.
import { badRequest } from './errors.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

// 0..63 for alphabet characters, 255 otherwise (indexed by char code < 128).
const VALUE = (() => {
  const table = new Uint8Array(128).fill(255);
  for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i;
  return table;
})();

export function encodedLength(byteLength: number): number {
  return Math.floor(byteLength / 3) * 4 + [0, 2, 3][byteLength % 3]!;
}

export function encodeBase64url(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[(v >> 18) & 63]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]! + ALPHABET[v & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const v = bytes[i]! << 16;
    out += ALPHABET[(v >> 18) & 63]! + ALPHABET[(v >> 12) & 63]!;
  } else if (rest === 2) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[(v >> 18) & 63]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]!;
  }
  return out;
}

/** Names a rejected character without echoing arbitrary hostile text. */
function describeChar(text: string, offset: number): string {
  const code = text.charCodeAt(offset);
  const shown = code >= 0x21 && code < 0x7f ? `'${text[offset]}'` : `U+${code.toString(16).padStart(4, '0')}`;
  return `character ${shown} at offset ${offset}`;
}

/**
 * Canonical decoding: rejects padding, whitespace, non-alphabet characters, lengths ≡ 1 (mod 4)
 * and non-zero unused trailing bits, each with a message naming the rule. With `expectedLength`
 * the text must encode exactly that many bytes (checked first, so a huge hostile string is never
 * scanned).
 */
export function decodeBase64url(text: string, expectedLength?: number): Uint8Array {
  if (expectedLength !== undefined && text.length !== encodedLength(expectedLength)) {
    throw badRequest(
      `expected base64url of ${expectedLength} bytes (${encodedLength(expectedLength)} characters), got ${text.length} characters`,
    );
  }
  if (text.length % 4 === 1) {
    throw badRequest(`base64url length ${text.length} is impossible (≡ 1 mod 4)`);
  }
  const out = new Uint8Array(Math.floor(text.length / 4) * 3 + (text.length % 4 === 0 ? 0 : (text.length % 4) - 1));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const v = code < 128 ? VALUE[code]! : 255;
    if (v === 255) {
      if (code === 0x3d) throw badRequest(`base64url must not be padded ('=' at offset ${i})`);
      throw badRequest(`base64url contains a non-alphabet ${describeChar(text, i)}`);
    }
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // The 2 or 4 leftover bits must be zero, or two texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1 << bits) - 1)) !== 0) {
    throw badRequest('base64url is not canonical: non-zero unused trailing bits');
  }
  return out;
}

/** True if `text` is canonical base64url (of `expectedLength` bytes when given). */
export function isBase64url(text: string, expectedLength?: number): boolean {
  try {
    decodeBase64url(text, expectedLength);
    return true;
  } catch {
    return false;
  }
}
