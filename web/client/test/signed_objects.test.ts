// revocation-rotation.json, the registry agent signature (auth.json http_signatures) and Agent
// Card signing, with the rejection paths of signed_objects.ts.
import { describe, expect, test } from 'vitest';
import { decodeBase64url } from '../src/base64url.js';
import { MeshError } from '../src/errors.js';
import { verifySigned } from '../src/identity.js';
import { canonicalize } from '../src/jcs.js';
import type { JsonObject } from '../src/ijson.js';
import {
  MAX_GRACE_MS,
  httpAuthorization,
  httpAuthorizationForUrl,
  httpSigningMessage,
  isInGrace,
  parseRevocation,
  parseRotation,
  signCard,
  signRevocation,
  signRotation,
  verifyCard,
  verifyRevocation,
  verifyRotation,
} from '../src/signed_objects.js';
import { identityNamed, identityOf, loadVectors } from './vectors.js';
import { thrown } from './thrown.js';

const vectors = loadVectors('agent-mesh/revocation-rotation.json');
const auth = loadVectors('agent-mesh/auth.json');
const alice = identityNamed('alice');
const carol = identityNamed('carol');

describe('revocation-rotation.json', () => {
  test('valid revocations verify and reproduce', () => {
    expect(vectors.revocations.valid).toHaveLength(1);
    for (const v of vectors.revocations.valid) {
      const revocation = verifyRevocation(v.object);
      expect(canonicalize({ agent_id: revocation.agent_id, reason: revocation.reason, timestamp: revocation.timestamp })).toBe(v.signing_input_jcs);
      expect(verifyRevocation(JSON.stringify(v.object))).toEqual(revocation);
      const signer = identityNamed(v.signer);
      expect(signRevocation(signer, revocation.reason, revocation.timestamp)).toEqual(v.object);
    }
  });

  test('invalid revocations are refused', () => {
    expect(vectors.revocations.invalid).toHaveLength(6);
    for (const v of vectors.revocations.invalid) {
      const error = thrown(() => verifyRevocation(v.object));
      expect(error.code, v.name).toBe('bad_request');
      expect(() => verifyRevocation(JSON.stringify(v.object)), v.name).toThrow(MeshError);
    }
  });

  test('valid rotations verify and reproduce', () => {
    expect(vectors.rotations.valid).toHaveLength(1);
    for (const v of vectors.rotations.valid) {
      const rotation = verifyRotation(v.object);
      const { signature_old: _o, signature_new: _n, ...unsigned } = rotation;
      void _o;
      void _n;
      expect(canonicalize(unsigned)).toBe(v.signing_input_jcs);
      const again = signRotation(identityNamed(v.old), identityNamed(v.new), rotation.timestamp, rotation.grace_until - rotation.timestamp);
      expect(again).toEqual(v.object);
      expect(isInGrace(rotation, rotation.grace_until - 1)).toBe(true);
      expect(isInGrace(rotation, rotation.grace_until)).toBe(false);
    }
  });

  test('invalid rotations are refused', () => {
    expect(vectors.rotations.invalid).toHaveLength(6);
    for (const v of vectors.rotations.invalid) {
      const error = thrown(() => verifyRotation(v.object));
      expect(error.code, v.name).toBe('bad_request');
      expect(() => verifyRotation(JSON.stringify(v.object)), v.name).toThrow(MeshError);
    }
  });
});

describe('revocation and rotation rules', () => {
  const revocation = signRevocation(alice, 'lost', 1764000000000);

  test('revocation structure', () => {
    expect(thrown(() => verifyRevocation({ ...revocation, extra: 1 })).message).toContain('unknown member "extra"');
    expect(thrown(() => verifyRevocation({ ...revocation, reason: 'x'.repeat(1025) })).message).toContain('at most 1024 bytes');
    expect(thrown(() => verifyRevocation({ ...revocation, timestamp: -1 })).message).toContain('must not be negative');
    expect(thrown(() => verifyRevocation(JSON.stringify(revocation).replace('1764000000000', '1764000000000.0'))).message).toContain(
      'timestamp must be an integer',
    );
    const { signature: _s, ...admin } = revocation;
    void _s;
    expect(thrown(() => verifyRevocation(admin)).message).toContain('missing member "signature"');
    expect(parseRevocation(admin, false)).toEqual(admin); // the admin form, over an authenticated channel
    expect(() => parseRevocation({ ...admin, signature: 'AAAA' }, false)).toThrow(/base64url of 64 bytes/);
    expect(thrown(() => verifyRevocation('x'.repeat(5000))).code).toBe('too_large');
    expect(thrown(() => verifyRevocation({ ...revocation, reason: 'other' })).message).toContain('does not verify');
  });

  test('rotation window is checked before any signature', () => {
    const rotation = signRotation(alice, carol, 1000, 5000);
    expect(verifyRotation(rotation)).toEqual(rotation);
    expect(thrown(() => parseRotation({ ...rotation, new: rotation.old })).message).toContain('old and new must be different');
    expect(thrown(() => parseRotation({ ...rotation, grace_until: 1000 })).message).toContain('later than timestamp');
    expect(thrown(() => parseRotation({ ...rotation, grace_until: 1000 + MAX_GRACE_MS + 1 })).message).toContain('at most 7 days');
    expect(parseRotation({ ...rotation, grace_until: 1000 + MAX_GRACE_MS }).grace_until).toBe(1000 + MAX_GRACE_MS);
    expect(thrown(() => verifyRotation({ ...rotation, signature_new: rotation.signature_old })).message).toContain('signature_new');
    expect(thrown(() => verifyRotation({ ...rotation, signature_old: rotation.signature_new })).message).toContain('signature_old');
    expect(() => signRotation(alice, carol, 0, MAX_GRACE_MS + 1)).toThrow(/at most 7 days/);
    expect(() => signRotation(alice, alice, 0)).toThrow(/different/);
  });
});

describe('agent signature (registry.md, purpose http)', () => {
  test('auth.json http cases: the header is reproduced byte for byte', () => {
    for (const c of auth.http_signatures.cases) {
      const identity = identityOf(c.agent_id);
      expect(httpSigningMessage(c.method, c.request_target, c.host, c.ts)).toBe(c.message_utf8);
      expect(httpAuthorization(identity, c.method, c.request_target, c.host, c.ts), c.name).toBe(c.authorization);
      const url = `http://${c.host}${c.request_target}`;
      expect(httpAuthorizationForUrl(identity, c.method, url, c.ts), c.name).toBe(c.authorization);
    }
  });

  test('the signature verifies only for its Host, target and ts', () => {
    const header = httpAuthorization(alice, 'GET', '/api/v1/agents', 'example.com', 5);
    const signature = decodeBase64url(header.split(',sig=')[1]!, 64);
    expect(verifySigned(alice.agentId, 'http', 'GET /api/v1/agents\nexample.com\n5', signature)).toBe(true);
    expect(verifySigned(alice.agentId, 'http', 'GET /api/v1/agents\nexample.org\n5', signature)).toBe(false);
    expect(verifySigned(alice.agentId, 'auth', 'GET /api/v1/agents\nexample.com\n5', signature)).toBe(false);
  });

  test('misuse is refused', () => {
    expect(() => httpAuthorization(alice, 'get', '/x', 'h', 1)).toThrow(/upper-case/);
    expect(() => httpAuthorization(alice, 'GET', 'x', 'h', 1)).toThrow(/request-target/);
    expect(() => httpAuthorization(alice, 'GET', '/x y', 'h', 1)).toThrow(/request-target/);
    expect(() => httpAuthorization(alice, 'GET', '/x', '', 1)).toThrow(/Host/);
    expect(() => httpAuthorization(alice, 'GET', '/x', 'h', 1.5)).toThrow(/ts/);
    expect(() => httpAuthorizationForUrl(alice, 'GET', 'not a url', 1)).toThrow(MeshError);
  });
});

describe('Agent Cards', () => {
  const group = '3f0c1a52-9d7e-4b8a-8c1e-2a5b6c7d8e9f';
  const card = (): JsonObject => ({
    agent_id: alice.agentId,
    group_id: group,
    name: 'alice',
    capabilities: [{ name: 'chat', description: 'talk', input_schema: { type: 'object' }, output_schema: true }],
    metadata: { version: '1.0.0' },
    timestamp: 1764000000000,
  });

  test('signCard signs JCS of the card without signature (purpose card) and verifyCard accepts it', () => {
    const signed = signCard(card(), alice);
    const signature = decodeBase64url(signed.signature as string, 64);
    expect(verifySigned(alice.agentId, 'card', canonicalize(card()), signature)).toBe(true);
    expect(verifyCard(signed)).toEqual(signed);
    expect(verifyCard(JSON.stringify(signed))).toEqual(signed);
    expect(thrown(() => verifyCard({ ...signed, name: 'mallory' })).message).toContain('does not verify');
  });

  test('card rules are checked before signing', () => {
    const cases: [(c: JsonObject) => void, string][] = [
      [(c) => (c.extra = 1), 'unknown member "extra"'],
      [(c) => (c.name = ''), 'name must not be empty'],
      [(c) => (c.name = 'x'.repeat(129)), 'at most 128 bytes'],
      [(c) => (c.description = 'x'.repeat(4097)), 'at most 4096 bytes'],
      [(c) => (c.capabilities = []), 'at least one capability'],
      [(c) => (c.capabilities = Array.from({ length: 65 }, (_, i) => ({ name: `c${i}` }))), 'more than the limit of 64'],
      [(c) => (c.capabilities = [{ name: 'a.b' }]), 'is not a capability name'],
      [(c) => (c.capabilities = [{ name: 'a' }, { name: 'a' }]), 'listed twice'],
      [(c) => (c.capabilities = [{ name: 'a', input_schema: 3 }]), 'must be a JSON Schema'],
      [(c) => (c.capabilities = [{ name: 'a', input_schema: null }]), 'must not be null'],
      [(c) => (c.metadata = [1]), 'metadata must be an object'],
      [(c) => (c.group_id = 'nope'), 'group_id must be 36 characters'],
      [(c) => (c.timestamp = -1), 'timestamp must not be negative'],
      [(c) => (c.signature = 'x'), 'already has a signature'],
    ];
    for (const [mutate, fragment] of cases) {
      const c = card();
      mutate(c);
      expect(thrown(() => signCard(c, alice)).message).toContain(fragment);
    }
    expect(thrown(() => signCard(card(), carol)).message).toContain('not the signing identity');
    const huge = card();
    huge.metadata = { blob: 'x'.repeat(300 * 1024) };
    expect(thrown(() => signCard(huge, alice)).code).toBe('too_large');
  });
});
