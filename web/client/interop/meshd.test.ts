// The TypeScript client calls an agent behind the real agent-meshd, whose local agent is
// scripts/echo_server.py: the request body reaches the local agent with `capability` inserted, SSE
// streams become chunks, and a cancel closes the local HTTP connection (the echo server logs it).
import { beforeAll, describe, expect, test } from 'vitest';

import { MeshError } from '../src/errors.js';
import type { JsonValue } from '../src/ijson.js';
import type { MeshClient } from '../src/mesh.js';
import { type Agent, missingBinaries, useMesh, waitFor } from './harness.js';

const skip = missingBinaries(['server', 'meshctl', 'meshd']);

describe.skipIf(skip !== undefined)('TypeScript client → agent-meshd + echo_server.py', () => {
  const mesh = useMesh();
  let alice: Agent;
  let bob: Agent;
  let carol: Agent;
  let echo: { url: string; events: () => string[] };
  let client: MeshClient;
  let carolClient: MeshClient;

  beforeAll(async () => {
    ({ alice, bob, carol } = await mesh.startWithAgents({ alice: ['chat'], bob: ['echo'], carol: ['chat'] }));
    echo = await mesh.startEcho('bob');
    await mesh.startMeshd(bob, echo.url, [alice]);
    client = mesh.client(alice, { defaultTimeoutMs: 10_000 });
    carolClient = mesh.client(carol, { defaultTimeoutMs: 10_000 });
    await mesh.online();
  }, 30_000);

  test('the seed walkthrough’s request, answered by the echo agent', async () => {
    const body = await client.request(bob.identity.agentId, 'echo', { message: 'hello from alice' });
    expect(body).toEqual({ agent: 'bob', echo: { capability: 'echo', message: 'hello from alice' } });
    expect(echo.events().some((line) => line.startsWith('request ') && line.includes(alice.identity.agentId))).toBe(true);
  });

  test('an SSE stream from the local agent becomes chunks', async () => {
    const chunks: JsonValue[] = [];
    for await (const chunk of client.stream(bob.identity.agentId, 'echo', { stream: 4 })) chunks.push(chunk);
    expect(chunks).toEqual([0, 1, 2, 3].map((seq) => ({ seq, agent: 'bob' })));
  });

  test('cancel reaches the local agent as a closed HTTP connection', async () => {
    const before = echo.events().length;
    const controller = new AbortController();
    const pending = client.request(bob.identity.agentId, 'echo', { sleep_ms: 8000 }, { signal: controller.signal }).catch((e) => e);
    const requestLine = await waitFor('the echo agent got the request', () =>
      echo.events().slice(before).find((line) => line.startsWith('request ')),
    );
    const id = requestLine.split(' ')[1]!;
    controller.abort();
    const error = await pending;
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).code).toBe('cancelled');
    await waitFor('the echo agent saw the cancellation', () => echo.events().includes(`cancelled ${id}`));
  });

  test('meshd’s ACL file: a caller without a rule is refused with acl_denied', async () => {
    const error = await carolClient.request(bob.identity.agentId, 'echo', {}).catch((e) => e);
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).code).toBe('acl_denied');
  });
});
