// Receive mode (`--receive-port N`, cli-mcp-web.md): rita's meshd forwards to the adapter's receive
// server; bob calls rita with `agent-meshctl request`; the MCP client reads the message with
// mesh__get_messages and answers with mesh__reply_message. Shared by sdk_stdio and sdk_http.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { binary, waitFor } from './mesh_fixture.mjs';
import { CALL_TIMEOUT_MS } from './mcp_helpers.mjs';
import { okBody } from './adapter_suite.mjs';

export const RECEIVE_TIMEOUT_S = 2;            // --receive-timeout-s of the receiving adapter
export const CALLER_TIMEOUT_S = 15;            // the caller's own --timeout (well above it)
export const MESSAGE_SEEN_MS = 15_000;         // bob's request queued at the adapter
export const CALLER_DONE_MS = 10_000;          // the caller's exit after the reply / the receive timeout
export const RECEIVE_TEST_TIMEOUT_MS = 45_000;

export const RECEIVE_ARGS = ['--receive-port', '0', '--receive-timeout-s', String(RECEIVE_TIMEOUT_S)];

// Registers rita with a rule bob → rita; `startAdapter()` starts her adapter (returns {receiveUrl,
// ...}); then her meshd forwards to the receive URL. Returns {rita, adapter}.
export async function startReceiver(mesh, startAdapter) {
  const rita = await mesh.register('rita', { capabilities: ['chat'] });
  await mesh.aclAdd(mesh.agents.bob, rita);
  const adapter = await startAdapter(rita);
  assert.match(adapter.receiveUrl ?? '', /^http:\/\/127\.0\.0\.1:\d+$/, 'the receive URL');
  await mesh.startMeshd(rita, adapter.receiveUrl);
  await mesh.waitOnline(mesh.agents.bob.home, [rita]);
  return { rita, adapter };
}

const getMessages = async (client) => {
  const result = await client.callTool({ name: 'mesh__get_messages', arguments: {} }, undefined, { timeout: CALL_TIMEOUT_MS });
  assert.notEqual(result.isError, true, JSON.stringify(result));
  const text = JSON.parse(result.content[0].text);
  assert.ok(Array.isArray(text), `mesh__get_messages text content is a JSON array: ${result.content[0].text}`);
  assert.ok(Array.isArray(result.structuredContent?.messages), JSON.stringify(result));
  assert.equal(text.length, result.structuredContent.messages.length, 'text array and structuredContent agree');
  return result.structuredContent.messages;
};

// Starts bob's `agent-meshctl request` to rita and waits until the adapter has its message; a caller
// that fails before that (rita's meshd not yet synced) is started again. Returns {caller, message}.
async function callRita(mesh, client, rita, payload) {
  const { bob } = mesh.agents;
  let caller;
  const startCaller = () => mesh.start('agent-meshctl request (bob → rita)', binary('agent-meshctl'),
    ['request', '--target', rita.id, '--capability', 'chat', '--payload', JSON.stringify(payload),
     '--timeout', String(CALLER_TIMEOUT_S)], { env: { MESH_HOME: bob.home } });
  caller = startCaller();
  const failures = [];
  const message = await waitFor('bob\'s request in mesh__get_messages', MESSAGE_SEEN_MS, async () => {
    const messages = await getMessages(client).catch((error) => { throw Object.assign(error, { fatal: true }); });
    if (messages.length > 0) {
      assert.equal(messages.length, 1, `one pending message: ${JSON.stringify(messages)}`);
      return messages[0];
    }
    if (caller.exited) {
      failures.push(caller.describe());
      caller = startCaller();
    }
    return null;
  }, 200).catch((error) => {
    error.message += `\nearlier callers:\n${failures.join('\n')}\ncaller:\n${caller.describe()}`;
    throw error;
  });
  return { caller, message };
}

// ctx: {label, mesh(), client(), rita()}
export function defineReceiveTests(ctx) {
  const T = { timeout: RECEIVE_TEST_TIMEOUT_MS };

  test(`${ctx.label}: receive mode lists mesh__get_messages and mesh__reply_message; nothing pending`, T, async () => {
    const { tools } = await ctx.client().listTools();
    const names = tools.map((tool) => tool.name);
    for (const name of ['mesh__get_messages', 'mesh__reply_message', 'mesh__search', 'mesh__call']) {
      assert.ok(names.includes(name), `${name} missing from ${JSON.stringify(names)}`);
    }
    const reply = tools.find((tool) => tool.name === 'mesh__reply_message').inputSchema;
    assert.equal(reply.properties?.message_id?.type, 'string', JSON.stringify(reply));
    assert.ok(reply.properties?.payload, JSON.stringify(reply));
    assert.deepEqual(await getMessages(ctx.client()), []);
  });

  test(`${ctx.label}: receive round trip: get_messages, reply_message, the caller prints the reply`, T, async () => {
    const mesh = ctx.mesh();
    const rita = ctx.rita();
    const payload = { question: 'are you there?', n: 7, from: 'mallory' };   // `from` never comes from the payload
    const { caller, message } = await callRita(mesh, ctx.client(), rita, payload);
    assert.equal(typeof message.message_id, 'string');
    assert.ok(message.message_id.length > 0);
    assert.equal(message.from, mesh.agents.bob.id, 'from is bob\'s verified ID');
    assert.equal(message.capability, 'chat');
    for (const [key, value] of Object.entries(payload)) {
      assert.deepEqual(message.payload?.[key], value, `payload.${key} in ${JSON.stringify(message.payload)}`);
    }
    assert.ok(!Number.isNaN(Date.parse(message.received_at)), `received_at ${message.received_at}`);
    // Taken out of the queue.
    assert.deepEqual(await getMessages(ctx.client()), []);

    const answer = { answer: 'yes, rita here', items: [1, 2] };
    const replied = await ctx.client().callTool(
      { name: 'mesh__reply_message', arguments: { message_id: message.message_id, payload: answer } },
      undefined, { timeout: CALL_TIMEOUT_MS });
    assert.notEqual(replied.isError, true, JSON.stringify(replied));
    const done = await caller.wait(CALLER_DONE_MS);
    assert.equal(done.code, 0, caller.describe());
    assert.deepEqual(JSON.parse(done.stdout), answer);
  });

  test(`${ctx.label}: receive mode: unanswered after --receive-timeout-s → the caller gets timeout`, T, async () => {
    const mesh = ctx.mesh();
    const { caller, message } = await callRita(mesh, ctx.client(), ctx.rita(), { question: 'nobody answers' });
    const seen = Date.now();
    assert.equal(message.from, mesh.agents.bob.id);
    const done = await caller.wait(CALLER_DONE_MS);
    const elapsed = Date.now() - seen;
    assert.equal(done.code, 1, caller.describe());
    assert.match(done.stderr, /timeout/, caller.describe());
    assert.ok(elapsed < RECEIVE_TIMEOUT_S * 1000 + 4000,
              `the caller gave up after ${elapsed} ms: the adapter's ${RECEIVE_TIMEOUT_S} s receive timeout should have answered`);
    // A reply after the timeout is refused as a tool error (the message is gone), never a success.
    const late = await ctx.client().callTool(
      { name: 'mesh__reply_message', arguments: { message_id: message.message_id, payload: { late: true } } },
      undefined, { timeout: CALL_TIMEOUT_MS }).catch((error) => ({ rejected: error }));
    assert.ok(late.rejected || late.isError === true, `late reply accepted: ${JSON.stringify(late)}`);
  });
}

export { okBody };
