// Two TypeScript agents through the real agent-mesh-server, with a short heartbeat: the relay
// answers the client's {"type":"ping"} keepalives (browsers cannot send WebSocket pings), the link
// stays up across several intervals, and requests, streams and cancellation work TypeScript to
// TypeScript. A MeshClient (which serves nothing) refuses requests with acl_denied, as the C++ SDK does.
import { beforeAll, describe, expect, test } from 'vitest';

import { MeshError } from '../src/errors.js';
import type { JsonValue } from '../src/ijson.js';
import type { LinkStatus, MeshAgent, MeshClient } from '../src/mesh.js';
import { type Agent, missingBinaries, useMesh, waitFor } from './harness.js';

const skip = missingBinaries(['server', 'meshctl']);

describe.skipIf(skip !== undefined)('TypeScript agent ↔ TypeScript client through agent-mesh-server', () => {
  const mesh = useMesh();
  let alice: Agent;
  let bob: Agent;
  let agent: MeshAgent;
  let client: MeshClient;
  const pongs: string[] = [];
  const statuses: LinkStatus[] = [];
  const aborted: unknown[] = [];

  beforeAll(async () => {
    ({ alice, bob } = await mesh.startWithAgents({ alice: ['chat'], bob: ['echo'] }, ['--heartbeat-ms', '500']));
    agent = mesh.agent(bob, { isAllowed: (from) => from === alice.identity.agentId });
    agent.handle('echo', (call) => ({ echo: call.body }));
    agent.handleStream('count', async function* (call) {
      for (let i = 0; i < (call.body as number); i++) yield i;
    });
    agent.handle('wait', (call) => new Promise((_, reject) => call.signal.addEventListener('abort', () => {
      aborted.push(call.signal.reason);
      reject(call.signal.reason);
    })));
    client = mesh.client(alice, {
      onStatus: (s) => statuses.push(s),
      onLog: (_level, event) => {
        if (event === 'relay.pong') pongs.push(event);
      },
    });
    await mesh.online();
  }, 30_000);

  test('requests and streams', async () => {
    expect(await client.request(bob.identity.agentId, 'echo', { hi: 1 })).toEqual({ echo: { hi: 1 } });
    const chunks: JsonValue[] = [];
    for await (const chunk of client.stream(bob.identity.agentId, 'count', 5)) chunks.push(chunk);
    expect(chunks).toEqual([0, 1, 2, 3, 4]);
  });

  test('the relay answers {"type":"ping"}; the link stays up over several heartbeats', async () => {
    await waitFor('four pongs from the real relay', () => pongs.length >= 4, 5000);
    expect(statuses.filter((s) => s.state === 'offline')).toEqual([]);
    expect(await client.request(bob.identity.agentId, 'echo', 'still here')).toEqual({ echo: 'still here' });
  });

  test('cancel, TypeScript to TypeScript', async () => {
    const controller = new AbortController();
    const pending = client.request(bob.identity.agentId, 'wait', {}, { signal: controller.signal }).catch((e: unknown) => e);
    await waitFor('the handler is waiting', () => agent['served'].size === 1);
    controller.abort();
    expect(((await pending) as MeshError).code).toBe('cancelled');
    await waitFor('the handler saw the cancel', () => aborted.length === 1);
    expect(aborted[0]).toMatchObject({ code: 'cancelled' });
  });

  test('a MeshClient refuses requests with acl_denied', async () => {
    const error = (await agent.request(alice.identity.agentId, 'anything', {}).catch((e: unknown) => e)) as MeshError;
    expect(error).toBeInstanceOf(MeshError);
    expect(error.code).toBe('acl_denied');
  });
});
