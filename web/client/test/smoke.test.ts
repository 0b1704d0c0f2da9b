import { test, expect } from 'vitest';
import { ed25519 } from '@noble/curves/ed25519.js';

test('noble is importable', () => {
  const { publicKey } = ed25519.keygen(new Uint8Array(32));
  expect(publicKey.length).toBe(32);
});
