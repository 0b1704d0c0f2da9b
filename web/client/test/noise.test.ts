// The generic Noise HandshakeState against the cacophony vectors (Noise_IK and Noise_XX with
// 25519_ChaChaPoly_BLAKE2b, and the other interactive fundamental patterns present in the file):
// every handshake message, the handshake hash, and the transport messages after split, byte for byte.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

import { bytesToHex, hexToBytes } from '../src/bytes.js';
import { MeshError } from '../src/errors.js';
import {
  CipherState,
  HandshakeState,
  PATTERN_NAMES,
  dhKeyPairFromSecret,
  patternFromProtocolName,
  protocolName,
  type Pattern,
  type TransportKeys,
} from '../src/noise.js';

interface CacophonyVector {
  protocol_name: string;
  init_prologue: string;
  init_static?: string;
  init_ephemeral: string;
  init_remote_static?: string;
  init_psks?: string[];
  resp_prologue: string;
  resp_static?: string;
  resp_ephemeral?: string;
  resp_remote_static?: string;
  resp_psks?: string[];
  handshake_hash?: string;
  messages: { payload: string; ciphertext: string }[];
}

const vectorsPath = fileURLToPath(new URL('../../../tests/vectors/noise-cacophony-25519-chachapoly.json', import.meta.url));
const all = (JSON.parse(readFileSync(vectorsPath, 'utf8')) as { vectors: CacophonyVector[] }).vectors;
const vectors = all.filter((v) => patternFromProtocolName(v.protocol_name) !== undefined);

function side(v: CacophonyVector, initiator: boolean): HandshakeState {
  const pattern = patternFromProtocolName(v.protocol_name) as Pattern;
  const s = initiator ? v.init_static : v.resp_static;
  const e = initiator ? v.init_ephemeral : v.resp_ephemeral;
  const rs = initiator ? v.init_remote_static : v.resp_remote_static;
  return HandshakeState.create({
    pattern,
    initiator,
    prologue: hexToBytes(initiator ? v.init_prologue : v.resp_prologue),
    ...(s !== undefined ? { localStatic: dhKeyPairFromSecret(hexToBytes(s)) } : {}),
    ...(e !== undefined ? { localEphemeral: dhKeyPairFromSecret(hexToBytes(e)) } : {}),
    ...(rs !== undefined ? { remoteStatic: hexToBytes(rs) } : {}),
  });
}

describe('cacophony vectors', () => {
  test('the file has the two patterns the protocol requires', () => {
    const names = vectors.map((v) => v.protocol_name);
    expect(names).toContain('Noise_IK_25519_ChaChaPoly_BLAKE2b');
    expect(names).toContain('Noise_XX_25519_ChaChaPoly_BLAKE2b');
    // One vector per interactive fundamental pattern we implement.
    expect(new Set(names).size).toBe(PATTERN_NAMES.length);
  });

  test.each(vectors.map((v) => [v.protocol_name, v] as const))('%s', (_name, v) => {
    const initiator = side(v, true);
    const responder = side(v, false);
    let keys: { init: TransportKeys; resp: TransportKeys } | undefined;
    let checked = 0;
    v.messages.forEach((m, index) => {
      const payload = hexToBytes(m.payload);
      if (keys === undefined) {
        const [writer, reader] = index % 2 === 0 ? [initiator, responder] : [responder, initiator];
        expect(writer.isMyTurn()).toBe(true);
        const message = writer.writeMessage(payload);
        expect(bytesToHex(message)).toBe(m.ciphertext);
        expect(bytesToHex(reader.readMessage(message))).toBe(m.payload);
        if (initiator.isComplete()) {
          expect(responder.isComplete()).toBe(true);
          if (v.handshake_hash !== undefined) {
            expect(bytesToHex(initiator.handshakeHash)).toBe(v.handshake_hash);
            expect(bytesToHex(responder.handshakeHash)).toBe(v.handshake_hash);
          }
          keys = { init: initiator.split(), resp: responder.split() };
        }
      } else {
        // Transport phase: cacophony alternates directions after the handshake, starting with the
        // side whose turn it would be next; for one-way patterns always initiator → responder.
        const fromInitiator = index % 2 === 0;
        const [send, receive] = fromInitiator ? [keys.init.send, keys.resp.receive] : [keys.resp.send, keys.init.receive];
        const ciphertext = send.encryptWithAd(new Uint8Array(0), payload);
        expect(bytesToHex(ciphertext)).toBe(m.ciphertext);
        expect(bytesToHex(receive.decryptWithAd(new Uint8Array(0), ciphertext))).toBe(m.payload);
      }
      checked += 1;
    });
    expect(checked).toBe(v.messages.length);
    expect(keys).toBeDefined();
  });
});

describe('HandshakeState rules', () => {
  const v = all.find((x) => x.protocol_name === 'Noise_IK_25519_ChaChaPoly_BLAKE2b')!;

  test('protocol names round-trip and foreign suites are refused', () => {
    expect(protocolName('IK')).toBe('Noise_IK_25519_ChaChaPoly_BLAKE2b');
    expect(patternFromProtocolName('Noise_IK_25519_ChaChaPoly_SHA256')).toBeUndefined();
    expect(patternFromProtocolName('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b')).toBeUndefined();
  });

  test('a remote static key the peer sends cannot be preset; a needed one must be', () => {
    const s = dhKeyPairFromSecret(hexToBytes(v.resp_static!));
    expect(() => HandshakeState.create({ pattern: 'IK', initiator: false, localStatic: s, remoteStatic: s.publicKey })).toThrow(
      MeshError,
    );
    expect(() => HandshakeState.create({ pattern: 'IK', initiator: true, localStatic: s })).toThrow(/in advance/);
    expect(() => HandshakeState.create({ pattern: 'XX', initiator: true })).toThrow(/local static key/);
  });

  test('a tampered message fails the handshake for good', () => {
    const initiator = side(v, true);
    const responder = side(v, false);
    const message = initiator.writeMessage(new Uint8Array(3));
    message[message.length - 1]! ^= 1;
    expect(() => responder.readMessage(message)).toThrow(/authentication failed/);
    expect(responder.isFailed()).toBe(true);
    expect(() => responder.writeMessage()).toThrow(/already failed/);
  });

  test('wrong turns, short messages and low-order keys are refused', () => {
    const initiator = side(v, true);
    expect(() => initiator.readMessage(new Uint8Array(48))).toThrow(/not our turn/);
    const responder = side(v, false);
    expect(() => responder.readMessage(new Uint8Array(20))).toThrow(/too short/);
    const lowOrder = side(v, false);
    // An all-zero ephemeral is a low-order point: the es DH is all zeros.
    expect(() => lowOrder.readMessage(new Uint8Array(32 + 48 + 16))).toThrow(/all-zero DH|low-order/);
  });

  test('explicit-nonce AEAD: order-independent, tamper-evident', () => {
    const c = new CipherState(new Uint8Array(32).fill(7));
    const ad = new Uint8Array([1, 2, 3]);
    const a = c.encryptAt(5, ad, new Uint8Array([9]));
    const b = c.encryptAt(4n, ad, new Uint8Array([8]));
    expect(c.decryptAt(4, ad, b)).toEqual(new Uint8Array([8]));
    expect(c.decryptAt(5, ad, a)).toEqual(new Uint8Array([9]));
    expect(c.decryptAt(6, ad, a)).toBeUndefined();
    expect(c.decryptAt(5, new Uint8Array([1, 2]), a)).toBeUndefined();
    expect(c.decryptAt(2n ** 64n - 1n, ad, a)).toBeUndefined();
    expect(c.nonce).toBe(0n);
  });
});
