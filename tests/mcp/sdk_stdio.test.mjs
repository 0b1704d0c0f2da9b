// `agent-meshctl mcp-server --stdio` with the official SDK Client (StdioClientTransport) and raw
// newline-delimited JSON-RPC (cli-mcp-web.md "MCP adapter"). The adapter runs as alice with no meshd of
// her own, so its calls are daemonless (sdk_http.test.mjs covers the path through meshd).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';

import { assertProgressBeforeResponse, defineToolTests } from './adapter_suite.mjs';
import { CALL_TIMEOUT_MS, connectStdio, initializeRequest, RawStdio, stdioEnv } from './mcp_helpers.mjs';
import { Mesh, READY_TIMEOUT_MS, startMesh } from './mesh_fixture.mjs';
import { defineReceiveTests, RECEIVE_ARGS, startReceiver } from './receive_suite.mjs';

const SETUP_TIMEOUT_MS = 60_000;
const RAW_TIMEOUT_MS = 15_000;

describe('stdio without any configuration', () => {
  let mesh;   // only for its temp dir: no server runs
  before(() => { mesh = new Mesh(); });
  after(async () => { await mesh?.close(); });

  const emptyHome = () => {
    const home = path.join(mesh.dir, 'empty-home');
    mkdirSync(home, { recursive: true });
    return home;
  };

  test('initialize and tools/list (the fixed tools) work with an empty MESH_HOME', { timeout: RAW_TIMEOUT_MS }, async () => {
    // No MESH_CP_URL either: nothing configured at all.
    const { client, stderr } = await connectStdio({ home: emptyHome(), env: { HOME: mesh.home, MESH_HOME: emptyHome() } });
    try {
      assert.equal(client.getServerCapabilities()?.tools?.listChanged, true);
      const { tools } = await client.listTools();
      const names = tools.map((tool) => tool.name);
      assert.ok(names.includes('mesh__search') && names.includes('mesh__call'), `${JSON.stringify(names)}\n${stderr()}`);
      assert.ok(names.every((name) => name.startsWith('mesh__')), `only fixed tools without config: ${JSON.stringify(names)}`);
    } finally {
      await client.close();
    }
  });

  test('protocolVersion: the client\'s when supported, else 2025-11-25', { timeout: RAW_TIMEOUT_MS }, async () => {
    const cases = [['2025-11-25', '2025-11-25'], ['2025-06-18', '2025-06-18'], ['2025-03-26', '2025-03-26'],
                   ['2024-11-05', '2025-11-25'], ['1999-01-01', '2025-11-25']];
    for (const [asked, answered] of cases) {
      const raw = new RawStdio({ ...getDefaultEnvironment(), HOME: mesh.home, MESH_HOME: emptyHome() });
      try {
        raw.send(initializeRequest(1, asked));
        const reply = await raw.next(`initialize ${asked}`, (message) => message.id === 1);
        assert.equal(reply.jsonrpc, '2.0');
        assert.equal(reply.result?.protocolVersion, answered, `asked ${asked}: ${JSON.stringify(reply)}`);
        assert.ok(reply.result?.serverInfo?.name, JSON.stringify(reply));
        assert.equal(reply.result?.capabilities?.tools?.listChanged, true, JSON.stringify(reply));
      } finally {
        await raw.close();
      }
    }
  });

  test('JSON-RPC errors over stdio: -32700, -32600, -32601, -32602; stdout carries only JSON-RPC', { timeout: RAW_TIMEOUT_MS }, async () => {
    const raw = new RawStdio({ ...getDefaultEnvironment(), HOME: mesh.home, MESH_HOME: emptyHome() });
    try {
      raw.send(initializeRequest(1));
      await raw.next('initialize', (message) => message.id === 1);
      raw.send({ jsonrpc: '2.0', method: 'notifications/initialized' });

      raw.send('{"jsonrpc": "2.0", "id": 2, "method": "ping"');   // cut short
      const parse = await raw.next('the parse error', (message) => message.error?.code === -32700);
      assert.equal(parse.id, null, `a parse error has id null: ${JSON.stringify(parse)}`);

      raw.send({ jsonrpc: '2.0', id: 3 });   // no method
      assert.equal((await raw.next('id 3', (message) => message.id === 3)).error?.code, -32600);
      raw.send({ id: 4, method: 'ping' });   // no jsonrpc
      assert.equal((await raw.next('id 4', (message) => message.id === 4)).error?.code, -32600);
      raw.send({ jsonrpc: '2.0', id: 5, method: 'no/such/method' });
      assert.equal((await raw.next('id 5', (message) => message.id === 5)).error?.code, -32601);
      raw.send({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'no_such__tool', arguments: {} } });
      assert.equal((await raw.next('id 6', (message) => message.id === 6)).error?.code, -32602);
      raw.send({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { arguments: {} } });   // no name
      assert.equal((await raw.next('id 7', (message) => message.id === 7)).error?.code, -32602);
      raw.send({ jsonrpc: '2.0', id: 8, method: 'ping' });
      assert.deepEqual((await raw.next('id 8', (message) => message.id === 8)).result, {});
      for (const message of raw.messages()) assert.equal(message.jsonrpc, '2.0', JSON.stringify(message));
    } finally {
      await raw.close();
    }
  });
});

describe('stdio through the mesh (SDK Client, daemonless)', () => {
  let mesh;
  let session;
  before(async () => {
    mesh = await startMesh({ aliceMeshd: false });
    session = await connectStdio({ mesh, home: mesh.agents.alice.home });
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => {
    await session?.client.close().catch(() => {});
    await mesh?.close();
  });

  defineToolTests({ label: 'stdio', mesh: () => mesh, client: () => session.client, errors: () => session.errors });

  test('stdio: progress precedes the response on the wire (raw stdio, string progressToken)', { timeout: RAW_TIMEOUT_MS }, async () => {
    const { alice, bob } = mesh.agents;
    const raw = new RawStdio({ ...getDefaultEnvironment(), ...stdioEnv(mesh, alice.home) });
    try {
      raw.send(initializeRequest(1));
      await raw.next('initialize', (message) => message.id === 1);
      raw.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      raw.send({ jsonrpc: '2.0', id: 'call-1', method: 'tools/call',
                 params: { name: 'mesh__call', _meta: { progressToken: 'progress-1' },
                           arguments: { agent_id: bob.id, capability: 'echo', payload: { stream: 3 }, stream: true } } });
      await raw.next('the streamed call\'s response', (message) => message.id === 'call-1', CALL_TIMEOUT_MS);
      assertProgressBeforeResponse(raw.messages(), 'call-1', 'progress-1', 3, 'raw stdio');
    } finally {
      await raw.close();
    }
  });

  // The SDK's own late-progress report (see the streamed call test) is not a transport error.
  test('stdio: stdout carried nothing but JSON-RPC (no transport errors in the SDK client)', () => {
    const errors = session.errors.map(String).filter((error) => !/progress notification for an unknown token/.test(error));
    assert.deepEqual(errors, [], session.stderr());
  });
});

describe('stdio receive mode (receive URL on stderr)', () => {
  let mesh;
  let session;
  let rita;
  before(async () => {
    mesh = new Mesh();
    await mesh.startServer();
    const bob = await mesh.register('bob', { capabilities: ['chat'] });
    ({ rita } = await startReceiver(mesh, async (agent) => {
      session = await connectStdio({ mesh, home: agent.home, args: RECEIVE_ARGS });
      const match = await waitForStderr(session, /receive (http:\/\/127\.0\.0\.1:\d+)/);
      return { receiveUrl: match[1] };
    }));
    assert.ok(bob);
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => {
    await session?.client.close().catch(() => {});
    await mesh?.close();
  });

  defineReceiveTests({ label: 'stdio', mesh: () => mesh, client: () => session.client, rita: () => rita });

  test('stdio receive mode: the receive URL went to stderr, stdout carried only JSON-RPC', () => {
    assert.deepEqual(session.errors.map(String), [], session.stderr());
  });
});

async function waitForStderr(session, pattern) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const match = pattern.exec(session.stderr());
    if (match) return match;
    if (Date.now() > deadline) throw new Error(`no ${pattern} on the adapter's stderr within ${READY_TIMEOUT_MS} ms: ${session.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
