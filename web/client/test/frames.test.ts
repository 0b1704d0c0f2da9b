// relay-frames.json and the relay parts of auth.json (frames, relay_id comparison), then a test
// for each rejection path of frames.ts.
import { describe, expect, test } from 'vitest';
import { bytesToHex } from '../src/bytes.js';
import { MeshError, isKnownErrorCode, ALL_ERROR_CODES } from '../src/errors.js';
import { canonicalize } from '../src/jcs.js';
import { parseIJson, type JsonObject } from '../src/ijson.js';
import {
  AUTH_NONCE_BYTES,
  CLOSE_CODES,
  MAX_ACK_IDS,
  MAX_CONTROL_FRAME_BYTES,
  RESUME_TOKEN_BYTES,
  UNDELIVERABLE_CODES,
  ackFrame,
  authFrame,
  authSignedBytes,
  classifyFrame,
  closeCodeFor,
  helloFrame,
  normalizeRelayUrl,
  parseClientFrame,
  parseControlFrame,
  parseRelayFrame,
  pingFrame,
  relayIdMatches,
  serializeControlFrame,
  verifyAuth,
  type AuthFrame,
  type ChallengeFrame,
} from '../src/frames.js';
import { DEFAULT_MAX_ENVELOPE_BYTES } from '../src/envelope.js';
import { identityOf, loadVectors } from './vectors.js';
import { thrown } from './thrown.js';

const frames = loadVectors('agent-mesh/relay-frames.json');
const auth = loadVectors('agent-mesh/auth.json');
const keys = loadVectors('agent-mesh/keys.json');
const ALICE: string = keys.identities[0].agent_id;

const CLIENT_SENDS = new Set(['hello', 'auth', 'ack', 'ping']);

describe('relay-frames.json', () => {
  test('every frame parses and re-serialises to its JCS; only its receiver takes it', () => {
    const entries = Object.entries(frames.frames) as [string, JsonObject][];
    expect(entries).toHaveLength(13);
    const types = new Set<string>();
    for (const [name, frame] of entries) {
      const type = frame.type as string;
      types.add(type);
      if (type === 'auth') continue; // "<see auth.json>": tested with auth.json's frames below
      const text = JSON.stringify(frame);
      const parsed = parseControlFrame(text);
      expect(parsed.type, name).toBe(type);
      expect(serializeControlFrame(parsed), name).toBe(canonicalize(frame));
      const clientSends = CLIENT_SENDS.has(type);
      const wrongSide = clientSends ? () => parseRelayFrame(text) : () => parseClientFrame(text);
      expect(thrown(wrongSide).message, name).toContain(`does not send ${type} frames`);
      expect(clientSends ? parseClientFrame(text) : parseRelayFrame(text), name).toEqual(parsed);
    }
    expect(types.size).toBe(10);
  });

  test('auth.json frames round-trip; the auth signature is the case\'s', () => {
    for (const c of auth.cases) {
      for (const frame of Object.values(c.frames) as JsonObject[]) {
        expect(serializeControlFrame(parseControlFrame(JSON.stringify(frame))), c.name).toBe(canonicalize(frame));
      }
      const parsed = parseClientFrame(JSON.stringify(c.frames.auth)) as AuthFrame;
      expect(parsed.signature).toBe(c.signature_b64url);
      const challenge = parseRelayFrame(JSON.stringify(c.frames.challenge)) as ChallengeFrame;
      expect(bytesToHex(authSignedBytes(challenge.nonce, challenge.relay_id))).toBe(c.signed_bytes_hex);
      expect(verifyAuth(c.agent_id, challenge, parsed), c.name).toBe(true);
      expect(helloFrame(c.agent_id)).toBe(canonicalize(c.frames.hello));
    }
  });

  test('authFrame reproduces the vector signature for the vector key', () => {
    for (const c of auth.cases) {
      const identity = identityOf(c.agent_id);
      const challenge = parseRelayFrame(JSON.stringify(c.frames.challenge)) as ChallengeFrame;
      expect(authFrame(identity, challenge)).toBe(canonicalize(c.frames.auth));
    }
  });

  test('auth.json rejected signatures fail verifyAuth', () => {
    for (const c of auth.rejected_signatures) {
      const challenge: ChallengeFrame = { type: 'challenge', nonce: c.nonce_b64url, relay_id: c.relay_id };
      expect(verifyAuth(c.agent_id, challenge, { type: 'auth', signature: c.signature_b64url }), c.name).toBe(false);
    }
  });

  test('hello cases give the expected code and close code', () => {
    expect(frames.hello_cases).toHaveLength(8);
    for (const c of frames.hello_cases) {
      const text = JSON.stringify(c.hello);
      if (c.expect.next !== undefined) {
        expect(c.expect.next).toBe('challenge');
        const hello = parseClientFrame(text);
        expect(hello).toEqual({ type: 'hello', v: 1, agent_id: c.hello.agent_id });
        continue;
      }
      const error = thrown(() => parseClientFrame(text));
      expect(error.code, c.name).toBe(c.expect.error_code);
      expect(closeCodeFor(error.code), c.name).toBe(c.expect.close);
      expect(error.message.startsWith('hello: '), error.message).toBe(true);
    }
  });

  test('malformed control frames are rejected by their receiver with bad_request (close 4000)', () => {
    expect(frames.malformed_control_frames).toHaveLength(6);
    for (const c of frames.malformed_control_frames) {
      const parse = c.sent_by === 'client' ? parseClientFrame : parseRelayFrame;
      const error = thrown(() => parse(c.text));
      expect(error.code, c.name).toBe('bad_request');
      expect(closeCodeFor(error.code)).toBe(CLOSE_CODES.badRequest);
      if (c.expect.close !== undefined) expect(c.expect.close).toBe(CLOSE_CODES.badRequest);
      expect(() => parseControlFrame(c.text)).toThrow(MeshError);
    }
  });

  test('close codes, undeliverable codes and limits agree', () => {
    expect(frames.close_codes).toHaveLength(11);
    const closes = new Set<number>();
    for (const row of frames.close_codes) {
      closes.add(row.close);
      if (row.error_code !== undefined) {
        expect(isKnownErrorCode(row.error_code), row.error_code).toBe(true);
        expect(closeCodeFor(row.error_code), row.error_code).toBe(row.close);
      }
    }
    expect([...closes].sort()).toEqual(Object.values(CLOSE_CODES).sort());
    expect(closeCodeFor('too_large')).toBe(CLOSE_CODES.tooBig);
    expect([...frames.undeliverable_codes].sort()).toEqual([...UNDELIVERABLE_CODES].sort());
    for (const code of frames.undeliverable_codes) expect(isKnownErrorCode(code)).toBe(true);
    expect(ALL_ERROR_CODES).toHaveLength(27);
    expect(frames.limits.nonce_bytes).toBe(AUTH_NONCE_BYTES);
    expect(frames.limits.resume_token_bytes).toBe(RESUME_TOKEN_BYTES);
    expect(frames.limits.ack_max_ids).toBe(MAX_ACK_IDS);
    expect(frames.limits.control_frame_max_bytes_before_auth).toBe(MAX_CONTROL_FRAME_BYTES);
    expect(frames.limits.max_envelope_bytes_default).toBe(DEFAULT_MAX_ENVELOPE_BYTES);
  });
});

describe('relay_id comparison', () => {
  test('every auth.json case', () => {
    expect(auth.relay_id_comparison).toHaveLength(20);
    for (const c of auth.relay_id_comparison) {
      expect(relayIdMatches(c.dialled, c.relay_id), `${c.dialled} vs ${c.relay_id}: ${c.rule}`).toBe(c.match);
      expect(relayIdMatches(c.relay_id, c.dialled)).toBe(c.match);
    }
  });

  test('normal forms and refused URLs', () => {
    expect(normalizeRelayUrl('WS://LocalHost:9800')).toBe('ws://127.0.0.1:9800/');
    expect(normalizeRelayUrl('wss://[::1]:443/relay/ws')).toBe('wss://127.0.0.1/relay/ws');
    expect(normalizeRelayUrl('wss://Relay.Example.com:8443/Relay/WS')).toBe('wss://relay.example.com:8443/Relay/WS');
    expect(normalizeRelayUrl('ws://relay.example.com?x=1')).toBe('ws://relay.example.com/?x=1');
    expect(normalizeRelayUrl('ws://[FE80::1]:9800/')).toBe('ws://[fe80::1]:9800/');
    for (const refused of [
      'http://relay.example.com/',
      'relay.example.com/relay/ws',
      'ws:/relay',
      'ws://',
      'ws:///relay/ws',
      'ws://user@relay.example.com/',
      'ws://relay.example.com/#frag',
      'ws://relay.example.com:0/',
      'ws://relay.example.com:65536/',
      'ws://relay.example.com:080/',
      'ws://relay.example.com:/',
      'ws://relay.example.com:8a/',
      'ws://[::1/',
      'ws://[]/',
      'ws://[::g]/',
      'ws://[::1]x/',
      'ws://re lay/',
      'ws://h%6Fst/',
      'ws://relay.example.com/é',
      'ws://relay.example.com/a\tb',
    ]) {
      expect(normalizeRelayUrl(refused), refused).toBeNull();
      expect(relayIdMatches(refused, refused), refused).toBe(false);
    }
  });
});

describe('control frame rejections', () => {
  const hello = { type: 'hello', v: 1, agent_id: ALICE };
  const welcome = { type: 'welcome', v: 1, session_token: 'I'.repeat(42) + 'g', heartbeat_ms: 30000, buffered: 0 };
  const reject = (frame: unknown, fragment: string, code = 'bad_request') => {
    const text = typeof frame === 'string' ? frame : JSON.stringify(frame);
    const error = thrown(() => parseControlFrame(text));
    expect(error.code, text).toBe(code);
    expect(error.message, text).toContain(fragment);
  };

  test('version first in hello and welcome: missing → bad_request, anything but the integer 1 → unsupported_version', () => {
    reject({ ...hello, v: 2, features: [] }, 'protocol version 2 is not supported', 'unsupported_version');
    reject({ type: 'hello', agent_id: 'x' }, 'hello: missing member "v"');
    for (const v of ['1', true, null]) reject({ ...hello, v }, 'v must be the integer 1', 'unsupported_version');
    reject(JSON.stringify(hello).replace('"v":1', '"v":1.0'), 'v must be the integer 1', 'unsupported_version');
    expect(parseRelayFrame(JSON.stringify(welcome)).type).toBe('welcome');
    reject({ ...welcome, v: 2 }, 'welcome: protocol version 2', 'unsupported_version');
  });

  test('hello members', () => {
    reject({ ...hello, agent_id: 'x' }, 'hello: agent_id must be 43 characters');
    reject({ ...hello, resume: 'AAAA' }, 'hello: resume must be base64url of 32 bytes');
    reject({ ...hello, resume: null }, 'hello: resume must not be null');
    expect(parseClientFrame(JSON.stringify({ ...hello, resume: 'E'.repeat(42) + 'E' }))).toEqual({ ...hello, resume: 'E'.repeat(43) });
  });

  test('type member', () => {
    reject('[]', 'control frame must be a JSON object');
    reject({ v: 1 }, 'missing member "type"');
    reject({ type: 1 }, 'type must be a string');
    reject({ type: 'hola' }, 'unknown type "hola"');
    reject('{"type":"ping","type":"ping"}', 'duplicate member "type"');
    const big = thrown(() => parseControlFrame(`{"type":"ping","x":"${'a'.repeat(MAX_CONTROL_FRAME_BYTES)}"}`));
    expect(big.code).toBe('too_large');
    expect(closeCodeFor(big.code)).toBe(CLOSE_CODES.tooBig);
  });

  test('challenge, auth, welcome, error, queued', () => {
    reject({ type: 'challenge', nonce: 'AAAA', relay_id: 'ws://x/' }, 'challenge: nonce must be base64url of 32 bytes');
    reject({ type: 'challenge', nonce: 'A'.repeat(43), relay_id: '' }, 'relay_id must not be empty');
    reject({ type: 'auth', signature: 'A'.repeat(85) }, 'auth: signature must be base64url of 64 bytes');
    reject({ ...welcome, heartbeat_ms: 0 }, 'heartbeat_ms must be positive');
    reject({ ...welcome, buffered: -1 }, 'buffered must not be negative');
    reject({ ...welcome, session_token: 'x' }, 'session_token must be base64url of 32 bytes');
    reject({ type: 'error', code: 'oops', message: '' }, 'error: unknown code "oops"');
    reject({ type: 'error', code: 'revoked' }, 'error: missing member "message"');
    reject({ type: 'queued', id: 'nope' }, 'queued: id must be 36 characters');
  });

  test('undeliverable', () => {
    const id = 'a6e50001-0000-4000-8000-000000000001';
    expect(parseRelayFrame(JSON.stringify({ type: 'undeliverable', id: null, code: 'bad_envelope' }))).toEqual({
      type: 'undeliverable',
      id: null,
      code: 'bad_envelope',
    });
    reject({ type: 'undeliverable', code: 'expired' }, 'undeliverable: missing member "id"');
    reject({ type: 'undeliverable', id: 5, code: 'expired' }, 'id must be a UUID string or null');
    reject({ type: 'undeliverable', id, code: 'timeout' }, 'is not one of rate_limited');
    reject({ type: 'undeliverable', id, code: 'rate_limited', retry_after_ms: -1 }, 'retry_after_ms must not be negative');
  });

  test('ack holds 1 to 256 UUIDs; ping and pong have no members', () => {
    const id = 'a6e50001-0000-4000-8000-000000000001';
    reject({ type: 'ack', ids: [] }, 'ack: ids must hold 1 to 256 IDs, got 0');
    reject({ type: 'ack', ids: Array(257).fill(id) }, 'got 257');
    reject({ type: 'ack', ids: [1] }, 'ack: ids[0] must be a string');
    reject({ type: 'ack', ids: [id, 'x'] }, 'ack: ids[1] must be 36 characters');
    expect(parseClientFrame(JSON.stringify({ type: 'ack', ids: [id, id] }))).toEqual({ type: 'ack', ids: [id, id] });
    reject({ type: 'pong', x: 1 }, 'pong: unknown member "x"');
    expect(parseClientFrame(pingFrame())).toEqual({ type: 'ping' });
    expect(parseClientFrame(ackFrame([id]))).toEqual({ type: 'ack', ids: [id] });
    expect(() => ackFrame([])).toThrow(MeshError);
    expect(() => ackFrame(['x'])).toThrow(MeshError);
    expect(() => helloFrame(ALICE, 'AAAA')).toThrow(/32 bytes/);
    expect(parseClientFrame(helloFrame(ALICE, 'E'.repeat(43)))).toEqual({ type: 'hello', v: 1, agent_id: ALICE, resume: 'E'.repeat(43) });
  });

  test('classifyFrame: type or msg_type at the top level', () => {
    expect(classifyFrame(parseIJson('{"type":"ping"}'))).toBe('control');
    expect(classifyFrame(parseIJson('{"msg_type":"request","payload":{"type":1}}'))).toBe('envelope');
    expect(thrown(() => classifyFrame(parseIJson('{"type":"x","msg_type":"y"}'))).message).toContain('both');
    expect(thrown(() => classifyFrame(parseIJson('{"id":1}'))).message).toContain('neither');
    expect(thrown(() => classifyFrame(parseIJson('"x"'))).message).toContain('JSON object');
  });

  test('every truncation of a valid frame is rejected', () => {
    const text = JSON.stringify(frames.frames.welcome);
    for (let i = 0; i < text.length; i++) expect(() => parseControlFrame(text.slice(0, i))).toThrow(MeshError);
  });
});
