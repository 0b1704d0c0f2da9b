// The MCP Inspector CLI lists and calls the adapter's tools over stdio and Streamable HTTP, and
// README.md's .mcp.json examples (the JSON blocks after `<!-- mcp.json: stdio -->` and
// `<!-- mcp.json: http -->`) work as written with the SDK Client and the Inspector, with only the port
// 8090 and the `<token>` placeholder substituted (plus MESH_HOME/MESH_CP_URL/PATH for the test's mesh).

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { okBody } from './adapter_suite.mjs';
import { connectHttp, connectStdio, inspector, startHttpAdapter } from './mcp_helpers.mjs';
import { BIN_DIRS, binary, REPO, startMesh, toolName } from './mesh_fixture.mjs';

const SETUP_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 60_000;
const T = { timeout: TEST_TIMEOUT_MS };

// The first fenced code block after the marker line, parsed as JSON.
export function readmeBlock(marker) {
  const lines = readFileSync(path.join(REPO, 'README.md'), 'utf8').split('\n');
  const at = lines.findIndex((line) => line.trim() === marker);
  assert.notEqual(at, -1, `README.md has no line ${marker}`);
  const open = lines.findIndex((line, index) => index > at && /^\s*```/.test(line));
  assert.notEqual(open, -1, `no code block after ${marker}`);
  assert.ok(lines.slice(at + 1, open).every((line) => line.trim() === ''), `the code block must follow ${marker} directly`);
  const close = lines.findIndex((line, index) => index > open && /^\s*```\s*$/.test(line));
  assert.notEqual(close, -1, `unterminated code block after ${marker}`);
  const text = lines.slice(open + 1, close).join('\n');
  try {
    return JSON.parse(text);
  } catch (error) {
    assert.fail(`the block after ${marker} is not JSON (${error.message}):\n${text}`);
  }
}

const inspectorResult = (result, what) => {
  assert.equal(result.code, 0, `${what}: inspector exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr.slice(-3000)}`);
  assert.ok(result.json?.result, `${what}: no result in ${result.stdout}`);
  return result.json.result;
};

describe('MCP Inspector CLI and README .mcp.json', () => {
  let mesh;
  let adapter;
  let alice;
  let bob;
  before(async () => {
    mesh = await startMesh({ aliceMeshd: false });
    ({ alice, bob } = mesh.agents);
    adapter = await startHttpAdapter(mesh, alice.home);
  }, { timeout: SETUP_TIMEOUT_MS });
  after(async () => { await mesh?.close(); });

  const stdioTarget = () => ['-e', `MESH_HOME=${alice.home}`, '-e', `MESH_CP_URL=${mesh.cpUrl}`, '-e', `HOME=${mesh.home}`];

  test('inspector over stdio: tools/list and tools/call', T, async () => {
    const listed = inspectorResult(await inspector(mesh,
      [...stdioTarget(), '--method', 'tools/list', '--', binary('agent-meshctl'), 'mcp-server', '--stdio']), 'stdio tools/list');
    const names = listed.tools.map((tool) => tool.name);
    for (const name of ['mesh__search', 'mesh__call', toolName(bob, 'echo')]) {
      assert.ok(names.includes(name), `${name} missing from ${JSON.stringify(names)}`);
    }
    const called = inspectorResult(await inspector(mesh,
      [...stdioTarget(), '--method', 'tools/call', '--tool-name', 'mesh__call',
       '--tool-args-json', JSON.stringify({ agent_id: bob.id, capability: 'echo', payload: { message: 'from the inspector' } }),
       '--', binary('agent-meshctl'), 'mcp-server', '--stdio']), 'stdio tools/call');
    assert.deepEqual(okBody(called, 'inspector stdio mesh__call'),
                     { agent: 'bob', echo: { capability: 'echo', message: 'from the inspector' } });
  });

  test('inspector over Streamable HTTP: tools/list and tools/call mesh__search', T, async () => {
    const target = [adapter.url, '--transport', 'http', '--header', `Authorization: Bearer ${mesh.token}`];
    const listed = inspectorResult(await inspector(mesh, [...target, '--method', 'tools/list']), 'http tools/list');
    const names = listed.tools.map((tool) => tool.name);
    assert.ok(names.includes(toolName(bob, 'echo')) && names.includes('mesh__search'), JSON.stringify(names));
    const searched = inspectorResult(await inspector(mesh, [...target, '--method', 'tools/call', '--tool-name', 'mesh__search',
      '--tool-args-json', JSON.stringify({ capability: 'echo' })]), 'http mesh__search');
    const ids = okBody(searched, 'inspector http mesh__search').agents.map((agent) => agent.agent_id);
    assert.ok(ids.includes(bob.id), JSON.stringify(ids));
    const echoed = inspectorResult(await inspector(mesh, [...target, '--method', 'tools/call', '--tool-name', toolName(bob, 'echo'),
      '--tool-args-json', JSON.stringify({ message: 'inspector over http' })]), 'http per-agent tool');
    assert.deepEqual(okBody(echoed, 'inspector http per-agent tool'),
                     { agent: 'bob', echo: { capability: 'echo', message: 'inspector over http' } });
  });

  test('inspector without the token → fails (401)', T, async () => {
    const result = await inspector(mesh, [adapter.url, '--transport', 'http', '--method', 'tools/list', '--stored-auth-only']);
    assert.notEqual(result.code, 0, `listed without a token: ${result.stdout}`);
  });

  // README's stdio block with the test's mesh: PATH finds the binary under test, MESH_HOME/MESH_CP_URL
  // name the test's configuration (a user's would be ~/.mesh).
  const readmeStdio = () => {
    const config = readmeBlock('<!-- mcp.json: stdio -->');
    const server = config?.mcpServers?.['agent-mesh'];
    assert.ok(server, `mcpServers.agent-mesh missing: ${JSON.stringify(config)}`);
    assert.equal(server.command, 'agent-meshctl');
    assert.deepEqual(server.args, ['mcp-server', '--stdio']);
    const env = { ...(server.env ?? {}), MESH_HOME: alice.home, MESH_CP_URL: mesh.cpUrl, HOME: mesh.home,
                  PATH: [...BIN_DIRS, process.env.PATH].join(':') };
    return { config, server, env };
  };

  const readmeHttp = () => {
    const config = readmeBlock('<!-- mcp.json: http -->');
    const server = config?.mcpServers?.['agent-mesh'];
    assert.ok(server, `mcpServers.agent-mesh missing: ${JSON.stringify(config)}`);
    assert.equal(server.type, 'http');
    assert.equal(server.url, 'http://127.0.0.1:8090/mcp', 'the default listen address');
    assert.equal(server.headers?.Authorization, 'Bearer <token>');
    const url = server.url.replace(':8090/', `:${adapter.port}/`);
    const headers = Object.fromEntries(Object.entries(server.headers).map(([key, value]) => [key, value.replace('<token>', mesh.token)]));
    return { config, server: { ...server, url, headers } };
  };

  test('README stdio .mcp.json works with the SDK Client', T, async () => {
    const { server, env } = readmeStdio();
    const session = await connectStdio({ command: server.command, commandArgs: server.args, env });
    try {
      const { tools } = await session.client.listTools();
      assert.ok(tools.some((tool) => tool.name === toolName(bob, 'echo')), JSON.stringify(tools.map((tool) => tool.name)));
    } finally {
      await session.client.close();
    }
  });

  test('README stdio .mcp.json works with the Inspector CLI (--config)', T, async () => {
    const { config, env } = readmeStdio();
    const file = path.join(mesh.dir, 'readme-stdio.mcp.json');
    config.mcpServers['agent-mesh'].env = env;
    writeFileSync(file, JSON.stringify(config));
    const listed = inspectorResult(await inspector(mesh, ['--config', file, '--server', 'agent-mesh', '--method', 'tools/list']),
                                   'README stdio tools/list');
    assert.ok(listed.tools.some((tool) => tool.name === 'mesh__call'), JSON.stringify(listed));
  });

  test('README http .mcp.json works with the SDK Client', T, async () => {
    const { server } = readmeHttp();
    const session = await connectHttp(server.url, '', { headers: server.headers });
    try {
      const result = await session.client.callTool({ name: 'mesh__call',
        arguments: { agent_id: bob.id, capability: 'echo', payload: { message: 'readme' } } });
      assert.deepEqual(okBody(result, 'README http mesh__call'), { agent: 'bob', echo: { capability: 'echo', message: 'readme' } });
    } finally {
      await session.client.close();
    }
  });

  test('README http .mcp.json works with the Inspector CLI (--config)', T, async () => {
    const { config, server } = readmeHttp();
    config.mcpServers['agent-mesh'] = server;
    const file = path.join(mesh.dir, 'readme-http.mcp.json');
    writeFileSync(file, JSON.stringify(config));
    const listed = inspectorResult(await inspector(mesh, ['--config', file, '--server', 'agent-mesh', '--method', 'tools/list']),
                                   'README http tools/list');
    assert.ok(listed.tools.some((tool) => tool.name === toolName(bob, 'echo')), JSON.stringify(listed));
  });
});
