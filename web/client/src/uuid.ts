// UUID v4 (protocol §1): lower-case canonical 8-4-4-4-12 text, version nibble 4, variant 8–b.
// One text form per UUID, so receivers reject everything else.
import { badRequest } from './errors.js';
import { bytesToHex, randomBytes } from './bytes.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isUuidV4(text: unknown): text is string {
  return typeof text === 'string' && UUID_V4.test(text);
}

/** Throws MeshError(bad_request) naming the first rule the text breaks. */
export function checkUuidV4(text: string, what = 'UUID'): string {
  if (UUID_V4.test(text)) return text;
  if (text.length !== 36) throw badRequest(`${what} must be 36 characters (8-4-4-4-12), got ${text.length}`);
  for (const offset of [8, 13, 18, 23]) {
    if (text[offset] !== '-') throw badRequest(`${what} must have '-' at offset ${offset}`);
  }
  if (!/^[0-9a-f-]*$/.test(text)) throw badRequest(`${what} must be lower-case hex`);
  if (text[14] !== '4') throw badRequest(`${what} is not version 4 (version nibble must be 4)`);
  throw badRequest(`${what} variant nibble must be 8, 9, a or b`);
}

export function newUuidV4(): string {
  const bytes = randomBytes(16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytesToHex(bytes);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
