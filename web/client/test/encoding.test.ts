// base64url.json (canonical decoding, protocol §1), hex, UTF-8, bytes and UUID units.
import { describe, expect, test } from 'vitest';
import { bytesToHex, concatBytes, equalBytes, hexToBytes, randomBytes, utf8Decode, utf8Encode, utf8Length } from '../src/bytes.js';
import { decodeBase64url, encodeBase64url, encodedLength, isBase64url } from '../src/base64url.js';
import { MeshError } from '../src/errors.js';
import { checkUuidV4, isUuidV4, newUuidV4 } from '../src/uuid.js';
import { loadVectors } from './vectors.js';

const vectors = loadVectors('agent-mesh/base64url.json');

function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).code).toBe('bad_request');
    return (error as MeshError).message;
  }
  throw new Error('did not throw');
}

describe('base64url.json', () => {
  test('valid vectors round-trip', () => {
    expect(vectors.valid).toHaveLength(14);
    for (const v of vectors.valid) {
      const bytes = hexToBytes(v.bytes_hex);
      expect(encodeBase64url(bytes)).toBe(v.text);
      expect(bytesToHex(decodeBase64url(v.text))).toBe(v.bytes_hex);
      expect(bytesToHex(decodeBase64url(v.text, bytes.length))).toBe(v.bytes_hex);
    }
  });

  test('invalid vectors are rejected (aliases included)', () => {
    expect(vectors.invalid).toHaveLength(25);
    let aliases = 0;
    for (const v of vectors.invalid) {
      expect(() => decodeBase64url(v.text), v.reason).toThrow(MeshError);
      expect(isBase64url(v.text)).toBe(false);
      if (v.lenient_bytes_hex !== undefined) {
        aliases++;
        // The canonical text of what a lenient decoder returns is another, valid spelling.
        expect(encodeBase64url(hexToBytes(v.lenient_bytes_hex))).not.toBe(v.text);
      }
    }
    expect(aliases).toBeGreaterThanOrEqual(8);
  });
});

describe('base64url units', () => {
  test('each rejection names its problem', () => {
    expect(messageOf(() => decodeBase64url('AA=='))).toContain('padded');
    expect(messageOf(() => decodeBase64url('AAA '))).toContain('U+0020');
    expect(messageOf(() => decodeBase64url('AB+/'))).toContain("'+'");
    expect(messageOf(() => decodeBase64url('AAAAA'))).toContain('mod 4');
    expect(messageOf(() => decodeBase64url('AB'))).toContain('trailing bits');
    expect(messageOf(() => decodeBase64url('AAé'))).toContain('U+00e9');
    expect(messageOf(() => decodeBase64url('AAAA', 16))).toContain('16 bytes');
  });

  test('every length round-trips and has exactly one text form', () => {
    for (let n = 0; n < 70; n++) {
      const bytes = randomBytes(n);
      const text = encodeBase64url(bytes);
      expect(text.length).toBe(encodedLength(n));
      expect(equalBytes(decodeBase64url(text), bytes)).toBe(true);
    }
    // All 4096 two-character texts: exactly 256 decode, to 256 distinct bytes.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const seen = new Set<number>();
    for (const a of alphabet) {
      for (const b of alphabet) {
        if (isBase64url(a + b)) {
          const byte = decodeBase64url(a + b)[0]!;
          expect(seen.has(byte)).toBe(false);
          seen.add(byte);
        }
      }
    }
    expect(seen.size).toBe(256);
  });
});

describe('bytes', () => {
  test('hex round-trips, accepts both cases, names problems', () => {
    expect(bytesToHex(new Uint8Array([0, 0x7f, 0x80, 0xff]))).toBe('007f80ff');
    expect(bytesToHex(hexToBytes('007F80ff'))).toBe('007f80ff');
    expect(messageOf(() => hexToBytes('abc'))).toContain('odd');
    expect(messageOf(() => hexToBytes('zz'))).toContain('offset 0');
  });

  test('UTF-8 is strict both ways', () => {
    expect(utf8Decode(utf8Encode('é😂'))).toBe('é😂');
    expect(utf8Length('é😂a')).toBe(utf8Encode('é😂a').length);
    expect(messageOf(() => utf8Encode('\ud800'))).toContain('lone UTF-16 surrogate');
    for (const bad of [[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
      expect(messageOf(() => utf8Decode(new Uint8Array(bad)))).toContain('invalid UTF-8');
    }
    // A byte-order mark is kept, never silently stripped.
    expect(utf8Decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x41]))).toBe('\ufeffA');
  });

  test('concat, equality, randomness', () => {
    expect(bytesToHex(concatBytes(new Uint8Array([1]), new Uint8Array(), new Uint8Array([2, 3])))).toBe('010203');
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(equalBytes(new Uint8Array([1]), new Uint8Array([1, 0]))).toBe(false);
    expect(randomBytes(100000).length).toBe(100000); // above WebCrypto's 65,536-byte quota
    expect(equalBytes(randomBytes(32), randomBytes(32))).toBe(false);
  });
});

describe('UUID v4', () => {
  const uuids = loadVectors('agent-mesh/envelope.json').uuids;

  test('envelope.json uuids', () => {
    expect(uuids.valid.length + uuids.invalid.length).toBe(12);
    for (const text of uuids.valid) {
      expect(isUuidV4(text), text).toBe(true);
      expect(checkUuidV4(text)).toBe(text);
    }
    for (const v of uuids.invalid) {
      const text = typeof v === 'string' ? v : v.text;
      expect(isUuidV4(text), text).toBe(false);
      expect(() => checkUuidV4(text), text).toThrow(MeshError);
    }
  });

  test('each rejection names its problem', () => {
    expect(messageOf(() => checkUuidV4(''))).toContain('36 characters');
    expect(messageOf(() => checkUuidV4('3F0C1A52-9D7E-4B8A-8C1E-2A5B6C7D8E9F'))).toContain('lower-case');
    expect(messageOf(() => checkUuidV4('3f0c1a52-9d7e-1b8a-8c1e-2a5b6c7d8e9f'))).toContain('version 4');
    expect(messageOf(() => checkUuidV4('3f0c1a52-9d7e-4b8a-cc1e-2a5b6c7d8e9f'))).toContain('variant');
    expect(messageOf(() => checkUuidV4('3f0c1a52x9d7e-4b8a-8c1e-2a5b6c7d8e9f'))).toContain("'-'");
  });

  test('generated UUIDs are valid and distinct', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newUuidV4();
      expect(isUuidV4(id)).toBe(true);
      seen.add(id);
    }
    expect(seen.size).toBe(1000);
  });
});
