// RelayLink against relays that misbehave on purpose (a raw `ws` server scripted per test) and the
// FakeRelay: version and shape checks of the relay's frames with the close codes of §6, acks of
// stored envelopes in batches of at most 256, fail-over across URLs, reconnect after 1001, frames
// queued while offline. Every wait is for an event, with a deadline.
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';

import { encodeBase64url } from '../src/base64url.js';
import { Identity } from '../src/identity.js';
import { type LinkStatus, RelayLink, type WebSocketConstructor } from '../src/relay_link.js';
import { newUuidV4 } from '../src/uuid.js';
import { FakeRelay } from './fake_relay.js';
import { fakeSockets } from './fake_socket.js';

const WS = WebSocket as unknown as WebSocketConstructor;
const alice = Identity.fromSeed(new Uint8Array(32).fill(0xa1));
const bob = Identity.fromSeed(new Uint8Array(32).fill(0xb0));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function until<T>(what: string, probe: () => T | undefined, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const poll = () => {
      const value = probe();
      if (value !== undefined) return resolve(value);
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

/** A scripted relay: `script` answers each client frame; the close code the client sent is kept. */
async function rawRelay(script: (ws: WebSocket, frame: Record<string, unknown>, url: string) => void) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/relay/ws`;
  const closes: number[] = [];
  server.on('connection', (ws) => {
    ws.on('message', (data) => script(ws, JSON.parse(data.toString()) as Record<string, unknown>, url));
    ws.on('close', (code) => closes.push(code));
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const client of server.clients) client.terminate();
        server.close(() => resolve());
      }),
  );
  return { url, closes, server };
}

const challenge = (url: string) => JSON.stringify({ type: 'challenge', nonce: encodeBase64url(randomBytes(32)), relay_id: url });
const welcome = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: 'welcome', v: 1, session_token: encodeBase64url(randomBytes(32)), heartbeat_ms: 30000, buffered: 0, ...extra });

function link(urls: string[], extra: Partial<ConstructorParameters<typeof RelayLink>[0]> = {}) {
  const statuses: LinkStatus[] = [];
  const envelopes: string[] = [];
  const l = new RelayLink({
    identity: alice,
    urls,
    WebSocket: WS,
    reconnectInitialMs: 5,
    reconnectMaxMs: 20,
    onEnvelope: (frame) => envelopes.push(frame),
    onStatus: (status) => statuses.push(status),
    ...extra,
  });
  cleanups.push(() => l.close());
  l.start();
  return { link: l, statuses, envelopes };
}

describe('frames from the relay that end the connection', () => {
  test.each([
    ['a welcome with v 2', (ws: WebSocket, url: string) => { ws.send(challenge(url)); }, welcome({ v: 2 }), 4002],
    ['a welcome with v "1"', (ws: WebSocket, url: string) => { ws.send(challenge(url)); }, welcome({ v: '1' }), 4002],
    ['a welcome with an unknown member', (ws: WebSocket, url: string) => { ws.send(challenge(url)); }, welcome({ extra: 1 }), 4000],
    ['a second challenge', (ws: WebSocket, url: string) => { ws.send(challenge(url)); }, 'CHALLENGE', 4000],
  ])('%s', async (_name, onHello, afterAuth, expected) => {
    const relay = await rawRelay((ws, frame, url) => {
      if (frame['type'] === 'hello') onHello(ws, url);
      if (frame['type'] === 'auth') ws.send(afterAuth === 'CHALLENGE' ? challenge(url) : afterAuth);
    });
    const { statuses } = link([relay.url]);
    await until('the client closes', () => relay.closes[0]);
    expect(relay.closes[0]).toBe(expected);
    await until('offline', () => statuses.find((s) => s.state === 'offline'));
  });

  test('a welcome without any authentication is refused (4000)', async () => {
    const relay = await rawRelay((ws, frame) => {
      if (frame['type'] === 'hello') ws.send(welcome());
    });
    link([relay.url]);
    expect(await until('close', () => relay.closes[0])).toBe(4000);
  });

  test('a binary frame, a frame that is neither envelope nor control, a malformed pong (4000)', async () => {
    for (const bad of [Buffer.from([1, 2, 3]), '{"neither":1}', '{"type":"pong","x":1}', '{"type":"ack","ids":[]}']) {
      const relay = await rawRelay((ws, frame, url) => {
        if (frame['type'] === 'hello') ws.send(challenge(url));
        if (frame['type'] === 'auth') {
          ws.send(welcome());
          ws.send(bad, { binary: typeof bad !== 'string' });
        }
      });
      const { link: l } = link([relay.url]);
      expect(await until('close', () => relay.closes[0])).toBe(4000);
      await l.close();
    }
  });

  test('the relay’s error frame before its close is named in the reason; 4001 is retried', async () => {
    const relay = await rawRelay((ws, frame) => {
      if (frame['type'] === 'hello') {
        ws.send(JSON.stringify({ type: 'error', code: 'auth_failed', message: 'not registered' }));
        ws.close(4001);
      }
    });
    const { statuses } = link([relay.url]);
    const offline = await until('offline', () => statuses.find((s) => s.state === 'offline'));
    expect(offline).toMatchObject({ closeCode: 4001, reason: expect.stringContaining('auth_failed: not registered') });
    await until('a second attempt', () => statuses.filter((s) => s.state === 'connecting').length >= 2 || undefined);
  });
});

describe('stored envelopes, queues, fail-over', () => {
  test('stored envelopes are delivered first and acked in batches of at most 256', async () => {
    const relay = await FakeRelay.start();
    cleanups.push(() => relay.stop());
    const stored: [string, string][] = [];
    for (let i = 0; i < 300; i++) {
      const id = newUuidV4();
      stored.push([id, JSON.stringify({ id, from: bob.agentId, to: alice.agentId, msg_type: 'request', timestamp: i, payload: i })]);
    }
    // Nested duplicate names: the relay forwards it (it checks the top level only); the receiver
    // drops it, and acks it like any other, without closing the connection.
    const nested = newUuidV4();
    stored.push([nested, `{"id":"${nested}","from":"${bob.agentId}","to":"${alice.agentId}","msg_type":"request","timestamp":1,"payload":{"a":1,"a":2}}`]);
    // One without a readable id: delivered, never acked (the relay redelivers it next time).
    stored.push(['-', JSON.stringify({ id: 'not-a-uuid', msg_type: 'request' })]);
    relay.stored.set(alice.agentId, stored);
    const { envelopes } = link([relay.url]);
    await relay.waitFor('two acks', () => relay.events.filter((e) => e.startsWith(`ack ${alice.agentId}`)).length === 2);
    expect(relay.events.filter((e) => e.startsWith(`ack ${alice.agentId}`))).toEqual([`ack ${alice.agentId} 256`, `ack ${alice.agentId} 45`]);
    expect(envelopes).toHaveLength(302);
    expect(relay.stored.get(alice.agentId)).toEqual([['-', stored[301]![1]]]);
    expect(relay.events.some((e) => e.startsWith(`closed ${alice.agentId}`))).toBe(false);
  });

  test('frames sent while offline wait (bounded) and go out after the welcome', async () => {
    const relay = await FakeRelay.start();
    cleanups.push(() => relay.stop());
    const { link: l } = link([relay.url], { maxQueuedFrames: 2 });
    const frame = (n: number) => JSON.stringify({ id: newUuidV4(), from: alice.agentId, to: bob.agentId, msg_type: 'request', n });
    expect(l.send(frame(1))).toBe(true);
    expect(l.send(frame(2))).toBe(true);
    expect(l.send(frame(3))).toBe(false);
    expect(l.send('x'.repeat(2 * 1024 * 1024))).toBe(false);
    await relay.waitFor('both stored for offline bob', () => (relay.stored.get(bob.agentId)?.length ?? 0) === 2);
    expect(l.queuedFrames).toBe(0);
  });

  test('fail-over: a dead first URL, then the next one', async () => {
    const dead = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => dead.once('listening', () => resolve()));
    const deadUrl = `ws://127.0.0.1:${(dead.address() as AddressInfo).port}/relay/ws`;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const relay = await FakeRelay.start();
    cleanups.push(() => relay.stop());
    const { statuses } = link([deadUrl, relay.url]);
    const online = await until('online', () => statuses.find((s) => s.state === 'online'));
    expect(online).toMatchObject({ url: relay.url, resumed: false });
    expect(statuses[0]).toMatchObject({ state: 'connecting', url: deadUrl });
    expect(statuses.find((s) => s.state === 'offline')).toMatchObject({ url: deadUrl });
  });

  test('1001 (draining): the link reconnects and resumes', async () => {
    const relay = await FakeRelay.start();
    cleanups.push(() => relay.stop());
    const { statuses } = link([relay.url]);
    await relay.waitFor('welcome', () => relay.events.includes(`welcome ${alice.agentId}`));
    relay.kick(alice.agentId, 1001);
    await relay.waitFor('resumed', () => relay.events.includes(`welcome ${alice.agentId} resumed`));
    expect(statuses.find((s) => s.state === 'offline')).toMatchObject({ closeCode: 1001 });
    await until('online again, resumed', () => statuses.find((s) => s.state === 'online' && s.resumed));
  });

  test('no WebSocket and bad URLs are refused at construction', () => {
    expect(() => new RelayLink({ identity: alice, urls: ['http://127.0.0.1/relay/ws'], WebSocket: WS, onEnvelope: () => {} })).toThrow(
      /ws:\/\/ or wss:\/\//,
    );
    expect(() => new RelayLink({ identity: alice, urls: [], WebSocket: WS, onEnvelope: () => {} })).toThrow(/no relay URL/);
  });
});

describe('bounds, backpressure and fail-over state', () => {
  test('frames held while offline are bounded in bytes as well as in number', () => {
    const { WebSocket } = fakeSockets(); // never opens: the link stays offline
    const { link: l } = link(['ws://relay-a.test/relay/ws'], { WebSocket, maxQueuedBytes: 1000 });
    const frame = (fill: string) => JSON.stringify({ id: newUuidV4(), to: bob.agentId, msg_type: 'request', pad: fill.repeat(300) });
    expect(l.send(frame('a'))).toBe(true);
    expect(l.send(frame('b'))).toBe(true);
    expect(l.send(frame('c'))).toBe(false); // ≈1,200 bytes would be held
    expect(l.queuedFrames).toBe(2);
    expect(l.queuedBytes).toBe(2 * frame('a').length);
  });

  test("whenDrained waits for the socket's own buffer while online (polled)", async () => {
    const { WebSocket, sockets } = fakeSockets();
    const { link: l } = link(['ws://relay-a.test/relay/ws'], { WebSocket });
    await until('a socket', () => sockets[0]);
    sockets[0]!.authenticate();
    expect(l.connected).toBe(true);
    sockets[0]!.bufferedAmount = 2 * 1024 * 1024;
    expect(l.bufferedAmount).toBe(2 * 1024 * 1024);
    let drained = false;
    void l.whenDrained(1).then(() => (drained = true));
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(drained).toBe(false); // the queue is empty, but the socket holds 2 MiB
    sockets[0]!.bufferedAmount = 100 * 1024; // below the 256 KiB default
    await until('drained', () => drained || undefined, 1000);
  });

  test('acks pending at a fail-over are not sent to another relay (a reconnect to the same one keeps them)', async () => {
    const stored = (n: number) => {
      const id = newUuidV4();
      return [id, JSON.stringify({ id, from: bob.agentId, to: alice.agentId, msg_type: 'request', timestamp: n, payload: n })] as const;
    };
    const acksIn = (socket: { frames(): Record<string, unknown>[] }) => socket.frames().filter((f) => f['type'] === 'ack');
    // Two relays: the stored envelope came from A; the link fails over to B, then back to A.
    {
      const { WebSocket, sockets } = fakeSockets();
      link(['ws://relay-a.test/relay/ws', 'ws://relay-b.test/relay/ws'], { WebSocket, random: () => 0 });
      await until('socket A', () => sockets[0]);
      sockets[0]!.authenticate({ buffered: 2 });
      sockets[0]!.deliver(stored(1)[1]); // one of two: its ack waits for the second (or 20 ms)
      sockets[0]!.finishClose(1006);
      await until('socket B', () => sockets[1]);
      sockets[1]!.authenticate();
      await new Promise((resolve) => setTimeout(resolve, 40)); // past the ack linger
      expect(acksIn(sockets[1]!)).toEqual([]);
      sockets[1]!.finishClose(1006);
      await until('socket A again', () => sockets[2]);
      sockets[2]!.authenticate();
      await new Promise((resolve) => setTimeout(resolve, 40));
      expect(acksIn(sockets[2]!)).toEqual([]); // dropped at the fail-over
    }
    // One relay: after a reconnect the same relay gets the ack.
    {
      const { WebSocket, sockets } = fakeSockets();
      link(['ws://relay-a.test/relay/ws'], { WebSocket, random: () => 0 });
      await until('socket A', () => sockets[0]);
      sockets[0]!.authenticate({ buffered: 2 });
      const [id, text] = stored(1);
      sockets[0]!.deliver(text);
      sockets[0]!.finishClose(1006);
      await until('socket A again', () => sockets[1]);
      sockets[1]!.authenticate();
      await until('the ack', () => acksIn(sockets[1]!)[0]);
      expect(acksIn(sockets[1]!)).toEqual([{ type: 'ack', ids: [id] }]);
    }
  });

  test('resume tokens after fail-over A → B → A: each relay sees only its own token', async () => {
    const a = await FakeRelay.start();
    const b = await FakeRelay.start();
    cleanups.push(() => a.stop(), () => b.stop());
    link([a.url, b.url], { random: () => 0 });
    await a.waitFor('welcome at A', () => a.events.includes(`welcome ${alice.agentId}`));
    const tokenA = [...a.tokens.keys()][0]!;
    a.kick(alice.agentId, 1001);
    await b.waitFor('welcome at B', () => b.events.includes(`welcome ${alice.agentId}`));
    expect(b.hellos).toEqual([{ agentId: alice.agentId, resume: undefined }]);
    b.kick(alice.agentId, 1001);
    await a.waitFor('resumed at A', () => a.events.includes(`welcome ${alice.agentId} resumed`));
    expect(a.hellos).toEqual([
      { agentId: alice.agentId, resume: undefined },
      { agentId: alice.agentId, resume: tokenA },
    ]);
    expect(b.hellos.every((h) => h.resume === undefined)).toBe(true);
  });

  test('an identity that cannot sign the challenge ends the link with a clear reason, nothing thrown', async () => {
    const relay = await FakeRelay.start();
    cleanups.push(() => relay.stop());
    const destroyed = Identity.fromSeed(new Uint8Array(32).fill(0x77));
    destroyed.destroy();
    const { statuses } = link([relay.url], { identity: destroyed });
    const closed = await until('closed', () => statuses.find((s) => s.state === 'closed'));
    expect(closed).toMatchObject({ code: 'internal', reason: expect.stringMatching(/cannot sign the relay's challenge/) });
    expect(statuses.filter((s) => s.state === 'connecting')).toHaveLength(1); // no reconnect loop
  });
});
