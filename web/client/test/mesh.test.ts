// MeshAgent / MeshClient and the RelayLink over real WebSockets (the `ws` package) against the
// in-process FakeRelay: requests, streams, cancellation by AbortSignal and by leaving `for await`,
// deadlines, refusals in the spec's order, stored envelopes and their acks, relay_id checks,
// 4009/4003, reconnect with resume, the ping keepalive and dead-link detection, close().
// No sleeps: every wait is for an event, with a deadline.
import { afterEach, describe, expect, test, vi } from 'vitest';
import WebSocket from 'ws';

import { MeshError } from '../src/errors.js';
import { Identity } from '../src/identity.js';
import type { JsonValue } from '../src/ijson.js';
import { type IncomingCall, type LinkStatus, MeshAgent, MeshClient, type MeshAgentOptions } from '../src/mesh.js';
import { type WebSocketConstructor, reconnectDelay } from '../src/relay_link.js';
import { FakeRelay, type FakeRelayOptions } from './fake_relay.js';
import { fakeSockets } from './fake_socket.js';
import { rejection } from './thrown.js';

const WS = WebSocket as unknown as WebSocketConstructor;
const alice = Identity.fromSeed(new Uint8Array(32).fill(0xa1));
const bob = Identity.fromSeed(new Uint8Array(32).fill(0xb0));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function relay(options: FakeRelayOptions = {}): Promise<FakeRelay> {
  const r = await FakeRelay.start(options);
  cleanups.push(() => r.stop());
  return r;
}

function track<T extends MeshClient>(client: T): T {
  cleanups.push(() => client.close());
  return client;
}

/** Statuses seen by onStatus, and a way to wait for one. */
function statusLog() {
  const seen: LinkStatus[] = [];
  let listeners: (() => void)[] = [];
  return {
    seen,
    onStatus: (status: LinkStatus) => {
      seen.push(status);
      for (const l of [...listeners]) l();
    },
    waitFor(predicate: (s: LinkStatus) => boolean, ms = 5000): Promise<LinkStatus> {
      const found = seen.find(predicate);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`status not seen; got ${JSON.stringify(seen)}`)), ms);
        const listener = () => {
          const match = seen.find(predicate);
          if (match === undefined) return;
          clearTimeout(timer);
          listeners = listeners.filter((l) => l !== listener);
          resolve(match);
        };
        listeners.push(listener);
      });
    },
  };
}

/** A promise with its resolve function (for "the handler has started" signals). */
function signal<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function bobAgent(r: FakeRelay, extra: Partial<MeshAgentOptions> = {}): MeshAgent {
  const agent = track(
    new MeshAgent(bob, {
      relayUrl: r.url,
      WebSocket: WS,
      reconnectInitialMs: 10,
      reconnectMaxMs: 100,
      isAllowed: (from) => from === alice.agentId,
      ...extra,
    }),
  );
  agent.handle('echo', (call) => ({ echo: call.body, from: call.from }));
  agent.handleStream('count', async function* (call) {
    const n = (call.body as { n: number }).n;
    for (let i = 0; i < n; i++) yield i;
  });
  return agent;
}

function aliceClient(r: FakeRelay, extra: Partial<MeshAgentOptions> = {}): MeshClient {
  return track(new MeshClient(alice, { relayUrl: r.url, WebSocket: WS, reconnectInitialMs: 10, reconnectMaxMs: 100, ...extra }));
}

describe('MeshAgent and MeshClient', () => {
  test('a request round trip, statuses connecting then online', async () => {
    const r = await relay();
    const statuses = statusLog();
    const b = bobAgent(r);
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    await b.waitOnline();
    expect(await a.request(bob.agentId, 'echo', { text: 'hi' }, { timeoutMs: 5000 })).toEqual({ echo: { text: 'hi' }, from: alice.agentId });
    expect(statuses.seen[0]?.state).toBe('connecting');
    expect(statuses.seen.some((s) => s.state === 'online')).toBe(true);
    // Warm: same session, no new handshake.
    expect(await a.request(bob.agentId, 'echo', 2)).toEqual({ echo: 2, from: alice.agentId });
    expect(r.received.filter((f) => f.from === alice.agentId && f.text.includes('"handshake"'))).toHaveLength(1);
  });

  test('streams: chunks in order, then the end', async () => {
    const r = await relay();
    bobAgent(r);
    const a = aliceClient(r);
    const chunks: JsonValue[] = [];
    for await (const chunk of a.stream(bob.agentId, 'count', { n: 40 })) chunks.push(chunk);
    expect(chunks).toEqual([...Array(40).keys()]);
  });

  test('refusals in order: revoked, ACL (default deny), unknown capability, unary/stream mismatch', async () => {
    const r = await relay();
    const b = bobAgent(r, { isRevoked: (from) => from === 'nobody' });
    b.handle('only-unary', () => 1);
    const a = aliceClient(r);
    expect((await rejection(a.request(bob.agentId, 'missing', {}))).code).toBe('unknown_capability');
    expect((await rejection(a.request(bob.agentId, 'count', {}))).code).toBe('bad_request');
    const stream = a.stream(bob.agentId, 'only-unary', {});
    expect((await rejection(stream.next())).code).toBe('bad_request');
    // Default deny: an agent without isAllowed refuses everyone.
    const c = track(new MeshAgent(Identity.fromSeed(new Uint8Array(32).fill(0xc3)), { relayUrl: r.url, WebSocket: WS }));
    c.handle('echo', () => 1);
    await c.waitOnline();
    const denied = await rejection(a.request(c.id, 'echo', {}));
    expect(denied.code).toBe('acl_denied');
    expect(denied.message).toContain(alice.agentId);
    const revokedAgent = track(
      new MeshAgent(Identity.fromSeed(new Uint8Array(32).fill(0xd4)), {
        relayUrl: r.url,
        WebSocket: WS,
        isRevoked: () => true,
        isAllowed: () => true,
      }),
    );
    revokedAgent.handle('echo', () => 1);
    expect((await rejection(a.request(revokedAgent.id, 'echo', {}))).code).toBe('revoked');
  });

  test('handler errors: a MeshError keeps its code, anything else is internal', async () => {
    const r = await relay();
    const b = bobAgent(r);
    b.handle('fail', () => {
      throw new MeshError('agent_error', 'bob could not do it', { retryAfterMs: 5 });
    });
    b.handle('crash', () => {
      throw new TypeError('boom');
    });
    const a = aliceClient(r);
    const failed = await rejection(a.request(bob.agentId, 'fail', {}));
    expect(failed).toMatchObject({ code: 'agent_error', message: 'bob could not do it', retryAfterMs: 5 });
    const crashed = await rejection(a.request(bob.agentId, 'crash', {}));
    expect(crashed.code).toBe('internal');
    expect(crashed.message).toContain('boom');
    b.handle('not-json', () => ({ n: 10n }) as unknown as JsonValue);
    const notJson = await rejection(a.request(bob.agentId, 'not-json', {}));
    expect(notJson.code).toBe('internal');
    expect(notJson.message).toMatch(/no JSON form/);
  });

  test('aborting the signal sends cancel: the handler sees it, the caller gets cancelled', async () => {
    const r = await relay();
    const b = bobAgent(r);
    const started = signal<IncomingCall>();
    const sawAbort = signal<unknown>();
    b.handle('wait', (call) => {
      started.resolve(call);
      return new Promise((_resolve, reject) => {
        call.signal.addEventListener('abort', () => {
          sawAbort.resolve(call.signal.reason);
          reject(call.signal.reason);
        });
      });
    });
    const a = aliceClient(r);
    const controller = new AbortController();
    const pending = a.request(bob.agentId, 'wait', {}, { signal: controller.signal });
    await started.promise;
    controller.abort();
    expect((await rejection(pending)).code).toBe('cancelled');
    expect(await sawAbort.promise).toMatchObject({ code: 'cancelled' });
    // An already aborted signal rejects at once.
    expect((await rejection(a.request(bob.agentId, 'echo', {}, { signal: controller.signal }))).code).toBe('cancelled');
  });

  test('leaving for-await cancels the stream; the stream handler stops', async () => {
    const r = await relay();
    const b = bobAgent(r);
    const stopped = signal<unknown>();
    b.handleStream('forever', async function* (call) {
      let i = 0;
      try {
        while (!call.signal.aborted) {
          yield i++;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      } finally {
        stopped.resolve(call.signal.reason);
      }
    });
    const a = aliceClient(r);
    const seen: JsonValue[] = [];
    for await (const chunk of a.stream(bob.agentId, 'forever', {})) {
      seen.push(chunk);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual([0, 1, 2]);
    expect(await stopped.promise).toMatchObject({ code: 'cancelled' });
  });

  test('deadlines: the caller times out and the handler is told', async () => {
    const r = await relay();
    const b = bobAgent(r);
    const sawAbort = signal<unknown>();
    b.handle('slow', (call) => new Promise(() => call.signal.addEventListener('abort', () => sawAbort.resolve(call.signal.reason))));
    const a = aliceClient(r);
    const started = Date.now();
    expect((await rejection(a.request(bob.agentId, 'slow', {}, { timeoutMs: 300 }))).code).toBe('timeout');
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(await sawAbort.promise).toMatchObject({ code: 'timeout' });
  });

  test('a request to an offline agent is stored; delivered, answered and acked when it connects', async () => {
    const r = await relay();
    const a = aliceClient(r);
    await a.waitOnline();
    const pending = a.request(bob.agentId, 'echo', 'stored', { timeoutMs: 8000 });
    await r.waitFor('the step-1 envelope stored', () => (r.stored.get(bob.agentId)?.length ?? 0) === 1);
    bobAgent(r);
    expect(await pending).toEqual({ echo: 'stored', from: alice.agentId });
    await r.waitFor('bob acks the stored envelope', () => r.events.includes(`ack ${bob.agentId} 1`));
    expect(r.stored.get(bob.agentId)).toEqual([]);
  });

  test('close(): in-flight requests fail with cancelled, new ones too, status closed', async () => {
    const r = await relay();
    const b = bobAgent(r);
    const started = signal();
    b.handle('wait', (call) => {
      started.resolve();
      return new Promise((_, reject) => call.signal.addEventListener('abort', () => reject(call.signal.reason)));
    });
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    const pending = rejection(a.request(bob.agentId, 'wait', {}));
    await started.promise;
    await a.close();
    expect((await pending).code).toBe('cancelled');
    expect((await rejection(a.request(bob.agentId, 'echo', {}))).message).toBe('the client is closed');
    expect(statuses.seen.at(-1)).toMatchObject({ state: 'closed', code: 'cancelled' });
    await r.waitFor('the relay sees a 1000 close', () => r.events.includes(`closed ${alice.agentId} 1000`));
  });
});

describe('RelayLink', () => {
  test('reconnect delay is full jitter within the doubling ceiling', () => {
    expect(reconnectDelay(200, 10_000, 0, 0.5)).toBe(100);
    expect(reconnectDelay(200, 10_000, 3, 0.999)).toBe(1598);
    expect(reconnectDelay(200, 10_000, 40, 1)).toBe(10_000);
    expect(reconnectDelay(200, 10_000, 5, Number.NaN)).toBe(0);
  });

  test('a relay_id that does not match the URL dialled: no auth is sent, the link retries', async () => {
    const r = await relay({ relayId: 'ws://relay.example:9800/relay/ws' });
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    const offline = await statuses.waitFor((s) => s.state === 'offline');
    expect(offline).toMatchObject({ reason: expect.stringContaining('relay_id mismatch') });
    expect(r.events.some((e) => e.startsWith('welcome'))).toBe(false);
    void a;
  });

  test('expectedRelayId accepts a relay known by another name', async () => {
    const r = await relay({ relayId: 'wss://mesh.example.com/relay/ws' });
    const a = aliceClient(r, { expectedRelayId: 'wss://mesh.example.com/relay/ws' });
    await a.waitOnline();
  });

  test('4009 (replaced): no reconnect, in-flight requests fail, new ones are refused', async () => {
    const r = await relay();
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    await a.waitOnline();
    const pending = a.request(bob.agentId, 'echo', {}, { timeoutMs: 5000 }); // bob is offline: waits
    await r.waitFor('stored', () => (r.stored.get(bob.agentId)?.length ?? 0) === 1);
    r.kick(alice.agentId, 4009);
    const closed = await statuses.waitFor((s) => s.state === 'closed');
    expect(closed).toMatchObject({ closeCode: 4009, code: 'unreachable', reason: expect.stringContaining('replaced') });
    expect((await rejection(pending)).code).toBe('unreachable');
    expect((await rejection(a.request(bob.agentId, 'echo', {}))).code).toBe('unreachable');
    expect(r.events.filter((e) => e === `welcome ${alice.agentId}`)).toHaveLength(1);
  });

  test('4003 (revoked): closed with revoked', async () => {
    const r = await relay();
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    await a.waitOnline();
    r.kick(alice.agentId, 4003);
    expect(await statuses.waitFor((s) => s.state === 'closed')).toMatchObject({ closeCode: 4003, code: 'revoked' });
    expect((await rejection(a.request(bob.agentId, 'echo', {}))).code).toBe('revoked');
  });

  test('a dropped connection reconnects with the resume token; sessions survive', async () => {
    const r = await relay();
    bobAgent(r);
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    expect(await a.request(bob.agentId, 'echo', 1)).toMatchObject({ echo: 1 });
    r.cut(alice.agentId);
    await statuses.waitFor((s) => s.state === 'offline');
    await r.waitFor('alice resumed', () => r.events.includes(`welcome ${alice.agentId} resumed`));
    expect(await a.request(bob.agentId, 'echo', 2)).toMatchObject({ echo: 2 });
    expect(r.received.filter((f) => f.from === alice.agentId && f.text.includes('"handshake"'))).toHaveLength(1);
  });

  test('keepalive: pings every heartbeat; a silent relay is presumed dead and the link reconnects', async () => {
    const r = await relay({ heartbeatMs: 500, answerPings: false });
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    await a.waitOnline();
    await r.waitFor('a ping', () => r.events.includes(`ping ${alice.agentId}`), 2000);
    const offline = await statuses.waitFor((s) => s.state === 'offline', 3000);
    expect(offline).toMatchObject({ reason: expect.stringContaining('did not answer a ping') });
    await r.waitFor('reconnected', () => r.events.filter((e) => e.startsWith(`welcome ${alice.agentId}`)).length === 2, 3000);
  });

  test('a relay answering pings keeps the link up', async () => {
    const r = await relay({ heartbeatMs: 500 });
    const statuses = statusLog();
    const a = aliceClient(r, { onStatus: statuses.onStatus });
    await a.waitOnline();
    await r.waitFor('three pings', () => r.events.filter((e) => e === `ping ${alice.agentId}`).length >= 3, 4000);
    expect(statuses.seen.some((s) => s.state === 'offline')).toBe(false);
  });
});

describe('review findings at the public API', () => {
  test('unusable timeouts reject with bad_request (stream() never throws) and block nothing', async () => {
    const r = await relay();
    bobAgent(r);
    const a = aliceClient(r);
    for (const timeoutMs of [Infinity, 2 ** 53, Number.NaN]) {
      let stream: ReturnType<MeshClient['stream']> | undefined;
      expect(() => (stream = a.stream(bob.agentId, 'count', { n: 1 }, { timeoutMs }))).not.toThrow();
      expect((await rejection(stream!.next())).code).toBe('bad_request');
      expect((await rejection(a.request(bob.agentId, 'echo', {}, { timeoutMs }))).code).toBe('bad_request');
    }
    expect(await a.request(bob.agentId, 'echo', 'after', { timeoutMs: 5000 })).toEqual({ echo: 'after', from: alice.agentId });
  });

  test('a handler result a receiver would refuse (unsafe integer, Date, Map) is answered internal', async () => {
    const r = await relay();
    const b = bobAgent(r);
    b.handle('big', () => ({ n: 1e20 }));
    b.handle('date', () => new Date(0) as unknown as JsonValue);
    b.handle('map', () => new Map([['a', 1]]) as unknown as JsonValue);
    const a = aliceClient(r);
    for (const capability of ['big', 'date', 'map']) {
      const error = await rejection(a.request(bob.agentId, capability, {}, { timeoutMs: 5000 }));
      expect(error.code, capability).toBe('internal');
      expect(error.message, capability).toMatch(/no JSON form/);
    }
  });

  test('stream chunks waiting for a reader are bounded in bytes: internal, and the request is cancelled', async () => {
    const r = await relay();
    const b = bobAgent(r);
    b.handleStream('wide', async function* () {
      for (let i = 0; i < 10; i++) yield 'x'.repeat(300);
    });
    const a = aliceClient(r, { maxBufferedStreamBytes: 1000 });
    const stream = a.stream(bob.agentId, 'wide', {}, { timeoutMs: 5000 });
    await r.waitFor('alice cancels', () => r.received.some((f) => f.from === alice.agentId && f.text.includes('"msg_type":"cancel"')));
    const read: JsonValue[] = [];
    const error = await rejection(
      (async () => {
        for await (const chunk of stream) read.push(chunk);
      })(),
    );
    expect(read).toHaveLength(3); // ≈317 bytes each as received; a fourth would pass 1,000
    expect(error).toMatchObject({ code: 'internal', message: expect.stringMatching(/1000 bytes/) });
  });

  test('a reply chunk the relay refuses (rate_limited) fails the stream with that code and stops the handler', async () => {
    const r = await relay();
    let chunks = 0;
    r.refuse = (from, envelope) =>
      from === bob.agentId && envelope['msg_type'] === 'stream_chunk' && ++chunks === 2 ? { code: 'rate_limited', retry_after_ms: 500 } : undefined;
    const b = bobAgent(r);
    const stopped = signal<unknown>();
    b.handleStream('slow', async function* (call) {
      try {
        for (let i = 0; i < 20 && !call.signal.aborted; i++) {
          yield i;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } finally {
        stopped.resolve(call.signal.reason);
      }
    });
    const a = aliceClient(r);
    const read: JsonValue[] = [];
    const error = await rejection(
      (async () => {
        for await (const chunk of a.stream(bob.agentId, 'slow', {}, { timeoutMs: 3000 })) read.push(chunk);
      })(),
    );
    expect(read).toEqual([0]);
    expect(error).toMatchObject({ code: 'rate_limited', retryAfterMs: 500 });
    expect(await stopped.promise).toMatchObject({ code: 'rate_limited' });
  });

  test("stream handlers are paced by the socket's bufferedAmount while online", async () => {
    const r = await relay();
    let pressure = 0;
    // The `ws` socket with its bufferedAmount under the test's control.
    class PressuredWebSocket extends WebSocket {}
    Object.defineProperty(PressuredWebSocket.prototype, 'bufferedAmount', { get: () => pressure });
    const b = bobAgent(r, { WebSocket: PressuredWebSocket as unknown as WebSocketConstructor });
    let pulled = 0;
    b.handleStream('paced', async function* () {
      for (let i = 0; i < 5; i++) {
        pulled += 1;
        yield i;
      }
    });
    const a = aliceClient(r);
    await b.waitOnline();
    const stream = a.stream(bob.agentId, 'paced', {}, { timeoutMs: 5000 });
    pressure = 2 * 1024 * 1024;
    expect(await stream.next()).toEqual({ value: 0, done: false });
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(pulled).toBe(1); // waiting for the socket to drain
    pressure = 0;
    const rest: JsonValue[] = [];
    for await (const chunk of stream) rest.push(chunk);
    expect(rest).toEqual([1, 2, 3, 4]);
  });
});

describe('close() and timers', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  test('no timer is left armed after close(), even when frames arrive while the link closes', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
    const { WebSocket: FakeWS, sockets } = fakeSockets();
    const client = new MeshClient(alice, { relayUrl: 'ws://relay-a.test/relay/ws', WebSocket: FakeWS });
    sockets[0]!.authenticate();
    expect(client.status.state).toBe('online');
    sockets[0]!.closePromptly = false; // the relay is slow to answer the close handshake
    const closing = client.close();
    await Promise.resolve();
    // A frame arrives meanwhile: the engine drops it, and nothing may re-arm the tick timer.
    sockets[0]!.deliver(JSON.stringify({ id: crypto.randomUUID(), from: bob.agentId, to: alice.agentId, msg_type: 'request', timestamp: Date.now(), payload: 1 }));
    sockets[0]!.finishClose(1000);
    await closing;
    expect(vi.getTimerCount()).toBe(0);
  });
});
