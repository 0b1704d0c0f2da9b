// Wycheproof ChaCha20-Poly1305 through @noble/ciphers, the AEAD the session layer uses (Noise
// ChaChaPoly): every valid case seals and opens byte for byte, every invalid one is refused.
import { describe, expect, test } from 'vitest';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { bytesToHex, concatBytes, hexToBytes } from '../src/bytes.js';
import { loadVectors } from './vectors.js';

describe('Wycheproof ChaCha20-Poly1305', () => {
  test('every case matches the expected verdict', () => {
    const vectors = loadVectors('wycheproof-chacha20_poly1305_test.json');
    let cases = 0;
    let sealed = 0;
    for (const group of vectors.testGroups) {
      for (const t of group.tests) {
        cases++;
        const label = `tcId ${t.tcId}: ${t.comment} [${t.flags.join(',')}]`;
        const key = hexToBytes(t.key);
        const nonce = hexToBytes(t.iv);
        const aad = hexToBytes(t.aad);
        const sealedText = concatBytes(hexToBytes(t.ct), hexToBytes(t.tag));
        let opened: Uint8Array | undefined;
        try {
          opened = chacha20poly1305(key, nonce, aad).decrypt(sealedText);
        } catch {
          opened = undefined;
        }
        if (t.result === 'valid') {
          expect(opened && bytesToHex(opened), label).toBe(t.msg);
          expect(bytesToHex(chacha20poly1305(key, nonce, aad).encrypt(hexToBytes(t.msg))), label).toBe(t.ct + t.tag);
          sealed++;
        } else {
          // No case here is "acceptable"; invalid ones (forged tags, wrong nonce sizes) must not open.
          expect(t.result, label).toBe('invalid');
          expect(opened, label).toBeUndefined();
        }
      }
    }
    expect(cases).toBe(vectors.numberOfTests);
    expect(cases).toBe(325);
    expect(sealed).toBe(256);
  });
});
