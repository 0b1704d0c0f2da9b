// Noise IK as agent-mesh uses it, against tests/vectors/agent-mesh/ik-handshake.json byte for byte:
// both handshakes (signed step-1/step-2 envelopes, Noise messages, handshake hash, sid), all 15
// transport envelopes in sealing order (AD, counters, pieces, ciphertext; the large ones by hash),
// and the receiver checks at the session level (the endpoint-level ones are in endpoint.test.ts).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

import { encodeBase64url } from '../src/base64url.js';
import { bytesToHex, hexToBytes, utf8Decode, utf8Encode } from '../src/bytes.js';
import type { Envelope } from '../src/envelope.js';
import { Identity } from '../src/identity.js';
import { canonicalize } from '../src/jcs.js';
import type { JsonObject } from '../src/ijson.js';
import { type TransportKeys, dhKeyPairFromSecret } from '../src/noise.js';
import {
  MESSAGE1_MAX_PAYLOAD,
  MAX_COUNTER,
  NoiseSession,
  PIECE_MAX_CIPHERTEXT,
  PIECE_MAX_PLAINTEXT,
  ReplayWindow,
  SessionTable,
  acceptHandshake,
  finishHandshake,
  startHandshake,
} from '../src/session.js';

const vectorsDir = fileURLToPath(new URL('../../../tests/vectors/agent-mesh/', import.meta.url));
const load = (name: string) => JSON.parse(readFileSync(vectorsDir + name, 'utf8'));
const ik = load('ik-handshake.json');
const keys = load('keys.json');

const identities: Record<string, Identity> = {};
for (const entry of keys.identities as { name: string; seed_hex: string }[]) {
  identities[entry.name] = Identity.fromSeed(hexToBytes(entry.seed_hex));
}

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');
const withoutSignature = (envelope: JsonObject) => {
  const copy = { ...envelope };
  delete copy['signature'];
  return copy;
};

interface Established {
  initiator: NoiseSession;
  responder: NoiseSession;
}

function runHandshake(h: any): Established {
  const initiator = identities[h.initiator]!;
  const responder = identities[h.responder]!;
  const m1 = h.message1;
  const m2 = h.message2;
  const started = startHandshake(
    initiator,
    responder.agentId,
    utf8Encode(m1.payload_utf8),
    m1.envelope.id,
    m1.envelope.timestamp,
    dhKeyPairFromSecret(hexToBytes(h.initiator_ephemeral_private_hex)),
  );
  expect(started.step1).toEqual(m1.envelope);
  const accepted = acceptHandshake(
    responder,
    m1.envelope as Envelope,
    m2.envelope.id,
    m2.envelope.timestamp,
    dhKeyPairFromSecret(hexToBytes(h.responder_ephemeral_private_hex)),
  );
  expect(accepted.step2).toEqual(m2.envelope);
  expect(utf8Decode(accepted.message1Payload)).toBe(m1.payload_utf8);
  const session = finishHandshake(started.pending, m2.envelope as Envelope, m2.envelope.timestamp);
  expect(started.pending.state.handshakeHash).toEqual(hexToBytes(h.handshake_hash_hex));
  return { initiator: session, responder: accepted.session };
}

function plaintextOf(t: any): Uint8Array {
  if (t.plaintext_utf8 !== undefined) return utf8Encode(t.plaintext_utf8);
  const rule = t.plaintext_rule;
  return utf8Encode(rule.prefix + rule.repeat.repeat(rule.count) + rule.suffix);
}

describe('ik-handshake.json', () => {
  test('limits are the ones the code uses', () => {
    expect(ik.prologue_utf8).toBe('agent-mesh/v1');
    expect(ik.limits.message1_max_payload_bytes).toBe(MESSAGE1_MAX_PAYLOAD);
    expect(ik.limits.piece_max_plaintext_bytes).toBe(PIECE_MAX_PLAINTEXT);
    expect(ik.limits.piece_max_ciphertext_bytes).toBe(PIECE_MAX_CIPHERTEXT);
    expect(ik.limits.max_counter).toBe(MAX_COUNTER);
    expect(ik.limits.replay_window_min).toBeLessThanOrEqual(ReplayWindow.BITS - (ReplayWindow.WORD_BITS - 1));
    expect(ik.limits.max_consecutive_decryption_failures).toBe(new SessionTable().limits.maxConsecutiveFailures);
    for (const name of ['alice', 'bob']) {
      expect(identities[name]!.agentId).toBe(ik.identities[name].agent_id);
      expect(bytesToHex(identities[name]!.x25519Private)).toBe(ik.identities[name].x25519_private_hex);
    }
  });

  test.each(ik.handshakes.map((h: any) => [h.name, h]) as [string, any][])('handshake %s', (_name, h) => {
    for (const m of [h.message1, h.message2]) {
      expect(canonicalize(withoutSignature(m.envelope))).toBe(m.envelope_signing_input_jcs);
      expect(bytesToHex(Uint8Array.from(Buffer.from(m.envelope.payload.noise, 'base64url')))).toBe(m.noise_hex);
    }
    const { initiator, responder } = runHandshake(h);
    expect(initiator.sid).toBe(h.sid);
    expect(responder.sid).toBe(h.sid);
    expect(initiator.weInitiated).toBe(true);
    expect(responder.weInitiated).toBe(false);
    expect(initiator.peer).toBe(identities[h.responder]!.agentId);
    expect(responder.peer).toBe(identities[h.initiator]!.agentId);
  });

  test('transport envelopes, in sealing order, byte for byte', () => {
    const sessions: Record<string, Established> = {};
    for (const h of ik.handshakes) sessions[h.name] = runHandshake(h);
    let checked = 0;
    for (const t of ik.transport) {
      const pair = sessions[t.handshake]!;
      const [sender, receiver] =
        t.direction === 'initiator->responder' ? [pair.initiator, pair.responder] : [pair.responder, pair.initiator];
      expect(sender.nextSendCounter, t.name).toBe(t.n);
      const reference = (t.envelope ?? t.envelope_without_payload) as JsonObject;
      const plaintext = plaintextOf(t);
      if (t.plaintext_sha256_hex !== undefined) expect(sha256(plaintext)).toBe(t.plaintext_sha256_hex);
      const sealed = sender.seal(
        {
          id: reference['id'] as string,
          from: reference['from'] as string,
          to: reference['to'] as string,
          msg_type: reference['msg_type'] as Envelope['msg_type'],
          ...(reference['in_reply_to'] !== undefined ? { in_reply_to: reference['in_reply_to'] as string } : {}),
          timestamp: reference['timestamp'] as number,
        },
        plaintext,
      );
      const { payload, ...header } = sealed;
      expect(canonicalize(header as JsonObject), t.name).toBe(t.ad_utf8);
      expect(header).toEqual(t.envelope_without_payload ?? (({ payload: _p, ...rest }) => rest)(t.envelope));
      const ciphertext = Uint8Array.from(Buffer.from(payload as string, 'base64url'));
      expect(Math.ceil(ciphertext.length / PIECE_MAX_CIPHERTEXT)).toBe(t.pieces);
      t.piece_details.forEach((piece: any, i: number) => {
        const end = Math.min(ciphertext.length, (i + 1) * PIECE_MAX_CIPHERTEXT);
        expect(end - i * PIECE_MAX_CIPHERTEXT).toBe(piece.ciphertext_length);
        expect(bytesToHex(ciphertext.subarray(end - 16, end))).toBe(piece.tag_hex);
      });
      if (t.envelope !== undefined) {
        expect(sealed).toEqual(t.envelope);
        expect(bytesToHex(ciphertext)).toBe(t.ciphertext_hex);
      } else {
        expect(ciphertext.length).toBe(t.ciphertext_length);
        expect(sha256(ciphertext)).toBe(t.ciphertext_sha256_hex);
        expect((payload as string).length).toBe(t.payload_b64url_length);
        expect(sha256(payload as string)).toBe(t.payload_b64url_sha256_hex);
      }
      expect(bytesToHex(receiver.open(sealed))).toBe(bytesToHex(plaintext));
      expect(receiver.lastRefusal).toBe('none');
      checked += 1;
    }
    expect(checked).toBe(15);
  });

  describe('receiver checks at the session level', () => {
    // A fresh responder session of handshake A (fixed ephemerals: the same keys every time).
    const fresh = () => runHandshake(ik.handshakes[0]).responder;

    for (const check of ik.receiver_checks) {
      const expect_ = check.expect as string;
      if (!expect_.includes('AEAD')) continue;
      test(check.name, () => {
        const session = fresh();
        expect(() => session.open(check.envelope as Envelope)).toThrow(/decryption failed/);
        expect(session.lastRefusal).toBe('authentication');
        expect(session.consecutiveFailures).toBe(1);
        // The untampered envelope still opens: a failed tag never moves the window.
        const base = ik.transport.find((t: any) => t.name === check.base).envelope;
        expect(utf8Decode(session.open(base as Envelope)).length).toBeGreaterThan(0);
        expect(session.consecutiveFailures).toBe(0);
      });
    }

    test('same envelope delivered twice: the second is a replay, not a decryption failure', () => {
      const check = ik.receiver_checks.find((c: any) => c.name === 'same envelope delivered twice');
      const session = fresh();
      session.open(check.envelope as Envelope);
      expect(() => session.open(check.envelope as Envelope)).toThrow(/replay/);
      expect(session.lastRefusal).toBe('replayed');
      expect(session.consecutiveFailures).toBe(0);
    });
  });
});

describe('session rules', () => {
  const a = () => runHandshake(ik.handshakes[0]);

  test('16 consecutive failures break a session; a success resets the count', () => {
    const { initiator, responder } = a();
    const limits = new SessionTable().limits;
    const good = initiator.seal(
      { id: '00000000-0000-4000-8000-000000000001', from: initiator.peer, to: responder.peer, msg_type: 'request', timestamp: 1 },
      utf8Encode('{}'),
    );
    const second = initiator.seal(
      { id: '00000000-0000-4000-8000-000000000004', from: initiator.peer, to: responder.peer, msg_type: 'request', timestamp: 1 },
      utf8Encode('{}'),
    );
    const bad = { ...second, timestamp: 2 }; // the header is the AD: a tampered one never verifies
    for (let i = 0; i < 15; i++) expect(() => responder.open(bad)).toThrow();
    expect(responder.broken(limits)).toBe(false);
    responder.open(good);
    expect(responder.consecutiveFailures).toBe(0);
    for (let i = 0; i < 16; i++) expect(() => responder.open(bad)).toThrow();
    expect(responder.broken(limits)).toBe(true);
  });

  test('a multi-piece payload with one bad piece counts once and marks nothing', () => {
    const { initiator, responder } = a();
    const sealed = initiator.seal(
      { id: '00000000-0000-4000-8000-000000000002', from: responder.peer, to: initiator.peer, msg_type: 'request', timestamp: 1 },
      new Uint8Array(PIECE_MAX_PLAINTEXT * 2 + 5),
    );
    const bytes = Uint8Array.from(Buffer.from(sealed.payload as string, 'base64url'));
    bytes[PIECE_MAX_CIPHERTEXT + 3]! ^= 1; // the second piece
    const tampered = { ...sealed, payload: encodeBase64url(bytes) };
    expect(() => responder.open(tampered)).toThrow(/decryption failed/);
    expect(responder.consecutiveFailures).toBe(1);
    expect(responder.open(sealed).length).toBe(PIECE_MAX_PLAINTEXT * 2 + 5);
  });

  test('malformed payloads are refused before any decryption', () => {
    const { initiator, responder } = a();
    const sealed = initiator.seal(
      { id: '00000000-0000-4000-8000-000000000003', from: responder.peer, to: initiator.peer, msg_type: 'request', timestamp: 1 },
      new Uint8Array(PIECE_MAX_PLAINTEXT + 1),
    );
    const bytes = Uint8Array.from(Buffer.from(sealed.payload as string, 'base64url'));
    // A last piece shorter than a tag.
    const extra = bytes.subarray(0, PIECE_MAX_CIPHERTEXT + 10);
    expect(() => responder.open({ ...sealed, payload: encodeBase64url(extra) })).toThrow(/shorter than an AEAD tag/);
    expect(responder.lastRefusal).toBe('malformed');
    // Two pieces starting at 2^53 − 1 would need counter 2^53.
    expect(() => responder.open({ ...sealed, n: MAX_COUNTER })).toThrow(/2\^53/);
    expect(() => responder.open({ ...sealed, n: MAX_COUNTER + 1 })).toThrow(/2\^53/);
    expect(responder.consecutiveFailures).toBe(0);
  });

  test('the replay window accepts reordering within it and refuses what fell behind', () => {
    const w = new ReplayWindow();
    for (const c of [5, 3, 4, 0, 10_000]) {
      expect(w.check(c)).toBe('fresh');
      w.mark(c);
    }
    expect(w.check(4)).toBe('too_old');
    expect(w.check(10_000)).toBe('replayed');
    expect(w.check(10_000 - 2048)).toBe('fresh');
    w.mark(10_000 - 2048);
    expect(w.check(10_000 - 2048)).toBe('replayed');
    expect(w.check(9_999)).toBe('fresh');
    w.mark(10_000 + 4096 * 3);
    expect(w.check(10_000)).toBe('too_old');
    expect(w.check(10_001 + 4096 * 3)).toBe('fresh');
    w.mark(31);
    expect(w.highest).toBe(10_000 + 4096 * 3);
  });

  test('the window has the geometry of the C++ core (64 words of 64 bits): the same verdicts everywhere', () => {
    expect([ReplayWindow.BITS, ReplayWindow.WORD_BITS]).toEqual([4096, 64]);
    // C++: after 4127 (word 64), word 0 (counters 0–63) has been recycled: too old; word 1 is kept.
    const w = new ReplayWindow();
    w.mark(4127);
    for (const c of [0, 31, 32, 63]) expect(w.check(c), String(c)).toBe('too_old');
    for (const c of [64, 95, 96, 127, 4126]) expect(w.check(c), String(c)).toBe('fresh');
    w.mark(64);
    w.mark(127);
    expect([w.check(64), w.check(127), w.check(65)]).toEqual(['replayed', 'replayed', 'fresh']);
    // Sliding clears both halves of each recycled word.
    w.mark(4127 + 64);
    expect([w.check(64), w.check(127), w.check(128), w.check(4127)]).toEqual(['too_old', 'too_old', 'fresh', 'replayed']);
    const cpp = (highest: number, c: number) => Math.floor(highest / 64) - Math.floor(c / 64) >= 64;
    const v = new ReplayWindow();
    v.mark(100_000);
    for (let c = 100_000 - 4200; c <= 100_000; c += 7) expect(v.check(c) === 'too_old', String(c)).toBe(cpp(100_000, c));
  });

  test('table: 8 responder sessions per peer, initiated ones retire older ones, lifetimes', () => {
    const table = new SessionTable({ maxAgeMs: 1000, retireGraceMs: 100, maxEnvelopes: 2 });
    const peer = identities['bob']!.agentId;
    // Bookkeeping only: these sessions never seal or open.
    const make = (sid: string, weInitiated: boolean, created: number) =>
      new NoiseSession(sid, peer, weInitiated, {} as TransportKeys, created);
    for (let i = 0; i < 10; i++) table.add(make(`r${i}`, false, i), i);
    expect(table.sessionCountFor(peer)).toBe(8);
    expect(table.find(peer, 'r0')).toBeUndefined();
    expect(table.find(peer, 'r2')).toBeDefined();
    const first = table.add(make('i1', true, 20), 20);
    expect(table.sessionForNewRequests(peer, 20)).toBe(first);
    const second = table.add(make('i2', true, 30), 30);
    expect(first.retiredAt).toBe(30);
    expect(table.sessionForNewRequests(peer, 30)).toBe(second);
    table.expire(129);
    expect(table.find(peer, 'i1')).toBeDefined();
    table.expire(130);
    expect(table.find(peer, 'i1')).toBeUndefined();
    expect(table.sessionForNewRequests(peer, 1030)).toBeUndefined(); // worn out by age
    expect(second.retiredAt).toBe(1030);
    table.expire(1130);
    expect(table.sessionCountFor(peer)).toBe(0);
    expect(table.sessionCount).toBe(0);
  });
});
