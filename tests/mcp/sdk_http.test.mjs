// `agent-meshctl mcp-server --listen 127.0.0.1:0` with the official SDK Client
// (StreamableHTTPClientTransport, bearer token) (cli-mcp-web.md "MCP adapter"). The adapter runs as
// alice with her meshd running, so its calls go through meshd's Local API socket.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertProgressBeforeResponse, defineToolTests } from './adapter_suite.mjs';
import { CALL_TIMEOUT_MS, connectHttp, rawSession, startHttpAdapter } from './mcp_helpers.mjs';
import { Mesh, startMesh } from './mesh_fixture.mjs';
import { defineReceiveTests, RECEIVE_ARGS, startReceiver } from './receive_suite.mjs';

const SETUP_TIMEOUT_MS = 60_000;

describe('Streamable HTTP through the mesh (SDK Client, through alice\'s meshd)', () => {
  let mesh;
  let adapter;
  let session;
  before(async () => {
    mesh = await startMesh({ aliceMeshd: true });
    adapter = await startHttpAdapter(mesh, mesh.agents.alice.home);
    session = await connectHttp(adapter.url, mesh.token);
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => {
    await session?.transport.terminateSession().catch(() => {});
    await session?.client.close().catch(() => {});
    await mesh?.close();
  });

  defineToolTests({ label: 'http', mesh: () => mesh, client: () => session.client, errors: () => session.errors });

  test('http: progress precedes the response in the SSE answer (raw HTTP, string progressToken)', { timeout: 30_000 }, async () => {
    const { bob } = mesh.agents;
    const raw = await rawSession(adapter.url, mesh.token);
    const response = await raw.post({ jsonrpc: '2.0', id: 'call-1', method: 'tools/call',
      params: { name: 'mesh__call', _meta: { progressToken: 'progress-1' },
                arguments: { agent_id: bob.id, capability: 'echo', payload: { stream: 3 }, stream: true } } },
      {}, { timeoutMs: CALL_TIMEOUT_MS });
    assert.equal(response.status, 200, response.text);
    assert.match(String(response.headers['content-type']), /^text\/event-stream/, 'a call with progress is answered as SSE');
    assertProgressBeforeResponse(response.messages, 'call-1', 'progress-1', 3, 'raw SSE');
  });

  test('http: the adapter is still running', () => {
    assert.equal(adapter.proc.exited, null, adapter.proc.describe());
  });

  // With alice's meshd answering, calls must use its socket: a daemonless connection with alice's key
  // would replace meshd's relay connection (close 4009), after which meshd stops for good.
  test('http: calls went through alice\'s meshd (it was never replaced on the relay)', () => {
    const meshd = mesh.agents.alice.meshd;
    assert.equal(meshd.exited, null, meshd.describe());
    assert.doesNotMatch(meshd.stderr, /4009|replaced|another process/i, meshd.describe());
  });
});

describe('Streamable HTTP receive mode (receive URL on stdout line 2)', () => {
  let mesh;
  let session;
  let rita;
  before(async () => {
    mesh = new Mesh();
    await mesh.startServer();
    await mesh.register('bob', { capabilities: ['chat'] });
    ({ rita } = await startReceiver(mesh, async (agent) => {
      const adapter = await startHttpAdapter(mesh, agent.home, RECEIVE_ARGS);
      session = await connectHttp(adapter.url, mesh.token);
      return adapter;
    }));
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => {
    await session?.client.close().catch(() => {});
    await mesh?.close();
  });

  defineReceiveTests({ label: 'http', mesh: () => mesh, client: () => session.client, rita: () => rita });
});
