// The sans-IO Endpoint: two (or three) engines wired together in memory with a fake clock, no
// sockets. Cold and warm requests, streams and their reordering, cancellation (warm and during the
// handshake), deadlines both ways, no_session and the retry, single-flight handshakes, plaintext
// peers, relay `undeliverable`, early replies, and hostile input (tampered headers, replays, wrong
// sessions, stale or repeated signed envelopes); plus the endpoint-level receiver checks of
// ik-handshake.json.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

import { hexToBytes } from '../src/bytes.js';
import { type Envelope, parseEnvelope, serializeEnvelope, signEnvelope } from '../src/envelope.js';
import { MeshError } from '../src/errors.js';
import { Identity } from '../src/identity.js';
import type { JsonObject, JsonValue } from '../src/ijson.js';
import { canonicalize } from '../src/jcs.js';
import {
  Endpoint,
  type EndpointEvent,
  type EndpointOptions,
  type IncomingRequestEvent,
  type OutgoingFrame,
} from '../src/endpoint.js';
import { dhKeyPairFromSecret } from '../src/noise.js';
import { SessionTable, acceptHandshake, startHandshake } from '../src/session.js';
import { newUuidV4 } from '../src/uuid.js';

const T0 = 1_764_000_000_000;

const seed = (byte: number) => new Uint8Array(32).fill(byte);
const aliceId = Identity.fromSeed(seed(0xa1));
const bobId = Identity.fromSeed(seed(0xb0));
const carolId = Identity.fromSeed(seed(0xc3));

/** Endpoints wired together: frames wait in `wire` until delivered. */
class Net {
  now = T0;
  readonly endpoints = new Map<string, Endpoint>();
  readonly events = new Map<string, EndpointEvent[]>();
  wire: OutgoingFrame[] = [];

  add(identity: Identity, options: EndpointOptions = {}): Endpoint {
    const endpoint = new Endpoint(identity, options);
    this.endpoints.set(identity.agentId, endpoint);
    this.events.set(identity.agentId, []);
    return endpoint;
  }

  /** Moves every endpoint's outgoing frames onto the wire and its events into `events`. */
  collect(): void {
    for (const [id, endpoint] of this.endpoints) {
      this.wire.push(...endpoint.takeOutgoing());
      this.events.get(id)!.push(...endpoint.takeEvents());
    }
  }

  /** Takes the frames on the wire (after collecting). */
  take(): OutgoingFrame[] {
    this.collect();
    const out = this.wire;
    this.wire = [];
    return out;
  }

  deliver(frames: OutgoingFrame[]): void {
    for (const frame of frames) this.endpoints.get(frame.to)?.receive(frame.frame, this.now);
    this.collect();
  }

  /** Delivers the frames on the wire now (one hop); returns them. */
  step(): OutgoingFrame[] {
    const frames = this.take();
    this.deliver(frames);
    return frames;
  }

  /** Delivers until the wire is empty. */
  settle(): void {
    for (let rounds = 0; rounds < 100; rounds++) {
      const frames = this.take();
      if (frames.length === 0) return;
      this.deliver(frames);
    }
    throw new Error('the endpoints never went quiet');
  }

  tick(ms: number): void {
    this.now += ms;
    for (const endpoint of this.endpoints.values()) endpoint.tick(this.now);
    this.collect();
  }

  /** Events of `identity` so far, emptied. */
  drain(identity: Identity): EndpointEvent[] {
    this.collect();
    const list = this.events.get(identity.agentId)!;
    const out = [...list];
    list.length = 0;
    return out;
  }
}

function only<T extends EndpointEvent['type']>(events: EndpointEvent[], type: T): Extract<EndpointEvent, { type: T }>[] {
  return events.filter((e): e is Extract<EndpointEvent, { type: T }> => e.type === type);
}

function envelopeOf(frame: OutgoingFrame): Envelope {
  return parseEnvelope(frame.frame, frame.to).envelope;
}

function pair(aliceOptions: EndpointOptions = {}, bobOptions: EndpointOptions = aliceOptions) {
  const net = new Net();
  const alice = net.add(aliceId, aliceOptions);
  const bob = net.add(bobId, bobOptions);
  return { net, alice, bob };
}
type Pair = ReturnType<typeof pair>;

/** Bob answers every incoming request: echo for unary, `n` chunks for streams. */
function serveAll(net: Net, bob: Endpoint, chunks = 3): IncomingRequestEvent[] {
  const incoming = only(net.drain(bobId), 'incoming');
  for (const request of incoming) {
    if (request.stream) {
      for (let i = 0; i < chunks; i++) bob.sendChunk(request.from, request.id, { i }, net.now);
      bob.endStream(request.from, request.id, net.now);
    } else {
      bob.respond(request.from, request.id, { echo: request.body }, net.now);
    }
  }
  return incoming;
}

/** Settles, lets Bob answer every request (serveAll), settles again; returns what Bob served. */
function serveRound(net: Net, bob: Endpoint, chunks = 3): IncomingRequestEvent[] {
  net.settle();
  const incoming = serveAll(net, bob, chunks);
  net.settle();
  return incoming;
}

/** A pair in which Alice already has a session with Bob (one echo round trip, its events drained). */
function warmPair(options: EndpointOptions = {}): Pair {
  const ctx = pair(options);
  ctx.alice.request(bobId.agentId, 'echo', 0, {}, ctx.net.now);
  serveRound(ctx.net, ctx.bob);
  ctx.net.drain(aliceId);
  return ctx;
}

/** Alice's request, delivered (handshake and all): its handle and what Bob received. */
function requestToBob({ net, alice }: Pair, capability: string, body: JsonValue, options: Parameters<Endpoint['request']>[3] = {}) {
  const handle = alice.request(bobId.agentId, capability, body, options, net.now);
  net.settle();
  const [request] = only(net.drain(bobId), 'incoming');
  return { handle, request: request! };
}

/** A cold echo request whose reply reaches Alice before Bob's step 2 does; returns its handle. */
function replyOvertakingStep2({ net, alice, bob }: Pair, body: JsonValue): number {
  const handle = alice.request(bobId.agentId, 'echo', body, {}, net.now);
  net.step();
  serveAll(net, bob);
  const [step2, reply] = net.take();
  net.deliver([reply!, step2!]);
  return handle;
}

/** A signed plaintext envelope from `from` to `to`, with a fresh id (what a peer, or a hostile test, writes by hand). */
function signedFrame(from: Identity, to: Identity, fields: Pick<Envelope, 'msg_type' | 'in_reply_to' | 'timestamp' | 'payload'>): string {
  return serializeEnvelope(signEnvelope({ id: newUuidV4(), from: from.agentId, to: to.agentId, ...fields }, from));
}

/** The step 1 a fresh endpoint of `identity` sends for a cold request to Bob. */
function coldStep1ToBob(identity: Identity): string {
  const initiator = new Endpoint(identity);
  initiator.request(bobId.agentId, 'echo', {}, {}, T0);
  return initiator.takeOutgoing()[0]!.frame;
}

describe('requests', () => {
  test('a cold request rides in message 1; message 2 is sent at once; the reply is a transport message', () => {
    const { net, alice, bob } = pair();
    const handle = alice.request(bobId.agentId, 'echo', { text: 'hi' }, { timeoutMs: 5000 }, net.now);
    const [step1, ...rest] = net.take();
    expect(rest).toHaveLength(0);
    const e1 = envelopeOf(step1!);
    expect(e1.msg_type).toBe('handshake');
    expect(e1.signature).toBeDefined();
    net.deliver([step1!]);
    const incoming = only(net.drain(bobId), 'incoming');
    expect(incoming).toHaveLength(1);
    expect(incoming[0]).toMatchObject({ from: aliceId.agentId, id: e1.id, capability: 'echo', body: { text: 'hi' }, stream: false });
    expect(incoming[0]!.deadlineMs).toBe(net.now + 5000);
    // Message 2 went out before the handler answered.
    const [step2] = net.take();
    const e2 = envelopeOf(step2!);
    expect(e2).toMatchObject({ msg_type: 'handshake', in_reply_to: e1.id });
    bob.respond(aliceId.agentId, e1.id, { ok: true }, net.now);
    const [reply] = net.take();
    const er = envelopeOf(reply!);
    expect(er).toMatchObject({ msg_type: 'response', encrypted: true, in_reply_to: e1.id, n: 0 });
    expect(er.signature).toBeUndefined();
    net.deliver([step2!, reply!]);
    expect(net.drain(aliceId)).toEqual([{ type: 'response', handle, body: { ok: true }, encrypted: true }]);
    expect(alice.stats.handshakesCompleted).toBe(1);
    expect(bob.stats.handshakesAccepted).toBe(1);
    expect(alice.outstandingCount).toBe(0);
    expect(bob.servedCount).toBe(0);
  });

  test('warm requests reuse the session the sender initiated', () => {
    const { net, alice, bob } = pair();
    alice.request(bobId.agentId, 'echo', 1, {}, net.now);
    serveRound(net, bob);
    const handle = alice.request(bobId.agentId, 'echo', 2, {}, net.now);
    const frames = net.take();
    expect(frames).toHaveLength(1);
    expect(envelopeOf(frames[0]!)).toMatchObject({ msg_type: 'request', encrypted: true, sid: alice.sessions.sessionForNewRequests(bobId.agentId, net.now)!.sid });
    net.deliver(frames);
    serveAll(net, bob);
    net.settle();
    expect(only(net.drain(aliceId), 'response').map((e) => [e.handle, e.body])).toEqual([
      [1, { echo: 1 }],
      [handle, { echo: 2 }],
    ]);
    expect(alice.stats.handshakesStarted).toBe(1);
  });

  test('single flight: concurrent cold requests share one handshake', () => {
    const { net, alice, bob } = pair();
    const handles = [1, 2, 3].map((i) => alice.request(bobId.agentId, 'echo', i, {}, net.now));
    const first = net.take();
    expect(first).toHaveLength(1);
    net.deliver(first); // step 1 → bob
    net.step(); // step 2 → alice, who now seals the other two
    const sealed = net.take();
    expect(sealed.map((f) => envelopeOf(f).msg_type)).toEqual(['request', 'request']);
    net.deliver(sealed);
    serveAll(net, bob);
    net.settle();
    expect(only(net.drain(aliceId), 'response').map((e) => e.handle).sort()).toEqual(handles);
    expect(alice.stats.handshakesStarted).toBe(1);
  });

  test('both sides initiating at once: both sessions live on, each side uses its own', () => {
    const { net, alice, bob } = pair();
    alice.request(bobId.agentId, 'echo', 'a', {}, net.now);
    bob.request(aliceId.agentId, 'echo', 'b', {}, net.now);
    net.settle();
    serveAll(net, bob);
    for (const request of only(net.drain(aliceId), 'incoming')) alice.respond(request.from, request.id, 'from alice', net.now);
    net.settle();
    expect(only(net.drain(aliceId), 'response')).toHaveLength(1);
    expect(only(net.drain(bobId), 'response')).toHaveLength(1);
    expect(alice.sessions.sessionCountFor(bobId.agentId)).toBe(2);
    expect(bob.sessions.sessionCountFor(aliceId.agentId)).toBe(2);
  });

  test('a request too large for message 1 travels after an empty handshake', () => {
    const { net, alice, bob } = pair();
    const big = 'x'.repeat(70_000);
    alice.request(bobId.agentId, 'echo', big, {}, net.now);
    const [step1] = net.take();
    net.deliver([step1!]);
    expect(only(net.drain(bobId), 'incoming')).toHaveLength(0);
    net.settle();
    const incoming = serveAll(net, bob);
    expect(incoming[0]!.body).toBe(big);
    net.settle();
    expect(only(net.drain(aliceId), 'response')[0]!.body).toEqual({ echo: big });
  });

  test('invalid targets, bodies without a JSON form and non-positive timeouts fail at once', () => {
    const { net, alice } = pair();
    alice.request('not-an-agent-id', 'echo', {}, {}, net.now);
    alice.request(bobId.agentId, 'echo', { n: Number.NaN }, {}, net.now);
    alice.request(bobId.agentId, 'echo', [undefined] as unknown as JsonValue, {}, net.now);
    alice.request(bobId.agentId, 'echo', {}, { timeoutMs: 0 }, net.now);
    const failures = only(net.drain(aliceId), 'failure');
    expect(failures.map((f) => f.error.code)).toEqual(['bad_request', 'bad_request', 'bad_request', 'bad_request']);
    expect(failures[0]!.error.message).toMatch(/agent ID/);
    expect(failures[1]!.error.message).toMatch(/not JSON/);
    expect(net.take()).toEqual([]);
  });

  test('invalid capability names and too many requests fail at once', () => {
    const { net, alice } = pair({ maxOutstandingRequests: 1 });
    alice.request(bobId.agentId, 'no spaces', {}, {}, net.now);
    alice.request(bobId.agentId, 'echo', {}, {}, net.now);
    alice.request(bobId.agentId, 'echo', {}, {}, net.now);
    const failures = only(net.drain(aliceId), 'failure');
    expect(failures.map((f) => f.error.code)).toEqual(['bad_request', 'rate_limited']);
    expect(failures.every((f) => f.error instanceof MeshError)).toBe(true);
  });

  test('error replies carry the code, message and retry_after_ms', () => {
    const ctx = pair();
    const { net, bob } = ctx;
    const { handle, request } = requestToBob(ctx, 'echo', {});
    bob.respondError(request.from, request.id, 'rate_limited', 'slow down', net.now, 250);
    net.settle();
    const [failure] = only(net.drain(aliceId), 'failure');
    expect(failure!.handle).toBe(handle);
    expect(failure!.error).toMatchObject({ code: 'rate_limited', message: 'slow down', retryAfterMs: 250 });
  });

  test('a reply too large for one envelope becomes too_large for both sides', () => {
    const ctx = pair({ maxEnvelopeBytes: 4096 });
    const { net, bob } = ctx;
    const { request } = requestToBob(ctx, 'echo', {});
    expect(() => bob.respond(request.from, request.id, 'y'.repeat(5000), net.now)).toThrow(
      expect.objectContaining({ code: 'too_large' }),
    );
    net.settle();
    expect(only(net.drain(aliceId), 'failure')[0]!.error.code).toBe('too_large');
  });
});

describe('streams', () => {
  test('chunks are delivered in seq order whatever the arrival order, then the end', () => {
    const ctx = pair();
    const { net, bob } = ctx;
    const { handle, request } = requestToBob(ctx, 'count', {}, { stream: true });
    expect(request.stream).toBe(true);
    for (let i = 0; i < 10; i++) bob.sendChunk(request.from, request.id, i, net.now);
    bob.endStream(request.from, request.id, net.now);
    const frames = net.take();
    net.deliver([...frames].reverse());
    const events = net.drain(aliceId);
    expect(only(events, 'chunk').map((c) => [c.seq, c.body])).toEqual([...Array(10).keys()].map((i) => [i, i]));
    expect(events.at(-1)).toEqual({ type: 'stream_end', handle });
  });

  test('more than 256 chunks waiting for a gap fail the stream with internal and send cancel', () => {
    const ctx = pair();
    const { net, bob } = ctx;
    const { request } = requestToBob(ctx, 'count', {}, { stream: true });
    for (let i = 0; i < 258; i++) bob.sendChunk(request.from, request.id, i, net.now);
    const frames = net.take();
    net.deliver(frames.slice(1)); // chunk 0 is lost
    const [failure] = only(net.drain(aliceId), 'failure');
    expect(failure!.error.code).toBe('internal');
    const cancel = net.take();
    expect(cancel.map((f) => envelopeOf(f).msg_type)).toEqual(['cancel']);
    net.deliver(cancel);
    expect(only(net.drain(bobId), 'peer_cancelled')).toHaveLength(1);
  });

  test('a plain response to a stream request, and an end before the chunks received, are bad_request', () => {
    const { net, alice, bob } = pair();
    alice.request(bobId.agentId, 'count', {}, { stream: true }, net.now);
    alice.request(bobId.agentId, 'count', {}, { stream: true }, net.now);
    net.settle();
    const [first, second] = only(net.drain(bobId), 'incoming');
    // Bob's engine refuses to answer a stream with a response; forge it on the session instead.
    expect(() => bob.respond(first!.from, first!.id, 1, net.now)).toThrow(/chunks/);
    bob.sendChunk(second!.from, second!.id, 'a', net.now);
    bob.sendChunk(second!.from, second!.id, 'b', net.now);
    net.settle();
    const session = bob.sessions.find(aliceId.agentId, alice.sessions.sessionForNewRequests(bobId.agentId, net.now)!.sid)!;
    const forged = session.seal(
      { id: newUuidV4(), from: bobId.agentId, to: aliceId.agentId, msg_type: 'stream_end', in_reply_to: second!.id, timestamp: net.now },
      new TextEncoder().encode('{"seq":1}'),
    );
    alice.receive(serializeEnvelope(forged), net.now);
    const failures = only(net.drain(aliceId), 'failure');
    expect(failures.map((f) => f.error.code)).toEqual(['bad_request']);
    expect(failures[0]!.error.message).toMatch(/stream_end/);
  });
});

describe('cancellation and deadlines', () => {
  test('cancel on a warm request: reported at once, the peer is told, later replies are refused', () => {
    const ctx = warmPair();
    const { net, alice, bob } = ctx;
    const { handle, request } = requestToBob(ctx, 'wait', {});
    alice.cancel(handle, net.now);
    expect(net.drain(aliceId)).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'cancelled' }) }]);
    net.settle();
    expect(net.drain(bobId)).toEqual([{ type: 'peer_cancelled', from: aliceId.agentId, id: request.id }]);
    expect(() => bob.respond(aliceId.agentId, request.id, 'late', net.now)).toThrow(expect.objectContaining({ code: 'cancelled' }));
  });

  test('cancel during the handshake: the cancel follows once message 2 has arrived', () => {
    const { net, alice, bob } = pair();
    const handle = alice.request(bobId.agentId, 'wait', {}, {}, net.now);
    alice.cancel(handle, net.now);
    expect(only(net.drain(aliceId), 'failure')[0]!.error.code).toBe('cancelled');
    net.step(); // step 1: bob starts serving
    const [request] = only(net.drain(bobId), 'incoming');
    net.step(); // step 2: alice seals the cancel
    const cancel = net.take();
    expect(cancel.map((f) => envelopeOf(f).msg_type)).toEqual(['cancel']);
    net.deliver(cancel);
    expect(only(net.drain(bobId), 'peer_cancelled')[0]!.id).toBe(request!.id);
    expect(alice.outstandingCount).toBe(0);
    expect(net.drain(aliceId)).toEqual([]); // nothing more for the caller
  });

  test('timeout: the request fails, its handshake is abandoned, a late reply is decrypted and dropped', () => {
    const { net, alice, bob } = pair();
    const handle = alice.request(bobId.agentId, 'echo', 0, { timeoutMs: 1000 }, net.now);
    expect(alice.nextDeadline()).toBe(net.now + 1000);
    const step1 = net.take();
    net.tick(999);
    expect(net.drain(aliceId)).toEqual([]);
    net.tick(1);
    expect(net.drain(aliceId)).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'timeout' }) }]);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    // Bob gets the (still fresh) step 1 late; alice no longer waits for step 2.
    net.deliver(step1);
    net.settle();
    expect(alice.stats.dropped.get('handshake step 2 for no pending handshake')).toBe(1);
  });

  test('timeout of a warm request: the late reply is decrypted (counters stay in step) and dropped', () => {
    const { net, alice, bob } = warmPair();
    const handle = alice.request(bobId.agentId, 'echo', 1, { timeoutMs: 100 }, net.now);
    net.settle();
    net.tick(100);
    expect(only(net.drain(aliceId), 'failure')[0]).toMatchObject({ handle, error: { code: 'timeout' } });
    // Bob's deadline passed too: he may not answer any more.
    const [request] = only(net.drain(bobId), 'incoming');
    expect(() => bob.respond(request!.from, request!.id, 'late', net.now)).toThrow(expect.objectContaining({ code: 'cancelled' }));
  });

  test('the responder deadline counts from receipt; the requester sends its remaining time', () => {
    const { net, alice, bob } = pair();
    alice.request(bobId.agentId, 'echo', 0, { timeoutMs: 10_000 }, net.now);
    const frames = net.take();
    net.now += 4000;
    net.deliver(frames);
    const [request] = only(net.drain(bobId), 'incoming');
    expect(request!.deadlineMs).toBe(net.now + 10_000 - 4000 + 4000); // timeout_ms 10 s was sent at T0
    net.settle();
    const warm = alice.request(bobId.agentId, 'echo', 1, { timeoutMs: 3000 }, net.now);
    void warm;
    net.settle();
    const [second] = only(net.drain(bobId), 'incoming');
    expect(second!.deadlineMs).toBe(net.now + 3000);
    net.now += 3000;
    expect(() => bob.respond(second!.from, second!.id, 'late', net.now)).toThrow(expect.objectContaining({ code: 'timeout' }));
  });
});

describe('no_session and the retry', () => {
  test('a responder that lost its sessions answers no_session; the requester re-handshakes and retries once', () => {
    const { net, alice } = warmPair();
    // Bob restarts: a new engine, no sessions.
    const bob2 = net.add(bobId);
    const handle = alice.request(bobId.agentId, 'echo', 'again', {}, net.now);
    const [warm] = net.take();
    const firstId = envelopeOf(warm!).id;
    net.deliver([warm!]);
    expect(bob2.stats.noSessionSent).toBe(1);
    const [answer] = net.take();
    const error = envelopeOf(answer!);
    expect(error).toMatchObject({ msg_type: 'error', in_reply_to: firstId, payload: { code: 'no_session' } });
    expect(error.signature).toBeDefined();
    net.deliver([answer!]);
    expect(alice.stats.retries).toBe(1);
    const [retry] = net.take();
    const retried = envelopeOf(retry!);
    expect(retried.msg_type).toBe('handshake');
    expect(retried.id).not.toBe(firstId);
    net.deliver([retry!]);
    serveRound(net, bob2);
    expect(only(net.drain(aliceId), 'response')).toEqual([{ type: 'response', handle, body: { echo: 'again' }, encrypted: true }]);
  });

  test('a no_session for the retry is reported to the caller', () => {
    const { net, alice } = warmPair();
    const bob2 = net.add(bobId);
    const handle = alice.request(bobId.agentId, 'echo', 1, {}, net.now);
    net.step(); // warm request → bob2: no_session
    net.step(); // no_session → alice: retry as a handshake
    const [retry] = net.take();
    // A signed no_session for the retry (as a copying relay could provoke): reported, not retried.
    const forged = signedFrame(bobId, aliceId, {
      msg_type: 'error',
      in_reply_to: envelopeOf(retry!).id,
      timestamp: net.now,
      payload: { code: 'no_session', message: 'again' },
    });
    alice.receive(forged, net.now);
    expect(only(net.drain(aliceId), 'failure')).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'no_session' }) }]);
    expect(alice.stats.retries).toBe(1);
    void bob2;
  });
});

describe('relay answers and reordering', () => {
  test('undeliverable fails the request that sent it; requests waiting on its handshake start a new one', () => {
    const { net, alice } = pair();
    const first = alice.request(bobId.agentId, 'echo', 1, {}, net.now);
    const second = alice.request(bobId.agentId, 'echo', 2, {}, net.now);
    const [step1] = net.take();
    alice.undeliverable(envelopeOf(step1!).id, 'rate_limited', 500, net.now);
    const [failure] = only(net.drain(aliceId), 'failure');
    expect(failure).toMatchObject({ handle: first, error: { code: 'rate_limited', retryAfterMs: 500 } });
    const [newStep1] = net.take();
    expect(envelopeOf(newStep1!).msg_type).toBe('handshake');
    expect(alice.sessions.pending(bobId.agentId)?.step1Id).toBe(envelopeOf(newStep1!).id);
    alice.undeliverable(newUuidV4(), 'unreachable', undefined, net.now); // unknown: ignored
    expect(alice.outstandingCount).toBe(1);
    void second;
  });

  test('a reply that overtakes step 2 is held and processed once step 2 lands', () => {
    const ctx = pair();
    const handle = replyOvertakingStep2(ctx, 'early');
    expect(only(ctx.net.drain(aliceId), 'response')).toEqual([{ type: 'response', handle, body: { echo: 'early' }, encrypted: true }]);
  });
});

describe('hostile input', () => {
  test('a tampered header fails the AEAD and is dropped without an answer', () => {
    const { net, alice, bob } = warmPair();
    alice.request(bobId.agentId, 'echo', 1, {}, net.now);
    const [frame] = net.take();
    const object = JSON.parse(frame!.frame) as JsonObject;
    for (const [name, value] of [
      ['timestamp', (object['timestamp'] as number) + 1],
      ['msg_type', 'stream_request'],
      ['n', (object['n'] as number) + 1],
    ] as [string, JsonValue][]) {
      bob.receive(canonicalize({ ...object, [name]: value }), net.now);
    }
    expect(bob.stats.dropped.get('decryption failed')).toBe(3);
    expect(net.take()).toEqual([]);
    expect(net.drain(bobId)).toEqual([]);
    // The genuine envelope still works.
    net.deliver([frame!]);
    expect(only(net.drain(bobId), 'incoming')).toHaveLength(1);
  });

  test('a replayed transport envelope is dropped by the counter window', () => {
    const { net, alice, bob } = warmPair();
    alice.request(bobId.agentId, 'echo', 1, {}, net.now);
    const [frame] = net.take();
    net.deliver([frame!, frame!]);
    expect(only(net.drain(bobId), 'incoming')).toHaveLength(1);
    expect(bob.stats.dropped.get('replayed counter')).toBe(1);
  });

  test('a reply on the wrong session, and a request on a session the receiver initiated, are dropped', () => {
    const { net, alice, bob } = warmPair();
    // Bob initiates his own session with alice too.
    bob.request(aliceId.agentId, 'echo', 'b', {}, net.now);
    net.settle();
    for (const r of only(net.drain(aliceId), 'incoming')) alice.respond(r.from, r.id, 'ok', net.now);
    net.settle();
    net.drain(bobId);
    alice.request(bobId.agentId, 'echo', 2, {}, net.now);
    net.settle();
    const [request] = only(net.drain(bobId), 'incoming');
    // A response sealed on bob's own session (not the one that carried the request).
    const bobsSession = bob.sessions.sessionForNewRequests(aliceId.agentId, net.now)!;
    const wrong = bobsSession.seal(
      { id: newUuidV4(), from: bobId.agentId, to: aliceId.agentId, msg_type: 'response', in_reply_to: request!.id, timestamp: net.now },
      new TextEncoder().encode('{"body":"wrong"}'),
    );
    alice.receive(serializeEnvelope(wrong), net.now);
    expect(alice.stats.dropped.get('reply on the wrong session')).toBe(1);
    // A request sealed on the session alice initiated, sent by bob: alice is its initiator.
    const alicesSessionAtBob = bob.sessions.find(aliceId.agentId, alice.sessions.sessionForNewRequests(bobId.agentId, net.now)!.sid)!;
    const misplaced = alicesSessionAtBob.seal(
      { id: newUuidV4(), from: bobId.agentId, to: aliceId.agentId, msg_type: 'request', timestamp: net.now },
      new TextEncoder().encode('{"capability":"echo","body":1}'),
    );
    alice.receive(serializeEnvelope(misplaced), net.now);
    expect(alice.stats.dropped.get('request on a session we initiated')).toBe(1);
    expect(only(net.drain(aliceId), 'incoming')).toHaveLength(0);
    // The genuine reply still completes the request.
    bob.respond(request!.from, request!.id, 'right', net.now);
    net.settle();
    expect(only(net.drain(aliceId), 'response').map((r) => r.body)).toEqual(['right']);
  });

  test('stale, future and repeated signed envelopes are dropped before any work', () => {
    const { net, bob } = pair();
    const started = startHandshake(aliceId, bobId.agentId, new Uint8Array(0), newUuidV4(), net.now - 10 * 60 * 1000 - 1);
    bob.receive(serializeEnvelope(started.step1), net.now);
    const future = startHandshake(aliceId, bobId.agentId, new Uint8Array(0), newUuidV4(), net.now + 2 * 60 * 1000 + 1);
    bob.receive(serializeEnvelope(future.step1), net.now);
    expect(bob.stats.dropped.get('invalid envelope: expired')).toBe(2);
    const fresh = startHandshake(aliceId, bobId.agentId, new Uint8Array(0), newUuidV4(), net.now);
    bob.receive(serializeEnvelope(fresh.step1), net.now);
    bob.receive(serializeEnvelope(fresh.step1), net.now);
    expect(bob.stats.handshakesAccepted).toBe(1);
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(1);
    // A forged signature, and an envelope for someone else.
    const forged = { ...fresh.step1, id: newUuidV4() };
    bob.receive(serializeEnvelope(forged), net.now);
    bob.receive(serializeEnvelope({ ...fresh.step1, to: carolId.agentId }), net.now);
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(3);
    bob.receive('{"not":"an envelope"}', net.now);
    bob.receive('not json', net.now);
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(5);
  });

  test('a step 1 whose static key is not `from`’s is refused', () => {
    const { net, bob } = pair();
    // Carol runs the handshake but the envelope claims (and is signed by) alice.
    const carolStarted = startHandshake(carolId, bobId.agentId, new Uint8Array(0), newUuidV4(), net.now);
    const relabelled = signEnvelope({ ...carolStarted.step1, from: aliceId.agentId }, aliceId);
    bob.receive(serializeEnvelope(relabelled), net.now);
    expect(bob.stats.dropped.get('handshake step 1 refused')).toBe(1);
    expect(net.take()).toEqual([]);
  });

  test('a step 2 from someone other than the agent dialled is refused', () => {
    const { net, alice } = pair();
    const carol = net.add(carolId);
    alice.request(bobId.agentId, 'echo', 1, { timeoutMs: 1000 }, net.now);
    const [step1] = net.take();
    // Carol answers alice's step 1 as if she were bob (she cannot decrypt it; she fakes a step 2).
    const fake = signedFrame(carolId, aliceId, {
      msg_type: 'handshake',
      in_reply_to: envelopeOf(step1!).id,
      timestamp: net.now,
      payload: { step: 2, noise: 'AAAA' },
    });
    alice.receive(fake, net.now);
    expect(alice.stats.dropped.get('handshake step 2 for no pending handshake')).toBe(1);
    expect(alice.sessions.pending(bobId.agentId)).toBeDefined();
    void carol;
  });

  test('plaintext from a peer not configured for it is dropped; an invalid body is answered bad_request', () => {
    const { net, alice, bob } = warmPair();
    const plain = signedFrame(aliceId, bobId, { msg_type: 'request', timestamp: net.now, payload: { capability: 'echo', body: 1 } });
    bob.receive(plain, net.now);
    expect(bob.stats.dropped.get('plaintext envelope from a peer not configured for plaintext')).toBe(1);
    // An encrypted request whose body has an unknown member.
    const session = alice.sessions.sessionForNewRequests(bobId.agentId, net.now)!;
    const bad = session.seal(
      { id: newUuidV4(), from: aliceId.agentId, to: bobId.agentId, msg_type: 'request', timestamp: net.now },
      new TextEncoder().encode('{"capability":"echo","body":1,"extra":2}'),
    );
    bob.receive(serializeEnvelope(bad), net.now);
    const [answer] = net.take();
    net.deliver([answer!]);
    expect(envelopeOf(answer!)).toMatchObject({ msg_type: 'error', encrypted: true, in_reply_to: bad.id });
    expect(alice.stats.dropped.get('reply to no outstanding request')).toBe(1);
  });
});

describe('plaintext peers', () => {
  test('configured on both ends: signed plaintext requests, replies and cancels', () => {
    const { net, alice, bob } = pair({ plaintextPeers: [bobId.agentId] }, { plaintextPeers: [aliceId.agentId] });
    const handle = alice.request(bobId.agentId, 'echo', 'clear', {}, net.now);
    const [frame] = net.take();
    const envelope = envelopeOf(frame!);
    expect(envelope).toMatchObject({ msg_type: 'request', payload: { capability: 'echo', body: 'clear' } });
    expect(envelope.encrypted).toBeUndefined();
    expect(envelope.signature).toBeDefined();
    net.deliver([frame!]);
    const [request] = only(net.drain(bobId), 'incoming');
    expect(request!.encrypted).toBe(false);
    bob.respond(request!.from, request!.id, 'ok', net.now);
    net.settle();
    expect(net.drain(aliceId)).toEqual([{ type: 'response', handle, body: 'ok', encrypted: false }]);
    const waiting = alice.request(bobId.agentId, 'wait', {}, {}, net.now);
    net.settle();
    alice.cancel(waiting, net.now);
    net.settle();
    expect(only(net.drain(bobId), 'peer_cancelled')).toHaveLength(1);
    expect(alice.stats.handshakesStarted).toBe(0);
  });

  test('a plaintext reply to an encrypted request is dropped', () => {
    const ctx = pair({}, { plaintextPeers: [aliceId.agentId] }); // alice encrypts
    const { net, alice, bob } = ctx;
    const { request } = requestToBob(ctx, 'echo', 1);
    expect(request.encrypted).toBe(true); // encrypted requests from a plaintext peer are served
    const forged = signedFrame(bobId, aliceId, { msg_type: 'response', in_reply_to: request.id, timestamp: net.now, payload: { body: 'clear' } });
    alice.receive(forged, net.now);
    expect(alice.stats.dropped.get('plaintext envelope from a peer not configured for plaintext')).toBe(1);
    bob.respond(request.from, request.id, 'sealed', net.now);
    net.settle();
    expect(only(net.drain(aliceId), 'response')[0]).toMatchObject({ body: 'sealed', encrypted: true });
  });
});

describe('ik-handshake.json receiver checks at the endpoint', () => {
  const vectors = JSON.parse(
    readFileSync(fileURLToPath(new URL('../../../tests/vectors/agent-mesh/ik-handshake.json', import.meta.url)), 'utf8'),
  );
  const h = vectors.handshakes[0];
  const now = h.message1.envelope.timestamp as number;

  /** Bob's engine holding the responder session of handshake A (fixed ephemerals). */
  function bobWithSessionA(): Endpoint {
    const bob = new Endpoint(bobId);
    const accepted = acceptHandshake(
      bobId,
      h.message1.envelope as Envelope,
      h.message2.envelope.id,
      h.message2.envelope.timestamp,
      dhKeyPairFromSecret(hexToBytes(h.responder_ephemeral_private_hex)),
    );
    bob.sessions.add(accepted.session, now);
    return bob;
  }

  for (const check of vectors.receiver_checks) {
    test(check.name, () => {
      const bob = bobWithSessionA();
      const frame = canonicalize(check.envelope);
      bob.receive(frame, now + 1000);
      const out = bob.takeOutgoing();
      const events = bob.takeEvents();
      const expectText = check.expect as string;
      if (expectText.startsWith('answer')) {
        expect(out).toHaveLength(1);
        const answer = parseEnvelope(out[0]!.frame, aliceId.agentId).envelope;
        expect(answer).toMatchObject({ msg_type: 'error', in_reply_to: check.envelope.id, payload: { code: 'no_session' } });
        expect(answer.signature).toBeDefined();
        expect(events).toEqual([]);
      } else if (expectText.startsWith('first accepted')) {
        expect(events).toHaveLength(1);
        bob.receive(frame, now + 1000);
        expect(bob.takeEvents()).toEqual([]);
        expect(bob.stats.dropped.get('replayed counter')).toBe(1);
        expect(bob.sessions.find(aliceId.agentId, h.sid)!.consecutiveFailures).toBe(0);
      } else {
        expect(expectText.startsWith('drop')).toBe(true);
        expect(out).toEqual([]);
        expect(events).toEqual([]);
        expect([...bob.stats.dropped.values()].reduce((a, b) => a + b, 0)).toBe(1);
      }
    });
  }
});

// ---- review findings (each test failed before its fix) ----

/** A signed plaintext `error` from `from` answering `inReplyTo` (what a peer, or a copying relay, can provoke). */
function signedError(from: Identity, to: Identity, inReplyTo: string, now: number, code: string, retryAfterMs?: number): string {
  return signedFrame(from, to, {
    msg_type: 'error',
    in_reply_to: inReplyTo,
    timestamp: now,
    payload: { code, message: 'refused', ...(retryAfterMs !== undefined ? { retry_after_ms: retryAfterMs } : {}) },
  });
}

const tooBigForMessage1 = { text: 'x'.repeat(70_000) };

describe('pending handshakes never block a peer', () => {
  test('cancelling a cold request too large for message 1 abandons its handshake; the next request starts a new one', () => {
    const { net, alice, bob } = pair();
    const handle = alice.request(bobId.agentId, 'echo', tooBigForMessage1, { timeoutMs: 5000 }, net.now);
    const [step1] = net.take();
    expect(envelopeOf(step1!).msg_type).toBe('handshake');
    expect(alice.sessions.pending(bobId.agentId)).toBeDefined();
    alice.cancel(handle, net.now);
    expect(net.drain(aliceId)).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'cancelled' }) }]);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    expect(alice.stats.handshakesAbandoned).toBe(1);
    // The relay's undeliverable for the abandoned step 1 changes nothing.
    alice.undeliverable(step1!.id, 'unreachable', undefined, net.now);
    const next = alice.request(bobId.agentId, 'echo', 'next', { timeoutMs: 1000 }, net.now);
    const frames = net.take();
    expect(frames.map((f) => envelopeOf(f).msg_type)).toEqual(['handshake']);
    net.deliver(frames);
    serveRound(net, bob);
    expect(only(net.drain(aliceId), 'response')).toEqual([{ type: 'response', handle: next, body: { echo: 'next' }, encrypted: true }]);
  });

  test('requests waiting behind a cancelled starter that did not fit message 1 get a fresh handshake at once', () => {
    const { net, alice, bob } = pair();
    const starter = alice.request(bobId.agentId, 'echo', tooBigForMessage1, {}, net.now);
    const waiting = alice.request(bobId.agentId, 'echo', 'small', {}, net.now);
    const [first] = net.take();
    alice.cancel(starter, net.now);
    const [second, ...rest] = net.take();
    expect(rest).toEqual([]);
    expect(envelopeOf(second!)).toMatchObject({ msg_type: 'handshake' });
    expect(envelopeOf(second!).id).not.toBe(envelopeOf(first!).id);
    expect(alice.sessions.pending(bobId.agentId)?.step1Id).toBe(second!.id);
    net.deliver([second!]); // it carries the waiting request: bob serves it at once
    const [incoming] = serveAll(net, bob);
    expect(incoming).toMatchObject({ id: second!.id, body: 'small' });
    net.settle();
    expect(only(net.drain(aliceId), 'response').map((e) => e.handle)).toEqual([waiting]);
  });

  test('a signed error answering the step 1 that carried the request fails it and abandons the handshake', () => {
    const { net, alice } = pair();
    const handle = alice.request(bobId.agentId, 'echo', {}, { timeoutMs: 5000 }, net.now);
    const [step1] = net.take();
    alice.receive(signedError(bobId, aliceId, step1!.id, net.now, 'rate_limited', 100), net.now + 1);
    expect(net.drain(aliceId)).toEqual([
      { type: 'failure', handle, error: expect.objectContaining({ code: 'rate_limited', retryAfterMs: 100 }) },
    ]);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    alice.request(bobId.agentId, 'echo', {}, { timeoutMs: 1000 }, net.now + 10);
    expect(net.take().map((f) => envelopeOf(f).msg_type)).toEqual(['handshake']);
  });

  test('a signed error answering a step 1 that carried no request fails every request waiting on it', () => {
    const { net, alice } = pair();
    const starter = alice.request(bobId.agentId, 'echo', tooBigForMessage1, {}, net.now);
    const waiting = alice.request(bobId.agentId, 'echo', 'small', {}, net.now);
    const [step1] = net.take();
    alice.receive(signedError(bobId, aliceId, step1!.id, net.now, 'unreachable'), net.now);
    expect(only(net.drain(aliceId), 'failure').map((f) => [f.handle, f.error.code])).toEqual([
      [starter, 'unreachable'],
      [waiting, 'unreachable'],
    ]);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    expect(net.take()).toEqual([]);
    // From anyone else it is dropped.
    alice.request(bobId.agentId, 'echo', tooBigForMessage1, {}, net.now);
    const [again] = net.take();
    alice.receive(signedError(carolId, aliceId, again!.id, net.now, 'unreachable'), net.now);
    expect(alice.stats.dropped.get('plaintext error for no outstanding request')).toBe(1);
    expect(alice.sessions.pending(bobId.agentId)?.step1Id).toBe(again!.id);
  });

  test('undeliverable for a step 1 that carried no request fails every request waiting on it at once', () => {
    const { net, alice } = pair();
    const starter = alice.request(bobId.agentId, 'echo', tooBigForMessage1, { timeoutMs: 60_000 }, net.now);
    const second = alice.request(bobId.agentId, 'echo', 2, { timeoutMs: 60_000 }, net.now);
    const third = alice.request(bobId.agentId, 'echo', 3, { timeoutMs: 60_000 }, net.now);
    const [step1] = net.take();
    alice.undeliverable(step1!.id, 'rate_limited', 1000, net.now + 1);
    // The step 1 was sent for all of them (none rode in it): all fail with the relay's code.
    expect(only(net.drain(aliceId), 'failure').map((f) => [f.handle, f.error.code, f.error.retryAfterMs])).toEqual([
      [starter, 'rate_limited', 1000],
      [second, 'rate_limited', 1000],
      [third, 'rate_limited', 1000],
    ]);
    expect(net.take()).toEqual([]); // nothing retried: no loop against a relay that refuses
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    expect(alice.outstandingCount).toBe(0);
    // The peer is not blocked: the next request starts a handshake at once.
    alice.request(bobId.agentId, 'echo', 4, {}, net.now + 2);
    expect(net.take().map((f) => envelopeOf(f).msg_type)).toEqual(['handshake']);
  });

  test('cancelAll (closing) cancels everything without starting a handshake for what it cancels', () => {
    const { net, alice } = pair();
    const handles = [alice.request(bobId.agentId, 'echo', tooBigForMessage1, {}, net.now)];
    for (let i = 0; i < 3; i++) handles.push(alice.request(bobId.agentId, 'echo', i, {}, net.now));
    expect(net.take()).toHaveLength(1);
    alice.cancelAll(net.now, 'closing');
    expect(only(net.drain(aliceId), 'failure').map((f) => [f.handle, f.error.code])).toEqual(handles.map((h) => [h, 'cancelled']));
    expect(net.take()).toEqual([]);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    expect(alice.outstandingCount).toBe(0);
  });

  test('a pending handshake lives no longer than the requests waiting on it', () => {
    const { net, alice } = pair();
    alice.request(bobId.agentId, 'echo', 1, { timeoutMs: 1000 }, net.now);
    alice.request(bobId.agentId, 'echo', 2, { timeoutMs: 3000 }, net.now);
    const [first] = net.take();
    net.tick(1000); // the starter times out: the handshake goes, the other request starts a new one
    const [second] = net.take();
    expect(envelopeOf(second!).id).not.toBe(envelopeOf(first!).id);
    expect(alice.nextDeadline()).toBe(net.now + 2000);
    net.tick(2000);
    expect(alice.sessions.pending(bobId.agentId)).toBeUndefined();
    expect(alice.outstandingCount).toBe(0);
    expect(net.take()).toEqual([]);
  });
});

describe('no_session after a stream has started', () => {
  test('the stream fails with no_session instead of splicing a second run onto the first', () => {
    const { net, alice, bob } = warmPair();
    const handle = alice.request(bobId.agentId, 'count', {}, { stream: true, timeoutMs: 50_000 }, net.now);
    const [request] = net.take();
    net.deliver([request!]);
    const [incoming] = only(net.drain(bobId), 'incoming');
    bob.sendChunk(aliceId.agentId, incoming!.id, 'run1-chunk0', net.now);
    bob.sendChunk(aliceId.agentId, incoming!.id, 'run1-chunk1', net.now);
    net.step();
    // A copying relay replays the request under a made-up sid: bob answers a genuine no_session.
    const copy = JSON.parse(request!.frame) as JsonObject;
    copy['sid'] = 'BwcHBwcHBwcHBwcHBwcHBw';
    bob.receive(JSON.stringify(copy), net.now);
    net.step();
    expect(net.drain(aliceId).map((e) => (e.type === 'chunk' ? e.body : e.type === 'failure' ? e.error.code : e.type))).toEqual([
      'run1-chunk0',
      'run1-chunk1',
      'no_session',
    ]);
    expect(only(net.drain(aliceId), 'failure')).toEqual([]);
    expect(alice.stats.retries).toBe(0);
    expect(net.take()).toEqual([]); // no retry, no new handshake
    expect(alice.sessions.sessionForNewRequests(bobId.agentId, net.now)).toBeUndefined(); // dropped (§5)
    void handle;
    expect(alice.outstandingCount).toBe(0);
  });

  test('a stream whose reply has not started is still retried once, from the first chunk', () => {
    const { net, alice } = warmPair();
    const bob2 = net.add(bobId); // restarted: no sessions
    const handle = alice.request(bobId.agentId, 'count', {}, { stream: true }, net.now);
    net.settle();
    expect(alice.stats.retries).toBe(1);
    serveAll(net, bob2, 2);
    net.settle();
    expect(net.drain(aliceId)).toEqual([
      { type: 'chunk', handle, seq: 0, body: { i: 0 }, bytes: expect.any(Number) },
      { type: 'chunk', handle, seq: 1, body: { i: 1 }, bytes: expect.any(Number) },
      { type: 'stream_end', handle },
    ]);
  });
});

describe('timeouts the engine cannot carry are refused at once', () => {
  test('infinite, unsafe or overflowing timeouts fail with bad_request and never block the peer', () => {
    const { net, alice, bob } = pair();
    const bad: unknown[] = [Infinity, Number.NaN, -5, 0, 2 ** 53, Number.MAX_VALUE, Number.MAX_SAFE_INTEGER - net.now + 1, '1000'];
    for (const timeoutMs of bad) {
      let handle: number | undefined;
      expect(() => {
        handle = alice.request(bobId.agentId, 'echo', {}, { timeoutMs: timeoutMs as number }, net.now);
      }, String(timeoutMs)).not.toThrow();
      expect(net.drain(aliceId), String(timeoutMs)).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'bad_request' }) }]);
    }
    expect(alice.outstandingCount).toBe(0);
    expect(net.take()).toEqual([]);
    // The largest one that still fits is fine, and so is the next ordinary request.
    alice.request(bobId.agentId, 'echo', 'edge', { timeoutMs: Number.MAX_SAFE_INTEGER - net.now }, net.now);
    const ok = alice.request(bobId.agentId, 'echo', 'ok', { timeoutMs: 1000 }, net.now);
    serveRound(net, bob);
    expect(only(net.drain(aliceId), 'response').map((e) => e.handle)).toContain(ok);
  });

  test('an unusable defaultTimeoutMs fails each request instead of throwing', () => {
    const alice = new Endpoint(aliceId, { defaultTimeoutMs: Infinity });
    const handle = alice.request(bobId.agentId, 'echo', {}, {}, T0);
    expect(alice.takeEvents()).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'bad_request' }) }]);
    expect(alice.takeOutgoing()).toEqual([]);
  });
});

describe('values a receiver would refuse are refused before sending', () => {
  test('request bodies with unsafe integers, Dates, Maps or typed arrays fail with bad_request', () => {
    const { net, alice } = pair();
    const bodies: unknown[] = [{ x: 2 ** 60 }, { y: 1e20 }, [-(2 ** 53)], new Date(0), { when: new Date(0) }, new Map([['a', 1]]), new Uint8Array(3)];
    for (const body of bodies) {
      const handle = alice.request(bobId.agentId, 'echo', body as JsonValue, {}, net.now);
      expect(net.drain(aliceId)).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'bad_request' }) }]);
    }
    expect(net.take()).toEqual([]);
  });

  test('replies with no JSON form throw bad_request and send nothing; the request can still be answered', () => {
    const ctx = pair();
    const { net, bob } = ctx;
    const { handle, request } = requestToBob(ctx, 'echo', {});
    expect(() => bob.respond(aliceId.agentId, request.id, { y: 1e20 }, net.now)).toThrow(/not JSON/);
    expect(() => bob.respond(aliceId.agentId, request.id, new Set([1]) as unknown as JsonValue, net.now)).toThrow(/not JSON/);
    expect(net.take()).toEqual([]);
    bob.respondError(aliceId.agentId, request.id, 'internal', 'no JSON form', net.now);
    net.settle();
    expect(only(net.drain(aliceId), 'failure')).toEqual([{ type: 'failure', handle, error: expect.objectContaining({ code: 'internal' }) }]);
  });
});

/** A step 1 with a junk signature: passes parsing, fails at the signature (the first crypto). */
function junkStep1(from: Identity, to: Identity, now: number): string {
  return JSON.stringify({
    id: newUuidV4(),
    from: from.agentId,
    to: to.agentId,
    msg_type: 'handshake',
    timestamp: now,
    payload: { step: 1, noise: Buffer.alloc(96, 7).toString('base64url') },
    signature: Buffer.alloc(64, 9).toString('base64url'),
  });
}

describe('work a peer can make us do is rationed before any crypto', () => {
  test('step 1s: per peer (default burst 40), refused before the signature is checked', () => {
    const bob = new Endpoint(bobId);
    for (let i = 0; i < 41; i++) bob.receive(junkStep1(aliceId, bobId, T0), T0);
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(40); // verified, refused
    expect(bob.stats.dropped.get('handshake step 1 rate limited')).toBe(1); // never verified
    bob.receive(junkStep1(carolId, bobId, T0), T0); // another peer has its own bucket
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(41);
    bob.receive(junkStep1(aliceId, bobId, T0 + 50), T0 + 50); // 20/s: one token back after 50 ms
    expect(bob.stats.dropped.get('invalid envelope: bad_request')).toBe(42);
  });

  test('step 1s: genuine ones past the per-peer and the global bucket are dropped unanswered', () => {
    const bob = new Endpoint(bobId, { handshakeRate: { perPeerBurst: 2, perPeerPerSecond: 1, globalBurst: 3, globalPerSecond: 1 } });
    const step1 = coldStep1ToBob;
    for (let i = 0; i < 3; i++) bob.receive(step1(aliceId), T0);
    expect(bob.stats.handshakesAccepted).toBe(2);
    expect(bob.stats.dropped.get('handshake step 1 rate limited')).toBe(1);
    bob.receive(step1(carolId), T0);
    bob.receive(step1(Identity.fromSeed(seed(0xd4))), T0); // the global bucket (3) is empty now
    expect(bob.stats.handshakesAccepted).toBe(3);
    expect(bob.stats.dropped.get('handshake step 1 rate limited')).toBe(2);
    expect(bob.takeOutgoing()).toHaveLength(3); // three step 2s, nothing for the refused ones
    bob.receive(step1(aliceId), T0 + 1000);
    expect(bob.stats.handshakesAccepted).toBe(4);
  });

  test('no_session answers are rationed per peer', () => {
    const { net, alice } = warmPair();
    const bob2 = net.add(bobId, { noSessionRate: { perPeerBurst: 2, perPeerPerSecond: 1 } });
    for (let i = 0; i < 3; i++) alice.request(bobId.agentId, 'echo', i, {}, net.now);
    net.step(); // three warm requests for a session bob2 does not have
    expect(bob2.stats.noSessionSent).toBe(2);
    expect(bob2.stats.dropped.get('no_session answer rate limited')).toBe(1);
  });
});

describe('byte budgets', () => {
  test('an early reply over the byte budget is dropped; one within it is held', () => {
    for (const [budget, held] of [
      [100_000, true],
      [1000, false],
    ] as const) {
      const ctx = pair({ maxEarlyReplyBytes: budget });
      const { net, alice } = ctx;
      const handle = replyOvertakingStep2(ctx, 'x'.repeat(1500));
      expect(only(net.drain(aliceId), 'response').map((e) => e.handle), String(budget)).toEqual(held ? [handle] : []);
      expect(alice.stats.dropped.get('early replies over budget'), String(budget)).toBe(held ? undefined : 1);
    }
  });

  test('stream chunks waiting for a gap are bounded in bytes too: internal, and cancel', () => {
    const ctx = pair({ maxPendingChunkBytes: 2000 });
    const { net, bob } = ctx;
    const { handle, request } = requestToBob(ctx, 'count', {}, { stream: true });
    for (let i = 0; i < 4; i++) bob.sendChunk(request.from, request.id, 'c'.repeat(800), net.now);
    const frames = net.take();
    net.deliver(frames.slice(1, 3)); // chunk 0 lost; 1 and 2 wait (≈1.6 KB)
    expect(only(net.drain(aliceId), 'failure')).toEqual([]);
    net.deliver(frames.slice(3)); // a third one passes 2,000 bytes
    expect(only(net.drain(aliceId), 'failure')).toEqual([
      { type: 'failure', handle, error: expect.objectContaining({ code: 'internal', message: expect.stringMatching(/bytes/) }) },
    ]);
    expect(net.take().map((f) => envelopeOf(f).msg_type)).toEqual(['cancel']);
  });

  test('browser-sized defaults: 4,096 sessions; the signed-envelope memory bound is an option', () => {
    expect(new SessionTable().limits.maxSessionsTotal).toBe(4096);
    // With 2 IDs per sender, a third signed envelope evicts the oldest and raises the sender's
    // floor: an envelope at or below it is refused as expired.
    const alice = new Endpoint(aliceId, { signedEnvelopeMemory: { maxPerSender: 2 } });
    for (let i = 0; i < 3; i++) alice.receive(signedError(bobId, aliceId, newUuidV4(), T0 + i, 'internal'), T0 + 10);
    alice.receive(signedError(bobId, aliceId, newUuidV4(), T0, 'internal'), T0 + 10);
    expect(alice.stats.dropped.get('plaintext error for no outstanding request')).toBe(3);
    expect(alice.stats.dropped.get('invalid envelope: expired')).toBe(1);
  });
});

describe('reply frames the relay could not deliver', () => {
  function warmStream() {
    const ctx = warmPair();
    return { ...ctx, ...requestToBob(ctx, 'count', {}, { stream: true }) };
  }

  test('a rate_limited chunk ends the request served and tells the caller, once', () => {
    const { net, alice, bob, handle, request } = warmStream();
    bob.sendChunk(aliceId.agentId, request.id, 'c0', net.now);
    bob.sendChunk(aliceId.agentId, request.id, 'c1', net.now);
    const [c0, c1] = net.take();
    net.deliver([c0!]);
    bob.undeliverable(c1!.id, 'rate_limited', 250, net.now);
    expect(net.drain(bobId)).toEqual([
      { type: 'serve_failed', from: aliceId.agentId, id: request.id, error: expect.objectContaining({ code: 'rate_limited', retryAfterMs: 250 }) },
    ]);
    expect(bob.isServing(aliceId.agentId, request.id, net.now)).toBe(false);
    expect(() => bob.sendChunk(aliceId.agentId, request.id, 'c2', net.now)).toThrow(expect.objectContaining({ code: 'cancelled' }));
    const [error] = net.take();
    expect(envelopeOf(error!)).toMatchObject({ msg_type: 'error', in_reply_to: request.id, encrypted: true });
    // That error frame lost as well: nothing more is sent (no loop).
    bob.undeliverable(error!.id, 'rate_limited', 250, net.now);
    expect(net.take()).toEqual([]);
    net.deliver([error!]);
    expect(net.drain(aliceId)).toEqual([
      { type: 'chunk', handle, seq: 0, body: 'c0', bytes: expect.any(Number) },
      { type: 'failure', handle, error: expect.objectContaining({ code: 'rate_limited', retryAfterMs: 250 }) },
    ]);
  });

  test('a lost final response reaches the caller as an error at once; relay-only codes read as unreachable', () => {
    const { net, alice, bob } = pair();
    alice.request(bobId.agentId, 'echo', 0, {}, net.now);
    net.settle();
    serveAll(net, bob);
    const [response] = net.take();
    bob.undeliverable(response!.id, 'buffer_full', undefined, net.now);
    expect(net.drain(bobId)).toEqual([]); // the request had ended already
    net.settle();
    expect(only(net.drain(aliceId), 'failure')[0]!.error.code).toBe('unreachable');
  });
});

describe('stats.dropped has a fixed set of labels', () => {
  test('unexpected exceptions are counted as "internal error", their text kept apart', () => {
    const bob = new Endpoint(bobId);
    let n = 0;
    (bob.sessions as unknown as { add: () => never }).add = () => {
      throw new Error(`boom ${++n}`);
    };
    for (const identity of [aliceId, carolId]) bob.receive(coldStep1ToBob(identity), T0);
    expect([...bob.stats.dropped]).toEqual([['internal error', 2]]);
    expect(bob.stats.lastInternalError).toBe('boom 2');
  });
});
