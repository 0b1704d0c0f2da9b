// MCP clients for the adapter tests: the official SDK's Client over stdio and Streamable HTTP, the
// adapter started in HTTP mode, raw HTTP and raw stdio JSON-RPC, and the MCP Inspector CLI.

import http from 'node:http';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { BIN_DIRS, binary, cleanEnv, run, sleep, waitFor } from './mesh_fixture.mjs';

export const CONNECT_TIMEOUT_MS = 15_000;   // initialize (spawn + handshake)
export const CALL_TIMEOUT_MS = 20_000;      // one tools/call the SDK waits for
export const HTTP_TIMEOUT_MS = 10_000;      // one raw HTTP exchange
export const INSPECTOR_TIMEOUT_MS = 45_000; // one Inspector CLI run (it starts a Node program)
export const RAW_REPLY_MS = 3_000;          // one answer to a raw stdio line (no mesh involved)

const here = path.dirname(fileURLToPath(import.meta.url));
export const INSPECTOR_BIN = path.join(here, 'node_modules', '.bin', 'mcp-inspector');

export const CLIENT_INFO = { name: 'agent-mesh-mcp-tests', version: '0.0.0' };

// The environment the stdio adapter gets (on top of the SDK's few inherited variables).
export function stdioEnv(mesh, home, extra = {}) {
  const env = { HOME: mesh?.home ?? home, MESH_HOME: home, ...extra };
  if (mesh?.cpUrl) env.MESH_CP_URL = mesh.cpUrl;
  return env;
}

// The SDK client over stdio: `agent-meshctl mcp-server --stdio ARGS`. Returns {client, transport,
// stderr()}; stderr is collected (the adapter's logs, and the receive URL in receive mode).
export async function connectStdio({ mesh, home, args = [], env, command, commandArgs }) {
  const transport = new StdioClientTransport({
    command: command ?? binary('agent-meshctl'),
    args: commandArgs ?? ['mcp-server', '--stdio', ...args],
    env: env ?? stdioEnv(mesh, home),
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr.setEncoding('utf8');
  transport.stderr.on('data', (chunk) => { stderr += chunk; });
  const client = new Client(CLIENT_INFO, { capabilities: {} });
  const errors = [];   // transport errors: e.g. a stdout line that is not JSON-RPC
  client.onerror = (error) => errors.push(error);
  try {
    await connectWithin(client, transport, 'initialize over stdio');
  } catch (error) {
    error.message += `\nadapter stderr:\n${stderr}`;
    await client.close().catch(() => {});
    throw error;
  }
  return { client, transport, errors, stderr: () => stderr };
}

// client.connect with a hard deadline: the SDK's own request timeout sends notifications/cancelled,
// which can hang in turn on an adapter that stopped answering; then the transport is closed.
async function connectWithin(client, transport, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS + 1000);
  });
  try {
    await Promise.race([client.connect(transport, { timeout: CONNECT_TIMEOUT_MS }), deadline]);
  } catch (error) {
    await Promise.race([transport.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1000))]);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

// `agent-meshctl mcp-server --listen 127.0.0.1:0 ARGS` as a mesh process: {proc, port, url (of /mcp),
// base, receiveUrl (with --receive-port)}.
export async function startHttpAdapter(mesh, home, args = [], { env } = {}) {
  const proc = mesh.start('agent-meshctl mcp-server', binary('agent-meshctl'),
    ['mcp-server', '--listen', '127.0.0.1:0', ...args], { env: { MESH_HOME: home, ...env } });
  const [, base, port] = await proc.line(0, /^listening (http:\/\/127\.0\.0\.1:(\d+))$/);
  const adapter = { proc, port: Number(port), base, url: `${base}/mcp` };
  if (args.includes('--receive-port')) {
    [, adapter.receiveUrl] = await proc.line(1, /^receive (http:\/\/127\.0\.0\.1:\d+)$/);
  }
  return adapter;
}

// The SDK client over Streamable HTTP with the bearer token.
export async function connectHttp(url, token, { headers = {} } = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}`, ...headers } },
  });
  const client = new Client(CLIENT_INFO, { capabilities: {} });
  const errors = [];
  client.onerror = (error) => errors.push(error);
  await connectWithin(client, transport, `initialize over HTTP at ${url}`);
  return { client, transport, errors, stderr: () => '' };
}

// One raw HTTP exchange (node:http, so Host and Origin can be anything): {status, headers, text,
// messages}; `messages` are the JSON-RPC messages of a JSON or SSE body.
// `headersOnly`: resolve at the response head (for a GET that opens an SSE stream), then close.
export function httpExchange(url, { method = 'POST', headers = {}, body, timeoutMs = HTTP_TIMEOUT_MS, untilMessage, headersOnly = false } = {}) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const request = http.request({
      host: target.hostname, port: target.port, path: target.pathname + target.search, method,
      headers: { ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
    }, (response) => {
      if (headersOnly) {
        clearTimeout(timer);
        resolve({ status: response.statusCode, headers: response.headers, text: '', messages: [] });
        request.destroy();
        return;
      }
      let text = '';
      response.setEncoding('utf8');
      const finish = () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode, headers: response.headers, text, messages: parseMessages(response.headers, text) });
      };
      response.on('data', (chunk) => {
        text += chunk;
        // An SSE stream may stay open: stop once the awaited message arrived.
        if (untilMessage && parseMessages(response.headers, text).some(untilMessage)) {
          request.destroy();
          finish();
        }
      });
      response.on('end', finish);
      response.on('error', () => finish());
    });
    const timer = setTimeout(() => {
      request.destroy(new Error(`no complete answer to ${method} ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    request.on('error', (error) => { clearTimeout(timer); reject(error); });
    if (body !== undefined) request.write(typeof body === 'string' ? body : JSON.stringify(body));
    request.end();
  });
}

export function parseMessages(headers, text) {
  const type = String(headers['content-type'] ?? '');
  const out = [];
  if (type.startsWith('text/event-stream')) {
    for (const event of text.split(/\r?\n\r?\n/)) {
      const data = event.split(/\r?\n/).filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue;
      try { out.push(JSON.parse(data)); } catch { /* partial event */ }
    }
  } else if (type.startsWith('application/json') && text.trim()) {
    try {
      const value = JSON.parse(text);
      out.push(...(Array.isArray(value) ? value : [value]));
    } catch { /* not JSON */ }
  }
  return out;
}

export const ACCEPT_BOTH = 'application/json, text/event-stream';

// A raw Streamable HTTP session: initialize + notifications/initialized; {sessionId, protocolVersion,
// headers(extra), post(body, extraHeaders)}.
export async function rawSession(url, token, { protocolVersion = '2025-11-25' } = {}) {
  const base = { Authorization: `Bearer ${token}`, Accept: ACCEPT_BOTH };
  const init = await httpExchange(url, {
    headers: base,
    body: { jsonrpc: '2.0', id: 1, method: 'initialize',
            params: { protocolVersion, capabilities: {}, clientInfo: CLIENT_INFO } },
    untilMessage: (message) => message.id === 1,
  });
  if (init.status !== 200) throw new Error(`initialize: HTTP ${init.status} ${init.text}`);
  const sessionId = init.headers['mcp-session-id'];
  if (!sessionId) throw new Error(`initialize: no Mcp-Session-Id header (headers ${JSON.stringify(init.headers)})`);
  const negotiated = init.messages.find((message) => message.id === 1)?.result?.protocolVersion;
  const headers = (extra = {}) => ({ ...base, 'Mcp-Session-Id': sessionId, 'MCP-Protocol-Version': negotiated, ...extra });
  const initialized = await httpExchange(url, { headers: headers(), body: { jsonrpc: '2.0', method: 'notifications/initialized' } });
  const post = (body, extra = {}, options = {}) => httpExchange(url, {
    headers: headers(extra), body,
    untilMessage: typeof body === 'object' && body && 'id' in body ? (message) => message.id === body.id && ('result' in message || 'error' in message) : undefined,
    ...options,
  });
  return { sessionId, protocolVersion: negotiated, init, initialized, headers, post };
}

// The adapter over raw stdio (newline-delimited JSON-RPC): send(line or object), next(predicate).
export class RawStdio {
  constructor(env, args = []) {
    this.child = spawn(binary('agent-meshctl'), ['mcp-server', '--stdio', ...args],
      { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.lines = [];
    this.stderr = '';
    this.partial = '';
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdin.on('error', () => {});
    this.child.stdout.on('data', (chunk) => {
      const parts = (this.partial + chunk).split('\n');
      this.partial = parts.pop();
      this.lines.push(...parts.filter((line) => line.trim() !== ''));
    });
    this.child.stderr.on('data', (chunk) => { this.stderr += chunk; });
    this.exited = null;
    this.child.on('exit', (code, signal) => { this.exited = { code, signal }; });
  }

  send(message) {
    this.child.stdin.write((typeof message === 'string' ? message : JSON.stringify(message)) + '\n');
  }

  // Every stdout line parsed as JSON (each must be one JSON-RPC message: stdout carries only protocol).
  messages() {
    return this.lines.map((line) => {
      try { return JSON.parse(line); } catch { throw new Error(`stdout line is not JSON: ${JSON.stringify(line)}`); }
    });
  }

  async next(what, predicate, timeoutMs = RAW_REPLY_MS) {
    let exitedAt = null;
    return waitFor(`${what} on the adapter's stdout`, timeoutMs, () => {
      const found = this.messages().find(predicate);
      if (found) return found;
      // Give the pipe a moment after an exit, then fail at once.
      if (this.exited) {
        exitedAt ??= Date.now();
        if (Date.now() - exitedAt > 500) {
          throw Object.assign(new Error(`the adapter exited (${JSON.stringify(this.exited)})`), { fatal: true });
        }
      }
      return null;
    }).catch((error) => {
      error.message += `\nstdout so far: ${this.lines.slice(-10).join('\n')}\nstderr: ${this.stderr.slice(-1000)}`;
      throw error;
    });
  }

  async close() {
    this.child.stdin.end();
    const exited = await waitFor('the stdio adapter to exit after stdin closed', 5000, () => this.exited).catch(() => null);
    try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* gone */ }
    return exited;
  }
}

export function initializeRequest(id, protocolVersion = '2025-11-25') {
  return { jsonrpc: '2.0', id, method: 'initialize',
           params: { protocolVersion, capabilities: {}, clientInfo: CLIENT_INFO } };
}

// The MCP Inspector CLI (`mcp-inspector --cli ... --format json`): {code, stdout, stderr, json}.
export async function inspector(mesh, args, { timeoutMs = INSPECTOR_TIMEOUT_MS } = {}) {
  const env = cleanEnv({
    MCP_INSPECTOR_SECRET_STORE: 'memory',
    NO_UPDATE_NOTIFIER: '1',
    PATH: [...BIN_DIRS, process.env.PATH].join(':'),
  }, mesh.home);
  const result = await run(INSPECTOR_BIN, ['--cli', '--format', 'json', ...args], { env, timeoutMs });
  try {
    result.json = JSON.parse(result.stdout.trim().split('\n').filter(Boolean).pop() ?? '');
  } catch {
    result.json = undefined;
  }
  return result;
}

// The structured result of a tools/call through the SDK, with the content/structuredContent contract
// checked: content is one text item whose JSON equals structuredContent.
export function parsedResult(result) {
  if (!Array.isArray(result.content) || result.content.length < 1) {
    throw new Error(`tools/call result without content: ${JSON.stringify(result)}`);
  }
  return result.structuredContent;
}

export { sleep, waitFor };
