// A C++ MeshClient (tests/interop/sdk_peer call) calls a TypeScript MeshAgent through the real
// agent-mesh-server: the TypeScript side is the Noise responder, serves unary and streaming
// handlers, and its handlers see the C++ caller's cancel (request and stream) through AbortSignal.
import { beforeAll, describe, expect, test } from 'vitest';

import type { IncomingCall, MeshAgent } from '../src/mesh.js';
import { MeshError } from '../src/errors.js';
import { type Agent, type SdkPeer, missingBinaries, useMesh, waitFor } from './harness.js';

const skip = missingBinaries(['server', 'meshctl', 'sdkPeer']);

describe.skipIf(skip !== undefined)('C++ MeshClient → TypeScript MeshAgent', () => {
  const mesh = useMesh();
  let alice: Agent;
  let bob: Agent;
  let agent: MeshAgent;
  let caller: SdkPeer;
  const started: IncomingCall[] = [];
  const aborted: { id: string; reason: unknown }[] = [];
  let tags = 0;

  const watch = (call: IncomingCall) => {
    started.push(call);
    call.signal.addEventListener('abort', () => aborted.push({ id: call.id, reason: call.signal.reason }));
  };

  beforeAll(async () => {
    ({ alice, bob } = await mesh.startWithAgents({ alice: ['chat'], bob: ['echo', 'count', 'wait'] }));
    agent = mesh.agent(bob, {
      isAllowed: (from, capability) => from === alice.identity.agentId && capability !== 'private',
    });
    agent.handle('echo', (call) => {
      watch(call);
      return { echo: call.body, from: call.from, encrypted: call.encrypted };
    });
    agent.handle('private', () => 'never');
    agent.handle('fail', () => {
      throw new MeshError('rate_limited', 'the TypeScript agent is busy', { retryAfterMs: 1234 });
    });
    agent.handle('wait', (call) => {
      watch(call);
      return new Promise((_resolve, reject) => call.signal.addEventListener('abort', () => reject(call.signal.reason)));
    });
    agent.handleStream('count', async function* (call) {
      watch(call);
      const { n, hold } = call.body as { n: number; hold?: boolean };
      for (let i = 0; i < n; i++) yield { i };
      if (hold) await new Promise((resolve) => call.signal.addEventListener('abort', resolve));
    });
    await mesh.online();
    caller = await mesh.sdkCall(alice);
  }, 30_000);

  /** Sends a command to the C++ caller; returns its tag. */
  const send = (op: string, capability: string, body: unknown, extra: Record<string, unknown> = {}) => {
    const tag = `t${++tags}`;
    caller.command({ op, tag, target: bob.identity.agentId, capability, body, ...extra });
    return tag;
  };
  const outcome = (tag: string) =>
    caller.event(`the outcome of ${tag}`, (e) => e['tag'] === tag && (e['event'] === 'response' || e['event'] === 'error' || e['event'] === 'end'));

  test('a request and its response (the TypeScript agent is the Noise responder)', async () => {
    const tag = send('request', 'echo', { message: 'hello from C++' });
    expect(await outcome(tag)).toEqual({
      event: 'response',
      tag,
      body: { echo: { message: 'hello from C++' }, from: alice.identity.agentId, encrypted: true },
      encrypted: true,
    });
  });

  test('a stream: chunks in order, then the end', async () => {
    const tag = send('stream', 'count', { n: 30 });
    await outcome(tag);
    const chunks = caller.events().filter((e) => e['tag'] === tag && e['event'] === 'chunk').map((e) => e['body']);
    expect(chunks).toEqual([...Array(30).keys()].map((i) => ({ i })));
  });

  test('errors: the handler’s MeshError, the ACL, an unknown capability', async () => {
    const failed = send('request', 'fail', {});
    expect(await outcome(failed)).toMatchObject({ event: 'error', code: 'rate_limited', message: 'the TypeScript agent is busy' });
    const denied = send('request', 'private', {});
    expect(await outcome(denied)).toMatchObject({ event: 'error', code: 'acl_denied' });
    const unknown = send('request', 'nope', {});
    expect(await outcome(unknown)).toMatchObject({ event: 'error', code: 'unknown_capability' });
  });

  test('the C++ caller cancels a request: the TypeScript handler’s signal fires', async () => {
    const count = started.length;
    const tag = send('request', 'wait', {});
    const call = await waitFor('the wait handler started', () => started.slice(count).find((c) => c.capability === 'wait'));
    caller.command({ op: 'cancel', tag });
    expect(await outcome(tag)).toMatchObject({ event: 'error', code: 'cancelled' });
    const seen = await waitFor('the handler saw the cancel', () => aborted.find((a) => a.id === call.id));
    expect(seen.reason).toMatchObject({ code: 'cancelled' });
  });

  test('the C++ caller cancels a stream: the TypeScript stream handler’s signal fires', async () => {
    const count = started.length;
    const tag = send('stream', 'count', { n: 1, hold: true });
    const call = await waitFor('the stream handler started', () => started.slice(count).find((c) => c.capability === 'count'));
    await caller.event('the first chunk', (e) => e['tag'] === tag && e['event'] === 'chunk');
    caller.command({ op: 'cancel', tag });
    expect(await outcome(tag)).toMatchObject({ event: 'error', code: 'cancelled' });
    await waitFor('the stream handler saw the cancel', () => aborted.find((a) => a.id === call.id));
  });

  test('the C++ caller’s deadline reaches the TypeScript handler', async () => {
    const count = started.length;
    const tag = send('request', 'wait', {}, { timeout_ms: 600 });
    const call = await waitFor('the wait handler started', () => started.slice(count).find((c) => c.capability === 'wait'));
    expect(call.deadlineMs).toBeDefined();
    expect(await outcome(tag)).toMatchObject({ event: 'error', code: 'timeout' });
    const seen = await waitFor('the handler saw its deadline', () => aborted.find((a) => a.id === call.id));
    expect(seen.reason).toMatchObject({ code: 'timeout' });
  });
});
