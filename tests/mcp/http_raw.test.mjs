// The adapter's Streamable HTTP front checked byte by byte with raw HTTP (node:http, so Host and Origin
// can be anything): command line exits, bearer token, Origin and Host checks, sessions, protocol
// version header, JSON-RPC errors (cli-mcp-web.md "MCP adapter").

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ACCEPT_BOTH, httpExchange, initializeRequest, rawSession, startHttpAdapter } from './mcp_helpers.mjs';
import { binary, Mesh, run } from './mesh_fixture.mjs';

const SETUP_TIMEOUT_MS = 30_000;
const TEST_TIMEOUT_MS = 20_000;
const EXIT_TIMEOUT_MS = 10_000;      // a command line error must exit at once
const ALLOWED_ORIGIN = 'https://app.example';
const T = { timeout: TEST_TIMEOUT_MS };

describe('command line', () => {
  let mesh;
  before(() => { mesh = new Mesh(); });
  after(async () => { await mesh?.close(); });

  const emptyHome = (name) => {
    const home = path.join(mesh.dir, name);
    mkdirSync(home, { recursive: true });
    return home;
  };

  test('--stdio and --listen together → exit 2', T, async () => {
    const result = await run(binary('agent-meshctl'), ['mcp-server', '--stdio', '--listen', '127.0.0.1:0'],
      { env: mesh.env({ MESH_HOME: emptyHome('both') }), stdin: '', timeoutMs: EXIT_TIMEOUT_MS });
    assert.equal(result.code, 2, JSON.stringify(result));
    assert.equal(result.stdout, '', 'nothing on stdout');
  });

  test('HTTP mode without a configured token → exit 1 saying to run login', T, async () => {
    const result = await run(binary('agent-meshctl'), ['mcp-server', '--listen', '127.0.0.1:0'],
      { env: mesh.env({ MESH_HOME: emptyHome('no-token') }), timeoutMs: EXIT_TIMEOUT_MS });
    assert.equal(result.code, 1, JSON.stringify(result));
    assert.match(result.stderr, /login/, JSON.stringify(result));
    assert.doesNotMatch(result.stdout, /^listening/m, 'it must not listen');
  });

  test('HTTP mode takes the token from MESH_TOKEN too (config precedence as the CLI)', T, async () => {
    await mesh.startServer();
    const adapter = await startHttpAdapter(mesh, emptyHome('env-token'), [], { env: { MESH_TOKEN: mesh.token } });
    const ok = await httpExchange(adapter.url, { headers: { Accept: ACCEPT_BOTH, Authorization: `Bearer ${mesh.token}` },
                                                 body: initializeRequest(1), untilMessage: (message) => message.id === 1 });
    assert.equal(ok.status, 200, ok.text);
    await adapter.proc.kill();
  });

  test('mcp-server --help works', T, async () => {
    const result = await run(binary('agent-meshctl'), ['mcp-server', '--help'],
      { env: mesh.env({ MESH_HOME: emptyHome('help') }), timeoutMs: EXIT_TIMEOUT_MS });
    assert.equal(result.code, 0, JSON.stringify(result));
    for (const flag of ['--stdio', '--listen', '--receive-port', '--receive-timeout-s', '--allow-origin']) {
      assert.ok(result.stdout.includes(flag), `--help mentions ${flag}:\n${result.stdout}`);
    }
  });
});

describe('Streamable HTTP, raw', () => {
  let mesh;
  let adapter;
  let url;
  let token;
  before(async () => {
    mesh = new Mesh();
    await mesh.startServer();
    const home = await mesh.newHome('alice');   // a token, no agent key: enough for HTTP mode
    adapter = await startHttpAdapter(mesh, home, ['--allow-origin', ALLOWED_ORIGIN]);
    url = adapter.url;
    token = mesh.token;
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => { await mesh?.close(); });

  const initialize = (headers, id = 1, version = '2025-11-25') => httpExchange(url, {
    headers: { Accept: ACCEPT_BOTH, ...headers },
    body: initializeRequest(id, version),
    untilMessage: (message) => message.id === id,
  });
  const bearer = () => ({ Authorization: `Bearer ${token}` });

  test('initialize with the token → 200, Mcp-Session-Id, tools.listChanged, the asked version', T, async () => {
    const response = await initialize(bearer());
    assert.equal(response.status, 200, response.text);
    assert.ok(response.headers['mcp-session-id'], `headers ${JSON.stringify(response.headers)}`);
    assert.match(response.headers['mcp-session-id'], /^[\x21-\x7e]+$/, 'session ID is visible ASCII');
    const reply = response.messages.find((message) => message.id === 1);
    assert.ok(reply, response.text);
    assert.equal(reply.result.protocolVersion, '2025-11-25');
    assert.equal(reply.result.capabilities?.tools?.listChanged, true, JSON.stringify(reply));
    assert.ok(reply.result.serverInfo?.name, JSON.stringify(reply));
  });

  test('protocolVersion negotiation over HTTP', T, async () => {
    for (const [asked, answered] of [['2025-06-18', '2025-06-18'], ['2025-03-26', '2025-03-26'], ['2024-11-05', '2025-11-25']]) {
      const response = await initialize(bearer(), 1, asked);
      assert.equal(response.status, 200, response.text);
      assert.equal(response.messages.find((message) => message.id === 1)?.result?.protocolVersion, answered,
                   `asked ${asked}: ${response.text}`);
    }
  });

  test('no token, a wrong token, another scheme → 401', T, async () => {
    for (const headers of [{}, { Authorization: `Bearer ${token}x` }, { Authorization: 'Bearer ' },
                           { Authorization: `Basic ${Buffer.from(`user:${token}`).toString('base64')}` },
                           { Authorization: token }]) {
      const response = await initialize(headers);
      assert.equal(response.status, 401, `${JSON.stringify(headers)} → ${response.status} ${response.text}`);
      assert.equal(response.headers['mcp-session-id'], undefined, 'no session for an unauthenticated client');
    }
  });

  test('Origin: absent, loopback or --allow-origin accepted; anything else → 403', T, async () => {
    for (const origin of [`http://127.0.0.1:${adapter.port}`, 'http://127.0.0.1:3000', 'http://localhost:5173', ALLOWED_ORIGIN]) {
      const response = await initialize({ ...bearer(), Origin: origin });
      assert.equal(response.status, 200, `Origin ${origin} → ${response.status} ${response.text}`);
    }
    for (const origin of ['http://evil.example', 'https://app.example.evil', 'http://127.0.0.1.evil.example:80', 'null',
                          'http://localhost.evil.example:5173']) {
      const response = await initialize({ ...bearer(), Origin: origin });
      assert.equal(response.status, 403, `Origin ${origin} → ${response.status} ${response.text}`);
    }
  });

  test('Host must be loopback (DNS rebinding) → 403 otherwise', T, async () => {
    for (const host of [`localhost:${adapter.port}`, `127.0.0.1:${adapter.port}`]) {
      const response = await initialize({ ...bearer(), Host: host });
      assert.equal(response.status, 200, `Host ${host} → ${response.status} ${response.text}`);
    }
    for (const host of [`evil.example:${adapter.port}`, 'evil.example', `127.0.0.1.evil.example:${adapter.port}`]) {
      const response = await initialize({ ...bearer(), Host: host });
      assert.equal(response.status, 403, `Host ${host} → ${response.status} ${response.text}`);
    }
  });

  test('sessions: missing Mcp-Session-Id → 400, unknown → 404, DELETE ends it (then 404)', T, async () => {
    const session = await rawSession(url, token);
    assert.equal(session.initialized.status, 202, `notifications/initialized → ${session.initialized.status} ${session.initialized.text}`);
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };

    const ok = await session.post(list);
    assert.equal(ok.status, 200, ok.text);
    assert.ok(Array.isArray(ok.messages.find((message) => message.id === 2)?.result?.tools), ok.text);

    const headers = session.headers();
    delete headers['Mcp-Session-Id'];
    const missing = await httpExchange(url, { headers, body: list });
    assert.equal(missing.status, 400, `no session → ${missing.status} ${missing.text}`);

    const unknown = await httpExchange(url, { headers: session.headers({ 'Mcp-Session-Id': 'no-such-session-0123456789' }), body: list });
    assert.equal(unknown.status, 404, `unknown session → ${unknown.status} ${unknown.text}`);

    const deleted = await httpExchange(url, { method: 'DELETE', headers: session.headers() });
    assert.ok(deleted.status === 200 || deleted.status === 204, `DELETE → ${deleted.status} ${deleted.text}`);
    const after = await session.post({ jsonrpc: '2.0', id: 3, method: 'tools/list' });
    assert.equal(after.status, 404, `after DELETE → ${after.status} ${after.text}`);
  });

  test('each initialize mints a new session ID', T, async () => {
    const one = await rawSession(url, token);
    const two = await rawSession(url, token);
    assert.notEqual(one.sessionId, two.sessionId, 'each initialize mints a new session ID');
  });

  test('MCP-Protocol-Version: unsupported → 400, absent → accepted (assumed 2025-03-26)', T, async () => {
    const session = await rawSession(url, token);
    const bad = await session.post({ jsonrpc: '2.0', id: 2, method: 'ping' }, { 'MCP-Protocol-Version': '1999-01-01' });
    assert.equal(bad.status, 400, `unsupported version → ${bad.status} ${bad.text}`);
    const headers = session.headers();
    delete headers['MCP-Protocol-Version'];
    const absent = await httpExchange(url, { headers, body: { jsonrpc: '2.0', id: 3, method: 'ping' },
                                             untilMessage: (message) => message.id === 3 });
    assert.equal(absent.status, 200, `no version header → ${absent.status} ${absent.text}`);
  });

  test('the session negotiated on 2025-06-18 uses that version header', T, async () => {
    const session = await rawSession(url, token, { protocolVersion: '2025-06-18' });
    assert.equal(session.protocolVersion, '2025-06-18');
    const ping = await session.post({ jsonrpc: '2.0', id: 2, method: 'ping' });
    assert.equal(ping.status, 200, ping.text);
    assert.deepEqual(ping.messages.find((message) => message.id === 2)?.result, {}, ping.text);
  });

  test('responses are application/json or text/event-stream, as Accept allows', T, async () => {
    const session = await rawSession(url, token);
    const response = await session.post({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    assert.equal(response.status, 200, response.text);
    assert.match(String(response.headers['content-type']), /^(application\/json|text\/event-stream)/);
    const names = response.messages.find((message) => message.id === 2).result.tools.map((tool) => tool.name);
    assert.ok(names.includes('mesh__search') && names.includes('mesh__call'), JSON.stringify(names));
  });

  test('a notification gets 202 Accepted and no body', T, async () => {
    const session = await rawSession(url, token);
    const response = await session.post({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 999, reason: 'test' } });
    assert.equal(response.status, 202, response.text);
    assert.equal(response.text, '');
  });

  test('GET /mcp with the session opens an SSE stream', T, async () => {
    const session = await rawSession(url, token);
    const response = await httpExchange(url, { method: 'GET', headers: session.headers({ Accept: 'text/event-stream' }), headersOnly: true });
    assert.equal(response.status, 200, JSON.stringify(response.headers));
    assert.match(String(response.headers['content-type']), /^text\/event-stream/);
    const unauthenticated = await httpExchange(url, { method: 'GET', headers: { Accept: 'text/event-stream', 'Mcp-Session-Id': session.sessionId }, headersOnly: true });
    assert.equal(unauthenticated.status, 401, 'GET needs the token too');
  });

  test('JSON-RPC errors with a session: -32700, -32600, -32601, -32602', T, async () => {
    const session = await rawSession(url, token);
    const error = async (body, code, id) => {
      const response = await session.post(body);
      assert.ok(response.status === 200 || response.status === 400, `${JSON.stringify(body)} → HTTP ${response.status} ${response.text}`);
      const message = response.messages.find((candidate) => candidate.error);
      assert.ok(message, `${typeof body === 'string' ? body : JSON.stringify(body)} → no JSON-RPC error in ${response.text}`);
      assert.equal(message.jsonrpc, '2.0');
      assert.equal(message.error.code, code, `${typeof body === 'string' ? body : JSON.stringify(body)} → ${response.text}`);
      assert.equal(typeof message.error.message, 'string');
      if (id !== undefined) assert.equal(message.id, id, response.text);
    };
    await error('{"jsonrpc": "2.0", "id": 2, "method": ', -32700, null);
    await error('not json at all', -32700, null);
    await error({ jsonrpc: '2.0', id: 3 }, -32600, 3);
    await error({ id: 4, method: 'ping' }, -32600, 4);
    await error({ jsonrpc: '1.0', id: 5, method: 'ping' }, -32600, 5);
    await error({ jsonrpc: '2.0', id: 6, method: 'no/such/method' }, -32601, 6);
    await error({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'no_such__tool', arguments: {} } }, -32602, 7);
    await error({ jsonrpc: '2.0', id: 8, method: 'tools/call', params: { arguments: {} } }, -32602, 8);
    await error({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'mesh__search', arguments: 'not an object' } }, -32602, 9);
    await error({ jsonrpc: '2.0', id: 10, method: 'tools/call', params: { name: 'mesh__call', arguments: {} } }, -32602, 10);
    await error({ jsonrpc: '2.0', id: 11, method: 'tools/call', params: { name: 'mesh__search', arguments: { online: 'yes' } } }, -32602, 11);
    await error({ jsonrpc: '2.0', id: 12, method: 'tools/list', params: 'not an object' }, -32602, 12);
  });

  test('the adapter is still running', () => {
    assert.equal(adapter.proc.exited, null, adapter.proc.describe());
  });
});
