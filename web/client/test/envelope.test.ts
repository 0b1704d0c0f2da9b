// envelope.json (every valid and invalid envelope, capability names, §4 bodies) and the units of
// envelope.ts and bodies.ts: structural rules, the receive order, the replay memory.
import { describe, expect, test } from 'vitest';
import { hexToBytes } from '../src/bytes.js';
import { encodeBase64url } from '../src/base64url.js';
import { MeshError } from '../src/errors.js';
import { Identity } from '../src/identity.js';
import { canonicalize } from '../src/jcs.js';
import { parseIJson, type JsonObject } from '../src/ijson.js';
import {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_FUTURE_MS,
  SignedEnvelopeMemory,
  checkFreshness,
  envelopeAd,
  envelopeSigningInput,
  isFresh,
  parseEnvelope,
  parseHandshakePayload,
  receiveEnvelope,
  serializeEnvelope,
  signEnvelope,
  verifyEnvelope,
  type Envelope,
} from '../src/envelope.js';
import {
  chunkBody,
  endBody,
  errorBody,
  errorFromBody,
  handshakeRequest,
  isCapabilityName,
  parseBody,
  parseHandshakeRequest,
  requestBody,
} from '../src/bodies.js';
import { loadVectors } from './vectors.js';
import { thrown } from './thrown.js';

const vectors = loadVectors('agent-mesh/envelope.json');
const NOW: number = vectors.now_ms;
const alice = Identity.fromSeed(hexToBytes('a1'.repeat(32)));
const bob = Identity.fromSeed(hexToBytes('b0'.repeat(32)));

function frameText(v: { received_text?: string; envelope?: unknown }): string {
  return v.received_text ?? JSON.stringify(v.envelope);
}

describe('envelope.json', () => {
  test('now and freshness match the defaults', () => {
    expect(NOW).toBe(1764000600000);
    expect(vectors.freshness.max_future_ms).toBe(DEFAULT_MAX_FUTURE_MS);
    expect(vectors.freshness.max_age_ms).toBe(DEFAULT_MAX_AGE_MS);
  });

  test('every valid envelope is accepted with the exact signing input, and re-signs identically', () => {
    expect(vectors.valid).toHaveLength(7);
    for (const v of vectors.valid) {
      const memory = new SignedEnvelopeMemory();
      const { envelope, object } = receiveEnvelope(frameText(v), v.receiver, NOW, memory);
      expect(envelopeSigningInput(envelope), v.name).toBe(v.signing_input_jcs);
      expect(envelope.signature, v.name).toBe(v.signature_b64url);
      expect(verifyEnvelope(object), v.name).toBe(true);
      expect(memory.size).toBe(1);
      // Ed25519 is deterministic: the sender's key reproduces the published signature.
      const signer = envelope.from === alice.agentId ? alice : bob;
      expect(signEnvelope({ ...envelope }, signer).signature, v.name).toBe(v.signature_b64url);
      // Serialising and parsing again gives the same envelope.
      const again = parseEnvelope(serializeEnvelope(envelope), v.receiver).envelope;
      expect(envelopeSigningInput(again), v.name).toBe(v.signing_input_jcs);
      // The §4 body of every plaintext vector is valid.
      expect(() => parseBody(envelope.msg_type, envelope.payload), v.name).not.toThrow();
      // A second delivery is a replay.
      expect(thrown(() => receiveEnvelope(frameText(v), v.receiver, NOW, memory)).message).toContain('replay');
    }
  });

  test('every invalid envelope is rejected, and nothing enters the replay memory', () => {
    expect(vectors.invalid).toHaveLength(47);
    for (const v of vectors.invalid) {
      const memory = new SignedEnvelopeMemory();
      const label = `${v.name} (${v.reason}, ${v.rule})`;
      const error = thrown(() => receiveEnvelope(v.received_text, v.receiver, NOW, memory));
      expect(error.message.length, label).toBeGreaterThan(0);
      const expectedCode = v.reason === 'too_old' || v.reason === 'too_new' ? 'expired' : 'bad_request';
      expect(error.code, `${label}: ${error.message}`).toBe(expectedCode);
      expect(memory.size, label).toBe(0);
    }
  });

  test('capability names', () => {
    const names = vectors.capability_names;
    expect(names.valid.length + names.invalid.length).toBe(13);
    for (const name of names.valid) expect(isCapabilityName(name), name).toBe(true);
    for (const name of names.invalid) expect(isCapabilityName(name), name).toBe(false);
  });

  test('§4 bodies', () => {
    expect(vectors.bodies).toHaveLength(24);
    let valid = 0;
    for (const b of vectors.bodies) {
      const payload = parseIJson(b.text);
      const label = `${b.msg_type} ${b.text}`;
      if (b.valid) {
        valid++;
        const body = parseBody(b.msg_type, payload);
        // What the parser read is the whole object: its JCS equals the payload's.
        expect(canonicalize(body.body as unknown as JsonObject), label).toBe(canonicalize(payload));
      } else {
        const error = thrown(() => parseBody(b.msg_type, payload));
        expect(error.code, label).toBe('bad_request');
      }
    }
    expect(valid).toBe(8);
  });
});

// A well-formed signed request from Alice to Bob, as JSON to mutate in tests.
function baseRequest(): JsonObject {
  const envelope = signEnvelope(
    {
      id: 'a6e50100-0000-4000-8000-000000000100',
      from: alice.agentId,
      to: bob.agentId,
      msg_type: 'request',
      timestamp: NOW,
      payload: { capability: 'echo', body: 1 },
    },
    alice,
  );
  return JSON.parse(serializeEnvelope(envelope));
}

function baseEncrypted(): JsonObject {
  return {
    id: 'a6e50120-0000-4000-8000-000000000120',
    from: alice.agentId,
    to: bob.agentId,
    msg_type: 'response',
    in_reply_to: 'a6e50100-0000-4000-8000-000000000100',
    timestamp: NOW,
    encrypted: true,
    sid: encodeBase64url(new Uint8Array(16)),
    n: 7,
    payload: encodeBase64url(new Uint8Array(40).fill(0xab)),
  };
}

function parseError(object: JsonObject | string): string {
  const text = typeof object === 'string' ? object : JSON.stringify(object);
  const error = thrown(() => parseEnvelope(text, bob.agentId));
  expect(error.code).toBe('bad_request');
  return error.message;
}

describe('envelope parsing', () => {
  test('the base envelopes are valid', () => {
    expect(() => parseEnvelope(JSON.stringify(baseRequest()), bob.agentId)).not.toThrow();
    const { envelope } = parseEnvelope(JSON.stringify(baseEncrypted()), bob.agentId);
    expect(envelope.encrypted).toBe(true);
    expect(envelope.n).toBe(7);
  });

  test('each structural rejection names the problem', () => {
    const cases: [(o: JsonObject) => void, string][] = [
      [(o) => (o.extra = 1), 'unknown member "extra"'],
      [(o) => (o.in_reply_to = null), '"in_reply_to" must not be null'],
      [(o) => delete o.id, 'missing member "id"'],
      [(o) => (o.id = 'A6E50100-0000-4000-8000-000000000100'), 'lower-case'],
      [(o) => (o.from = 'x'), 'from must be 43 characters'],
      [(o) => (o.to = 42), 'to must be a string'],
      [(o) => (o.msg_type = 'ping'), 'unknown msg_type "ping"'],
      [(o) => (o.timestamp = '1'), 'timestamp must be an integer'],
      [(o) => (o.timestamp = -1), 'timestamp must not be negative'],
      [(o) => (o.encrypted = false), 'encrypted must be true or omitted'],
      [(o) => delete o.payload, 'missing member "payload"'],
      [(o) => delete o.signature, 'must be signed'],
      [(o) => (o.signature = 'AAAA'), 'signature must be base64url of 64 bytes'],
      [(o) => (o.sid = 'AAAAAAAAAAAAAAAAAAAAAA'), 'sid is only allowed on encrypted'],
      [(o) => (o.n = 0), 'n is only allowed on encrypted'],
      [(o) => (o.in_reply_to = 'a6e50100-0000-4000-8000-000000000100'), 'request must not have "in_reply_to"'],
    ];
    for (const [mutate, fragment] of cases) {
      const o = baseRequest();
      mutate(o);
      expect(parseError(o)).toContain(fragment);
    }
  });

  test('encrypted envelope rules', () => {
    const cases: [(o: JsonObject) => void, string][] = [
      [(o) => (o.signature = encodeBase64url(new Uint8Array(64))), 'must not carry a signature'],
      [(o) => delete o.sid, 'need "sid"'],
      [(o) => delete o.n, 'need "n"'],
      [(o) => (o.sid = encodeBase64url(new Uint8Array(15))), 'sid must be base64url of 16 bytes'],
      [(o) => (o.n = -1), 'n must not be negative'],
      [(o) => (o.n = 1.5), 'n must be an integer'],
      [(o) => (o.payload = { x: 1 }), 'must be a base64url string'],
      [(o) => (o.payload = 'AA=='), 'payload: base64url must not be padded'],
      [(o) => (o.msg_type = 'handshake'), 'never encrypted'],
      [(o) => delete o.in_reply_to, 'response needs "in_reply_to"'],
    ];
    for (const [mutate, fragment] of cases) {
      const o = baseEncrypted();
      mutate(o);
      expect(parseError(o)).toContain(fragment);
    }
    // "n" written 7.0 is not an integer (the object above round-trips through JSON.stringify, so text).
    expect(parseError(JSON.stringify(baseEncrypted()).replace('"n":7', '"n":7.0'))).toContain('n must be an integer');
  });

  test('handshake payload and in_reply_to rules', () => {
    const handshake = (payload: unknown, inReplyTo?: string): JsonObject => {
      const o = baseRequest();
      o.msg_type = 'handshake';
      o.payload = payload as JsonObject;
      if (inReplyTo !== undefined) o.in_reply_to = inReplyTo;
      return o;
    };
    const reply = 'a6e50100-0000-4000-8000-000000000100';
    expect(parseError(handshake({ step: 3, noise: 'AAAA' }))).toContain('step must be 1 or 2');
    expect(parseError(handshake({ step: 1, noise: '' }))).toContain('noise must not be empty');
    expect(parseError(handshake({ step: 1, noise: 'AAAA', x: 1 }))).toContain('unknown member "x"');
    expect(parseError(handshake({ step: 1, noise: 'AB' }))).toContain('noise: base64url is not canonical');
    expect(parseError(handshake({ step: 1, noise: 'A'.repeat(87384) }))).toContain('longer than a Noise message');
    expect(parseError(handshake({ step: 2, noise: 'AAAA' }))).toContain('handshake step 2 needs "in_reply_to"');
    expect(parseError(handshake({ step: 1, noise: 'AAAA' }, reply))).toContain('handshake step 1 must not have');
    expect(parseError(handshake([1]))).toContain('handshake payload must be a JSON object');
    expect(parseHandshakePayload({ step: 2, noise: 'AAEC' })).toEqual({ step: 2, noise: new Uint8Array([0, 1, 2]) });
    // Structure is checked before the signature: these need no valid signature to be judged.
    const step2 = parseEnvelope(JSON.stringify(handshake({ step: 2, noise: 'AAAA' }, reply)), bob.agentId);
    expect(step2.envelope.in_reply_to).toBe(reply);
  });

  test('non-objects, JSON errors and oversized frames', () => {
    expect(parseError('[1]')).toContain('envelope must be a JSON object');
    expect(parseError('{"id":1,"id":2}')).toContain('duplicate member');
    const tooBig = thrown(() => parseEnvelope(JSON.stringify(baseRequest()), bob.agentId, { maxBytes: 100 }));
    expect(tooBig.code).toBe('too_large');
    expect(thrown(() => parseEnvelope(JSON.stringify(baseRequest()), alice.agentId)).message).toContain('`to` is not this agent');
  });
});

describe('receiving', () => {
  test('order: parse, to, freshness, signature, replay; only verified envelopes are remembered', () => {
    const memory = new SignedEnvelopeMemory();
    const text = JSON.stringify(baseRequest());
    // Too far ahead: expired, before the signature is even checked.
    expect(thrown(() => receiveEnvelope(text, bob.agentId, NOW - DEFAULT_MAX_FUTURE_MS - 1, memory)).code).toBe('expired');
    // Forged signature: bad_request, and not remembered.
    const forged = baseRequest();
    forged.payload = { capability: 'echo', body: 2 };
    expect(thrown(() => receiveEnvelope(JSON.stringify(forged), bob.agentId, NOW, memory)).message).toContain('signature does not verify');
    expect(memory.size).toBe(0);
    // The genuine one passes once.
    expect(receiveEnvelope(text, bob.agentId, NOW, memory).envelope.id).toBe('a6e50100-0000-4000-8000-000000000100');
    expect(thrown(() => receiveEnvelope(text, bob.agentId, NOW, memory)).message).toContain('replay');
  });

  test('encrypted envelopes skip the clock and the signature', () => {
    const memory = new SignedEnvelopeMemory();
    const old = baseEncrypted();
    old.timestamp = 0;
    expect(receiveEnvelope(JSON.stringify(old), bob.agentId, NOW, memory).envelope.encrypted).toBe(true);
    expect(memory.size).toBe(0);
  });

  test('freshness bounds are inclusive', () => {
    expect(isFresh(NOW + DEFAULT_MAX_FUTURE_MS, NOW)).toBe(true);
    expect(isFresh(NOW + DEFAULT_MAX_FUTURE_MS + 1, NOW)).toBe(false);
    expect(isFresh(NOW - DEFAULT_MAX_AGE_MS, NOW)).toBe(true);
    expect(isFresh(NOW - DEFAULT_MAX_AGE_MS - 1, NOW)).toBe(false);
    expect(isFresh(NOW - 1000, NOW, 500)).toBe(false);
    const envelope = { timestamp: NOW - DEFAULT_MAX_AGE_MS - 1 } as Envelope;
    expect(thrown(() => checkFreshness(envelope, NOW)).message).toContain('ms old');
  });

  test('signing misuse and the AD of an encrypted envelope', () => {
    const encrypted = parseEnvelope(JSON.stringify(baseEncrypted()), bob.agentId).envelope;
    expect(thrown(() => signEnvelope(encrypted, alice)).code).toBe('internal');
    const plain = parseEnvelope(JSON.stringify(baseRequest()), bob.agentId).envelope;
    expect(thrown(() => signEnvelope(plain, bob)).message).toContain('not `from`');
    const ad = new TextDecoder().decode(envelopeAd(encrypted));
    expect(ad).not.toContain('payload');
    expect(ad).toBe(
      canonicalize({
        from: alice.agentId,
        id: 'a6e50120-0000-4000-8000-000000000120',
        in_reply_to: 'a6e50100-0000-4000-8000-000000000100',
        msg_type: 'response',
        encrypted: true,
        n: 7,
        sid: 'AAAAAAAAAAAAAAAAAAAAAA',
        timestamp: NOW,
        to: bob.agentId,
      }),
    );
  });

  test('verifyEnvelope is false (never throws) for malformed objects', () => {
    expect(verifyEnvelope({})).toBe(false);
    const o = baseRequest();
    o.signature = 'short';
    expect(verifyEnvelope(o)).toBe(false);
    const lone = baseRequest();
    lone.payload = '\ud800';
    expect(verifyEnvelope(lone)).toBe(false);
  });
});

describe('SignedEnvelopeMemory', () => {
  const id = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

  test('duplicates, expiry and bounds with floors', () => {
    const memory = new SignedEnvelopeMemory({ maxAgeMs: 1000, maxPerSender: 3, maxTotal: 5 });
    memory.remember('a', id(1), 100, 100);
    expect(thrown(() => memory.remember('a', id(1), 100, 100)).code).toBe('bad_request');
    memory.remember('b', id(1), 100, 100); // same ID from another sender is fine
    // Entries go once their timestamp is older than now − max_age.
    memory.remember('a', id(2), 200, 1150);
    expect(memory.has('a', id(1))).toBe(false);
    expect(memory.has('a', id(2))).toBe(true);
    // Per-sender bound: the oldest goes and the sender's floor rises to its timestamp.
    memory.remember('a', id(3), 300, 1150);
    memory.remember('a', id(4), 400, 1150);
    memory.remember('a', id(5), 500, 1150); // evicts id(2) @200
    expect(memory.has('a', id(2))).toBe(false);
    expect(thrown(() => memory.remember('a', id(2), 200, 1150)).code).toBe('expired'); // replay refused
    expect(thrown(() => memory.remember('a', id(9), 150, 1150)).code).toBe('expired');
    // Global bound: 4 entries now (a: 3, b expired); fill to 5, then the next evicts the oldest.
    memory.remember('c', id(1), 600, 1150);
    expect(memory.size).toBe(4);
    memory.remember('c', id(2), 700, 1150);
    memory.remember('c', id(3), 800, 1150); // evicts a's @300, global floor 300
    expect(memory.size).toBe(5);
    expect(thrown(() => memory.remember('d', id(1), 300, 1150)).message).toContain('under load');
  });

  test('stays bounded under a long flood', () => {
    const memory = new SignedEnvelopeMemory({ maxAgeMs: 10_000, maxPerSender: 100, maxTotal: 1000 });
    for (let i = 0; i < 20000; i++) memory.remember(`s${i % 7}`, id(i), i, i);
    expect(memory.size).toBeLessThanOrEqual(700);
  });
});

describe('bodies: builders and message 1', () => {
  test('builders produce what the parsers accept, and refuse what peers would refuse', () => {
    expect(parseBody('request', requestBody('echo', { a: 1 }, 5000)).body).toEqual({ capability: 'echo', body: { a: 1 }, timeout_ms: 5000 });
    expect(parseBody('error', errorBody('rate_limited', 'slow', 20)).body).toEqual({ code: 'rate_limited', message: 'slow', retry_after_ms: 20 });
    expect(parseBody('stream_chunk', chunkBody(0, 'x')).body).toEqual({ seq: 0, body: 'x' });
    expect(parseBody('stream_end', endBody(3)).body).toEqual({ seq: 3 });
    expect(() => requestBody('a.b', 1)).toThrow(MeshError);
    expect(() => requestBody('echo', 1, 0)).toThrow(/timeout_ms/);
    expect(() => chunkBody(-1, 1)).toThrow(/seq/);
    expect(() => errorBody('made_up' as never, 'x')).toThrow(/unknown error code/);
    const error = errorFromBody({ code: 'rate_limited', message: 'slow', retry_after_ms: 20 });
    expect(error.code).toBe('rate_limited');
    expect(error.retryAfterMs).toBe(20);
  });

  test('error bodies accept every known code and nothing else', () => {
    expect(parseBody('error', { code: 'no_session', message: '' }).body).toEqual({ code: 'no_session', message: '' });
    expect(parseBody('error', { code: 'buffer_full', message: '' }).msg_type).toBe('error');
    expect(thrown(() => parseBody('error', { code: 'nope', message: '' })).message).toContain('unknown error code "nope"');
    expect(thrown(() => parseBody('handshake', {})).message).toContain('no §4 body');
  });

  test('message-1 request JSON', () => {
    const json = handshakeRequest('stream_request', 'count', { n: 3 }, 1000);
    expect(parseHandshakeRequest(json)).toEqual({ msg_type: 'stream_request', capability: 'count', body: { n: 3 }, timeout_ms: 1000 });
    expect(thrown(() => parseHandshakeRequest({ ...json, extra: 1 })).message).toContain('unknown member "extra"');
    expect(thrown(() => parseHandshakeRequest({ ...json, msg_type: 'response' })).message).toContain('msg_type must be');
    expect(thrown(() => parseHandshakeRequest({ capability: 'x', body: 1 })).message).toContain('missing member "msg_type"');
  });
});
