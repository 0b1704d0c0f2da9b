// The tool tests both transports run with the SDK Client (sdk_stdio.test.mjs, sdk_http.test.mjs):
// cli-mcp-web.md "MCP adapter" through a real relay, registry and meshds (mesh_fixture.mjs).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ECHO_CAPABILITY, toolName, waitFor } from './mesh_fixture.mjs';
import { CALL_TIMEOUT_MS } from './mcp_helpers.mjs';

export const TEST_TIMEOUT_MS = 30_000;       // one test
export const MESH_TIMEOUT_S = 1;             // timeout_s of the call that must time out
export const SLEEP_PAST_TIMEOUT_MS = 4_000;  // the echo agent's sleep for it
export const CANCEL_SLEEP_MS = 8_000;        // the echo agent's sleep in the cancellation test
export const CANCEL_SEEN_MS = 6_000;         // `cancelled <id>` in the echo agent's log after the abort
export const REQUEST_SEEN_MS = 10_000;       // the request reaching the echo agent
export const UNREACHABLE_TIMEOUT_S = 3;      // timeout_s of the call to the offline agent

const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;   // MCP tool name characters

// The body of a successful tools/call: content is text JSON equal to structuredContent.
export function okBody(result, what) {
  assert.notEqual(result.isError, true, `${what}: isError ${JSON.stringify(result)}`);
  assert.ok(Array.isArray(result.content) && result.content.length >= 1, `${what}: content ${JSON.stringify(result)}`);
  assert.equal(result.content[0].type, 'text', `${what}: content[0].type`);
  const text = JSON.parse(result.content[0].text);
  assert.ok(result.structuredContent && typeof result.structuredContent === 'object', `${what}: structuredContent ${JSON.stringify(result)}`);
  const expected = text !== null && typeof text === 'object' && !Array.isArray(text) ? text : { result: text };
  assert.deepEqual(result.structuredContent, expected, `${what}: structuredContent is the body (or {"result": body})`);
  return result.structuredContent;
}

// A mesh error result: isError and structuredContent {"error": {code, message}}.
export function meshError(result, code, what) {
  assert.equal(result.isError, true, `${what}: expected isError, got ${JSON.stringify(result)}`);
  const error = result.structuredContent?.error;
  assert.ok(error, `${what}: structuredContent.error missing in ${JSON.stringify(result)}`);
  assert.equal(error.code, code, `${what}: error ${JSON.stringify(error)}`);
  assert.equal(typeof error.message, 'string', `${what}: error.message`);
  assert.ok(error.message.length > 0, `${what}: empty error.message`);
  assert.ok(Array.isArray(result.content) && result.content.length >= 1 && result.content[0].type === 'text',
            `${what}: content ${JSON.stringify(result.content)}`);
}

// The messages of one streamed call as they came on the wire (stdio lines or SSE events): at least
// `chunks` notifications/progress for `token`, progress increasing, all before the response `id`.
export function assertProgressBeforeResponse(messages, id, token, chunks, what) {
  const at = messages.findIndex((message) => message.id === id && ('result' in message || 'error' in message));
  assert.notEqual(at, -1, `${what}: no response in ${JSON.stringify(messages)}`);
  const mine = (message) => message.method === 'notifications/progress' && message.params?.progressToken === token;
  const before = messages.slice(0, at).filter(mine);
  const after = messages.slice(at + 1).filter(mine);
  assert.deepEqual(after, [], `${what}: progress after the response`);
  assert.ok(before.length >= chunks, `${what}: ${before.length} progress notifications before the response: ${JSON.stringify(messages)}`);
  for (let i = 1; i < before.length; i += 1) {
    assert.ok(before[i].params.progress > before[i - 1].params.progress, `${what}: progress must increase`);
  }
  assert.notEqual(messages[at].result?.isError, true, `${what}: ${JSON.stringify(messages[at])}`);
  return messages[at];
}

const callTool = (client, name, args, options = {}) =>
  client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS, ...options });

// ctx: {mesh(), client(), label}. The mesh is startMesh()'s; the client's adapter runs as alice.
export function defineToolTests(ctx) {
  const T = { timeout: TEST_TIMEOUT_MS };
  const agents = () => ctx.mesh().agents;

  test(`${ctx.label}: initialize advertises tools.listChanged, ping answers`, T, async () => {
    const client = ctx.client();
    const capabilities = client.getServerCapabilities();
    assert.equal(capabilities?.tools?.listChanged, true, `capabilities ${JSON.stringify(capabilities)}`);
    assert.ok(client.getServerVersion()?.name, 'serverInfo.name');
    assert.deepEqual(await client.ping(), {});
  });

  test(`${ctx.label}: tools/list has the fixed tools and one tool per online agent and capability`, T, async () => {
    const { bob, carol, dave } = agents();
    const { tools } = await ctx.client().listTools();
    const byName = new Map(tools.map((tool) => [tool.name, tool]));
    const names = [...byName.keys()];
    for (const name of ['mesh__search', 'mesh__call', toolName(bob, 'echo'), toolName(bob, 'count'), toolName(carol, 'echo')]) {
      assert.ok(byName.has(name), `${name} missing from ${JSON.stringify(names)}`);
    }
    assert.ok(!byName.has(toolName(dave, 'echo')), `offline dave's tool ${toolName(dave, 'echo')} listed`);
    for (const tool of tools) {
      assert.match(tool.name, TOOL_NAME);
      assert.equal(tool.outputSchema, undefined, `${tool.name} has an outputSchema`);
      assert.equal(tool.inputSchema?.type, 'object', `${tool.name} inputSchema ${JSON.stringify(tool.inputSchema)}`);
    }
    const echo = byName.get(toolName(bob, 'echo'));
    // "description from the card": the capability's description, possibly with context around it.
    assert.ok(echo.description?.includes(ECHO_CAPABILITY.description), `description ${JSON.stringify(echo.description)}`);
    assert.deepEqual(echo.inputSchema, ECHO_CAPABILITY.input_schema);
    assert.deepEqual(byName.get(toolName(bob, 'count')).inputSchema, { type: 'object' });

    const call = byName.get('mesh__call').inputSchema;
    assert.equal(call.properties?.agent_id?.type, 'string', JSON.stringify(call));
    assert.equal(call.properties?.capability?.type, 'string', JSON.stringify(call));
    assert.equal(call.properties?.payload?.type, 'object', JSON.stringify(call));
    for (const required of ['agent_id', 'capability']) {
      assert.ok(call.required?.includes(required), `mesh__call requires ${required}: ${JSON.stringify(call)}`);
    }
    const search = byName.get('mesh__search').inputSchema;
    assert.equal(search.properties?.query?.type, 'string', JSON.stringify(search));
    assert.equal(search.properties?.capability?.type, 'string', JSON.stringify(search));
    assert.equal(search.properties?.online?.type, 'boolean', JSON.stringify(search));
    assert.ok(!search.required || search.required.length === 0, `mesh__search requires nothing: ${JSON.stringify(search)}`);
  });

  test(`${ctx.label}: the per-agent tool calls bob's echo through the relay and meshd`, T, async () => {
    const { alice, bob } = agents();
    const result = await callTool(ctx.client(), toolName(bob, 'echo'), { message: 'hello over mcp' });
    const body = okBody(result, 'per-agent echo');
    assert.deepEqual(body, { agent: 'bob', echo: { capability: 'echo', message: 'hello over mcp' } });
    // The echo agent saw alice's verified ID (X-Mesh-From) and the capability.
    assert.ok(bob.echo.events().some((line) => line.endsWith(` ${alice.id} echo`)), bob.echo.events().join('\n'));
  });

  test(`${ctx.label}: mesh__call reaches any capability of an agent`, T, async () => {
    const { bob } = agents();
    const result = await callTool(ctx.client(), 'mesh__call',
      { agent_id: bob.id, capability: 'count', payload: { message: 'counted', n: 3 } });
    assert.deepEqual(okBody(result, 'mesh__call count'),
      { agent: 'bob', echo: { capability: 'count', message: 'counted', n: 3 } });
  });

  test(`${ctx.label}: mesh__search by capability, online and query`, T, async () => {
    const { bob, carol, dave } = agents();
    const client = ctx.client();

    const byCapability = okBody(await callTool(client, 'mesh__search', { capability: 'echo' }), 'search capability');
    assert.ok(Array.isArray(byCapability.agents), JSON.stringify(byCapability));
    const ids = byCapability.agents.map((agent) => agent.agent_id);
    assert.ok(ids.includes(bob.id) && ids.includes(carol.id), `search echo: ${JSON.stringify(ids)}`);
    const card = byCapability.agents.find((agent) => agent.agent_id === bob.id);
    assert.equal(card.name, 'bob');
    assert.equal(card.description, 'Bob the echo agent');
    assert.equal(card.online, true);
    const echo = card.capabilities.find((capability) => capability.name === 'echo');
    assert.ok(echo, JSON.stringify(card));
    assert.equal(echo.description, ECHO_CAPABILITY.description);
    assert.deepEqual(echo.input_schema, ECHO_CAPABILITY.input_schema);
    for (const agent of byCapability.agents) {
      for (const key of ['agent_id', 'name', 'online', 'capabilities']) {
        assert.ok(key in agent, `${key} missing in ${JSON.stringify(agent)}`);
      }
      assert.ok(agent.capabilities.some((capability) => capability.name === 'echo'), `not an echo agent: ${JSON.stringify(agent)}`);
    }

    const online = okBody(await callTool(client, 'mesh__search', { capability: 'echo', online: true }), 'search online');
    const onlineIds = online.agents.map((agent) => agent.agent_id);
    assert.ok(onlineIds.includes(bob.id), JSON.stringify(onlineIds));
    assert.ok(!onlineIds.includes(dave.id), `offline dave in online search: ${JSON.stringify(onlineIds)}`);
    assert.ok(online.agents.every((agent) => agent.online === true), JSON.stringify(online.agents));

    const byQuery = okBody(await callTool(client, 'mesh__search', { query: 'bob' }), 'search query');
    const queryIds = byQuery.agents.map((agent) => agent.agent_id);
    assert.equal(queryIds[0], bob.id, `query bob ranks bob first: ${JSON.stringify(byQuery.agents.map((a) => a.name))}`);
    assert.ok(!queryIds.includes(carol.id), `query bob found carol: ${JSON.stringify(byQuery.agents.map((a) => a.name))}`);
  });

  test(`${ctx.label}: an agent without an ACL rule → isError acl_denied`, T, async () => {
    const { carol } = agents();
    meshError(await callTool(ctx.client(), 'mesh__call', { agent_id: carol.id, capability: 'echo', payload: {} }),
              'acl_denied', 'mesh__call carol');
    meshError(await callTool(ctx.client(), toolName(carol, 'echo'), { message: 'denied' }), 'acl_denied', 'carol per-agent tool');
  });

  test(`${ctx.label}: a reply slower than timeout_s → isError timeout`, T, async () => {
    const { bob } = agents();
    const started = Date.now();
    const result = await callTool(ctx.client(), 'mesh__call',
      { agent_id: bob.id, capability: 'echo', payload: { sleep_ms: SLEEP_PAST_TIMEOUT_MS }, timeout_s: MESH_TIMEOUT_S });
    const elapsed = Date.now() - started;
    meshError(result, 'timeout', `mesh__call sleep_ms ${SLEEP_PAST_TIMEOUT_MS} timeout_s ${MESH_TIMEOUT_S}`);
    assert.ok(elapsed < SLEEP_PAST_TIMEOUT_MS - 500, `timeout_s ${MESH_TIMEOUT_S} took ${elapsed} ms`);
  });

  test(`${ctx.label}: a registered agent with no meshd → isError unreachable`, T, async () => {
    const { dave } = agents();
    meshError(await callTool(ctx.client(), 'mesh__call',
      { agent_id: dave.id, capability: 'echo', payload: {}, timeout_s: UNREACHABLE_TIMEOUT_S }), 'unreachable', 'mesh__call offline dave');
  });

  test(`${ctx.label}: an unknown tool → JSON-RPC -32602`, T, async () => {
    await assert.rejects(callTool(ctx.client(), 'no_such__tool', {}), (error) => {
      assert.equal(error.code, -32602, `${error.code} ${error.message}`);
      return true;
    });
  });

  test(`${ctx.label}: a streamed call sends notifications/progress per chunk`, T, async () => {
    const { bob } = agents();
    const progress = [];
    const errorsBefore = ctx.errors().length;
    const result = await callTool(ctx.client(), 'mesh__call',
      { agent_id: bob.id, capability: 'echo', payload: { stream: 3 }, stream: true },
      { onprogress: (notification) => progress.push(notification) });
    // The SDK Client handles a response at once but a notification a microtask later: progress that
    // arrives in the same read as the response is reported as "unknown token" instead (the order on
    // the wire is checked by the raw test `progress precedes the response`).
    await new Promise((resolve) => setImmediate(resolve));
    const late = ctx.errors().slice(errorsBefore).filter((error) => /progress notification for an unknown token/.test(String(error)));
    // The chunks as a JSON array in the text content, structuredContent {"chunks": [...]}.
    const chunks = [0, 1, 2].map((seq) => ({ seq, agent: 'bob' }));
    assert.notEqual(result.isError, true, JSON.stringify(result));
    assert.deepEqual(result.structuredContent, { chunks }, JSON.stringify(result));
    assert.equal(result.content?.[0]?.type, 'text', JSON.stringify(result));
    const text = JSON.parse(result.content[0].text);
    assert.deepEqual(Array.isArray(text) ? text : text.chunks, chunks, `text content ${result.content[0].text}`);
    assert.ok(progress.length + late.length >= 3,
              `progress notifications: ${JSON.stringify(progress)} and late ${late.map(String).join('\n')}`);
    for (let i = 1; i < progress.length; i += 1) {
      assert.ok(progress[i].progress > progress[i - 1].progress, `progress must increase: ${JSON.stringify(progress)}`);
    }
  });

  test(`${ctx.label}: cancelling a call (notifications/cancelled) cancels the remote handler`, T, async () => {
    const { alice, bob } = agents();
    const before = new Set(bob.echo.events());
    const abort = new AbortController();
    const call = callTool(ctx.client(), 'mesh__call',
      { agent_id: bob.id, capability: 'echo', payload: { sleep_ms: CANCEL_SLEEP_MS, message: 'cancel me' } },
      { signal: abort.signal });
    call.catch(() => {});
    const started = Date.now();
    const requestLine = await waitFor('the sleeping request at bob\'s echo agent', REQUEST_SEEN_MS,
      () => bob.echo.events().find((line) => !before.has(line) && line.startsWith('request ') && line.includes(` ${alice.id} `)));
    const requestId = requestLine.split(' ')[1];
    abort.abort('test cancels');
    await assert.rejects(call);
    await waitFor(`cancelled ${requestId} in bob's echo log`, CANCEL_SEEN_MS,
      () => bob.echo.events().includes(`cancelled ${requestId}`));
    assert.ok(Date.now() - started < CANCEL_SLEEP_MS, 'cancelled before the handler would have answered');
    // The adapter keeps serving.
    okBody(await callTool(ctx.client(), toolName(bob, 'echo'), { message: 'after cancel' }), 'call after cancel');
  });
}
