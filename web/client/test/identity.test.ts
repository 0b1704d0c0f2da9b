// keys.json (derived keys, static DH, key file texts), auth.json (relay auth and http signatures)
// and the identity units: domain separation, agent ID parsing, rejection messages.
import { describe, expect, test } from 'vitest';
import { bytesToHex, concatBytes, hexToBytes, utf8Encode } from '../src/bytes.js';
import { decodeBase64url, encodeBase64url } from '../src/base64url.js';
import { MeshError } from '../src/errors.js';
import { x25519Dh } from '../src/ed25519.js';
import {
  Identity,
  PURPOSES,
  checkSigned,
  isValidAgentId,
  publicKeyOfAgentId,
  signaturePrefix,
  signingInput,
  verifySigned,
  x25519PublicOfAgentId,
} from '../src/identity.js';
import { identityOf, loadVectors } from './vectors.js';
import { thrown } from './thrown.js';

const keys = loadVectors('agent-mesh/keys.json');
const auth = loadVectors('agent-mesh/auth.json');

describe('keys.json', () => {
  test('every identity derives every key from its seed', () => {
    expect(keys.identities).toHaveLength(4);
    for (const v of keys.identities) {
      const identity = Identity.fromSeed(hexToBytes(v.seed_hex));
      expect(bytesToHex(identity.publicKey), v.name).toBe(v.ed25519_public_hex);
      expect(identity.agentId, v.name).toBe(v.agent_id);
      expect(bytesToHex(identity.x25519Private), v.name).toBe(v.x25519_private_hex);
      expect(bytesToHex(identity.x25519Public), v.name).toBe(v.x25519_public_hex);
      expect(bytesToHex(x25519PublicOfAgentId(v.agent_id)), v.name).toBe(v.x25519_public_hex);
      expect(identity.keyFileText(), v.name).toBe(`${v.secret_key_text}\n`);
      expect(Identity.fromKeyFileText(v.secret_key_text).agentId, v.name).toBe(v.agent_id);
    }
  });

  test('static DH agrees both ways', () => {
    expect(keys.static_dh).toHaveLength(1);
    for (const dh of keys.static_dh) {
      const a = keys.identities.find((i: { name: string }) => i.name === dh.a);
      const b = keys.identities.find((i: { name: string }) => i.name === dh.b);
      expect(bytesToHex(x25519Dh(hexToBytes(a.x25519_private_hex), hexToBytes(b.x25519_public_hex)))).toBe(dh.shared_hex);
      expect(bytesToHex(x25519Dh(hexToBytes(b.x25519_private_hex), hexToBytes(a.x25519_public_hex)))).toBe(dh.shared_hex);
    }
  });

  test('valid key file texts parse', () => {
    expect(keys.secret_key_files.valid).toHaveLength(2);
    for (const v of keys.secret_key_files.valid) {
      expect(bytesToHex(Identity.fromKeyFileText(v.file_text).seed)).toBe(v.seed_hex);
    }
  });

  test('invalid key file texts are refused with specific messages that never quote the key', () => {
    const expected: Record<string, RegExp> = {
      'more than one trailing newline': /more than one line/,
      'CR before the newline': /carriage return/,
      'leading whitespace': /spaces or tabs/,
      'trailing space': /spaces or tabs/,
      padding: /padding/,
      '42 characters': /got 42 characters/,
      '44 characters': /got 44 characters/,
      'character outside the base64url alphabet': /outside the base64url alphabet/,
    };
    expect(keys.secret_key_files.invalid).toHaveLength(9);
    for (const v of keys.secret_key_files.invalid) {
      const error = thrown(() => Identity.fromKeyFileText(v.file_text));
      expect(error.code, v.reason).toBe('bad_request');
      const pattern = v.reason.startsWith('non-canonical') ? /not canonical/ : expected[v.reason];
      expect(pattern, `no expectation for "${v.reason}"`).toBeDefined();
      expect(error.message, v.reason).toMatch(pattern!);
      expect(error.message).not.toContain('oaGhoaGh');
    }
  });

  test('key file edge cases', () => {
    const text = keys.identities[0].secret_key_text as string;
    expect(() => Identity.fromKeyFileText('')).toThrow(/got 0 characters/);
    expect(() => Identity.fromKeyFileText('\n')).toThrow(/got 0 characters/);
    expect(() => Identity.fromKeyFileText(`${text.slice(0, 5)}\0${text.slice(6)}`)).toThrow(/outside the base64url alphabet/);
    expect(() => Identity.fromKeyFileText(`${text}\t`)).toThrow(/spaces or tabs/);
    expect(() => Identity.fromKeyFileText(`\n${text}`)).toThrow(/more than one line/);
  });
});

describe('auth.json', () => {
  test('signatures over nonce ‖ relay_id verify and reproduce byte for byte', () => {
    expect(signaturePrefix('auth')).toBe(auth.signature_prefix_utf8);
    expect(auth.cases).toHaveLength(3);
    for (const c of auth.cases) {
      const nonce = hexToBytes(c.nonce_hex);
      expect(bytesToHex(decodeBase64url(c.nonce_b64url, 32))).toBe(c.nonce_hex);
      const message = concatBytes(nonce, utf8Encode(c.relay_id));
      expect(bytesToHex(signingInput('auth', message)), c.name).toBe(c.signed_bytes_hex);
      const signature = decodeBase64url(c.signature_b64url, 64);
      expect(verifySigned(c.agent_id, 'auth', message, signature), c.name).toBe(true);
      expect(() => checkSigned(c.agent_id, 'auth', message, signature)).not.toThrow();
      // Ed25519 is deterministic: the vector's signer reproduces the signature.
      expect(encodeBase64url(identityOf(c.agent_id).sign('auth', message)), c.name).toBe(c.signature_b64url);
    }
  });

  test('rejected signatures fail', () => {
    expect(auth.rejected_signatures).toHaveLength(6);
    for (const c of auth.rejected_signatures) {
      expect(c.verdict).toBe('reject');
      const message = concatBytes(decodeBase64url(c.nonce_b64url, 32), utf8Encode(c.relay_id));
      const signature = decodeBase64url(c.signature_b64url, 64);
      expect(verifySigned(c.agent_id, 'auth', message, signature), c.name).toBe(false);
      expect(() => checkSigned(c.agent_id, 'auth', message, signature), c.name).toThrow('signature does not verify');
    }
  });

  test('http signatures (registry.md agent signature) verify, reproduce, and the rejected ones fail', () => {
    const http = auth.http_signatures;
    expect(http.cases).toHaveLength(2);
    for (const c of http.cases) {
      expect(bytesToHex(signingInput('http', c.message_utf8)), c.name).toBe(c.signed_bytes_hex);
      const signature = decodeBase64url(c.signature_b64url, 64);
      expect(verifySigned(c.agent_id, 'http', c.message_utf8, signature), c.name).toBe(true);
      expect(encodeBase64url(identityOf(c.agent_id).sign('http', c.message_utf8)), c.name).toBe(c.signature_b64url);
    }
    expect(http.rejected).toHaveLength(2);
    for (const c of http.rejected) {
      expect(c.verdict).toBe('reject');
      expect(verifySigned(c.agent_id, 'http', c.message_utf8, decodeBase64url(c.signature_b64url, 64)), c.name).toBe(false);
    }
  });
});

describe('domain separation', () => {
  test('prefixes are exact', () => {
    for (const purpose of PURPOSES) expect(signaturePrefix(purpose)).toBe(`agent-mesh/v1/${purpose}\n`);
    expect(new TextDecoder().decode(signingInput('card', 'payload'))).toBe('agent-mesh/v1/card\npayload');
    expect(new TextDecoder().decode(signingInput('rotate', new Uint8Array()))).toBe('agent-mesh/v1/rotate\n');
  });

  test('a signature verifies only for its own purpose', () => {
    const identity = Identity.generate();
    const message = 'the same bytes for every purpose';
    for (const signedFor of PURPOSES) {
      const signature = identity.sign(signedFor, message);
      for (const checkedFor of PURPOSES) {
        expect(verifySigned(identity.agentId, checkedFor, message, signature)).toBe(signedFor === checkedFor);
      }
      expect(verifySigned(identity.publicKey, signedFor, message, signature)).toBe(true);
    }
  });
});

describe('agent IDs and key pairs', () => {
  test('wrong lengths are refused without echoing the input', () => {
    const hostile = 'Z'.repeat(100000);
    const error = thrown(() => publicKeyOfAgentId(hostile));
    expect(error.message).toContain('got 100000');
    expect(error.message.length).toBeLessThan(128);
    expect(error.message).not.toContain('ZZZZ');
    expect(isValidAgentId(hostile)).toBe(false);
    expect(isValidAgentId(42)).toBe(false);
  });

  test('non-canonical base64url IDs are refused (aliases)', () => {
    const alice = keys.identities[0].agent_id as string;
    expect(isValidAgentId(alice)).toBe(true);
    // 'U' → 'V' changes only the unused trailing bits: a lenient decoder returns the same key.
    const alias = `${alice.slice(0, 42)}V`;
    expect(() => publicKeyOfAgentId(alias, 'from')).toThrow(/from is not canonical base64url/);
    expect(() => publicKeyOfAgentId(`${alice.slice(0, 42)}=`)).toThrow(/padded/);
  });

  test('signature length is checked first', () => {
    const identity = Identity.generate();
    expect(verifySigned(identity.agentId, 'auth', 'x', new Uint8Array(63))).toBe(false);
    expect(() => checkSigned(identity.agentId, 'auth', 'x', new Uint8Array(65))).toThrow('signature must be 64 bytes, got 65');
    expect(verifySigned('not an id', 'auth', 'x', new Uint8Array(64))).toBe(false);
  });

  test('seeds must be 32 bytes; generate makes distinct identities; empty messages sign', () => {
    expect(() => Identity.fromSeed(new Uint8Array(31))).toThrow('Ed25519 seed must be 32 bytes, got 31');
    const a = Identity.generate();
    const b = Identity.generate();
    expect(a.agentId).not.toBe(b.agentId);
    expect(verifySigned(a.agentId, 'envelope', new Uint8Array(), a.sign('envelope', new Uint8Array()))).toBe(true);
    expect(Identity.fromSeed(a.seed).agentId).toBe(a.agentId);
  });

  test('a destroyed identity refuses to sign', () => {
    const identity = Identity.generate();
    identity.destroy();
    expect(identity.seed.every((b) => b === 0)).toBe(true);
    expect(() => identity.sign('auth', 'x')).toThrow(/destroyed/);
  });
});
