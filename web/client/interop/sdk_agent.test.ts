// The TypeScript client (in Node, over the `ws` package) calls a C++ MeshAgent (tests/interop/
// sdk_peer serve) through the real agent-mesh-server: Noise IK sessions, requests, streams, errors,
// the ACL, and cancellation that the C++ handler sees (by AbortSignal, by leaving `for await`, by
// the deadline).
import { beforeAll, describe, expect, test } from 'vitest';

import { MeshError } from '../src/errors.js';
import type { JsonValue } from '../src/ijson.js';
import type { MeshClient } from '../src/mesh.js';
import { type Agent, type SdkPeer, missingBinaries, useMesh } from './harness.js';
import { rejection } from '../test/thrown.js';

const skip = missingBinaries(['server', 'meshctl', 'sdkPeer']);

describe.skipIf(skip !== undefined)('TypeScript client → C++ MeshAgent', () => {
  const mesh = useMesh();
  let alice: Agent;
  let bob: Agent;
  let carol: Agent;
  let peer: SdkPeer;
  let client: MeshClient;
  let carolClient: MeshClient;

  beforeAll(async () => {
    ({ alice, bob, carol } = await mesh.startWithAgents({ alice: ['chat'], bob: ['echo', 'count', 'wait', 'fail'], carol: ['chat'] }));
    peer = await mesh.sdkServe(bob, [alice]);
    client = mesh.client(alice, { defaultTimeoutMs: 10_000 });
    carolClient = mesh.client(carol, { defaultTimeoutMs: 10_000 });
    await mesh.online();
  }, 30_000);

  test('an encrypted request and its response', async () => {
    const body = await client.request(bob.identity.agentId, 'echo', { message: 'hello from TypeScript', n: [1, 2.5, null] });
    expect(body).toEqual({ echo: { message: 'hello from TypeScript', n: [1, 2.5, null] }, from: alice.identity.agentId, encrypted: true });
    // Warm, and concurrent on one session.
    const many = await Promise.all([...Array(20).keys()].map((i) => client.request(bob.identity.agentId, 'echo', i)));
    expect(many.map((b) => (b as { echo: number }).echo)).toEqual([...Array(20).keys()]);
  });

  test('a large request and response (multi-piece transport messages)', async () => {
    const big = 'x'.repeat(200_000);
    const body = (await client.request(bob.identity.agentId, 'echo', big)) as { echo: string };
    expect(body.echo).toBe(big);
  });

  test('a stream: chunks in order, then the end', async () => {
    const chunks: JsonValue[] = [];
    for await (const chunk of client.stream(bob.identity.agentId, 'count', { n: 25 })) chunks.push(chunk);
    expect(chunks).toEqual([...Array(25).keys()].map((i) => ({ i })));
  });

  test('errors: the handler’s code, unknown capability, ACL denial', async () => {
    expect(await rejection(client.request(bob.identity.agentId, 'fail', {}))).toMatchObject({
      code: 'agent_error',
      message: 'sdk_peer fails on purpose',
    });
    expect((await rejection(client.request(bob.identity.agentId, 'nope', {}))).code).toBe('unknown_capability');
    expect((await rejection(carolClient.request(bob.identity.agentId, 'echo', {}))).code).toBe('acl_denied');
  });

  test('AbortSignal cancels a request: the C++ handler sees the cancel', async () => {
    const controller = new AbortController();
    const pending = rejection(client.request(bob.identity.agentId, 'wait', { x: 1 }, { signal: controller.signal }));
    const started = await peer.event('wait started', (e) => e['event'] === 'request' && e['capability'] === 'wait');
    controller.abort();
    expect((await pending).code).toBe('cancelled');
    await peer.event('the handler cancelled', (e) => e['event'] === 'cancelled' && e['id'] === started['id']);
  });

  test('leaving for-await cancels a stream: the C++ handler sees the cancel', async () => {
    const seen: JsonValue[] = [];
    for await (const chunk of client.stream(bob.identity.agentId, 'count', { n: 2, hold: true })) {
      seen.push(chunk);
      if (seen.length === 2) break;
    }
    expect(seen).toEqual([{ i: 0 }, { i: 1 }]);
    const started = await peer.event('held stream', (e) => e['event'] === 'request' && e['capability'] === 'count' && e['stream'] === true);
    void started;
    await peer.event('the stream handler cancelled', (e) => e['event'] === 'cancelled' && e['capability'] === 'count');
  });

  test('the deadline: timeout for the caller, the C++ handler is told when timeout_ms passes', async () => {
    const before = peer.events().filter((e) => e['event'] === 'cancelled').length;
    expect((await rejection(client.request(bob.identity.agentId, 'wait', {}, { timeoutMs: 700 }))).code).toBe('timeout');
    await peer.event('the waiting handler cancelled by its deadline', () => peer.events().filter((e) => e['event'] === 'cancelled').length > before);
  });

  test('the C++ agent restarts: no_session, a new handshake and the retry are transparent', async () => {
    await client.request(bob.identity.agentId, 'echo', 'before');
    await peer.kill();
    peer = await mesh.sdkServe(bob, [alice]);
    expect(await client.request(bob.identity.agentId, 'echo', 'after')).toMatchObject({ echo: 'after' });
  });
});
