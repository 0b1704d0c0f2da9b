// The interop tests' fixture (Node only): real C++ binaries on loopback port 0 — agent-mesh-server
// (registry + relay), agent-meshd with scripts/echo_server.py, and tests/interop/sdk_peer (the C++
// SDK) — and TypeScript identities registered with agent-meshctl. Nothing sleeps to synchronise:
// every wait is for a stdout line, a file line or a predicate, with a named deadline.
//
// Environment:
//   AGENT_MESH_BUILD_DIR  the CMake build directory (default ../build from web/): apps/agent-mesh-server,
//                         apps/agent-meshd, apps/agent-meshctl, tests/interop/sdk_peer
//   AGENT_MESH_REPO       the repository root (scripts/echo_server.py); default ../ from web/
//   AGENT_MESH_REQUIRE_INTEROP=1  fail instead of skipping when a binary is missing
//   AGENT_MESH_KEEP_TMP=1 keep the temporary directory
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import WebSocket from 'ws';

import { encodeBase64url } from '../src/base64url.js';
import { randomBytes } from '../src/bytes.js';
import { Identity } from '../src/identity.js';
import { MeshAgent, type MeshAgentOptions, MeshClient, type MeshClientOptions } from '../src/mesh.js';
import type { WebSocketConstructor } from '../src/relay_link.js';

export const READY_TIMEOUT_MS = 15_000;
export const EVENT_TIMEOUT_MS = 10_000;
const KILL_GRACE_MS = 3000;
const POLL_MS = 25;

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO = process.env['AGENT_MESH_REPO'] ?? path.resolve(webDir, '..');
export const BUILD_DIR = path.resolve(webDir, process.env['AGENT_MESH_BUILD_DIR'] ?? path.join('..', 'build'));
export const WS = WebSocket as unknown as WebSocketConstructor;

export const BINARIES = {
  server: path.join(BUILD_DIR, 'apps', 'agent-mesh-server'),
  meshd: path.join(BUILD_DIR, 'apps', 'agent-meshd'),
  meshctl: path.join(BUILD_DIR, 'apps', 'agent-meshctl'),
  sdkPeer: path.join(BUILD_DIR, 'tests', 'interop', 'sdk_peer'),
};

/** Why the interop suite cannot run here, or undefined. With AGENT_MESH_REQUIRE_INTEROP=1 it throws. */
export function missingBinaries(names: (keyof typeof BINARIES)[]): string | undefined {
  const missing = names.filter((name) => !existsSync(BINARIES[name])).map((name) => BINARIES[name]);
  if (missing.length === 0) return undefined;
  const why = `interop binaries missing (set AGENT_MESH_BUILD_DIR): ${missing.join(', ')}`;
  if (process.env['AGENT_MESH_REQUIRE_INTEROP'] === '1') throw new Error(why);
  console.warn(`skipping: ${why}`);
  return why;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value; throws naming `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | undefined | false | null, timeoutMs = EVENT_TIMEOUT_MS, describe?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe ? `\n${describe()}` : ''}`);
    await sleep(POLL_MS);
  }
}

// Every process group started here dies with the test process.
const live = new Set<number>();
process.on('exit', () => {
  for (const pid of live) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

/** A started process: stdout split into lines, stderr kept, exit observed. */
export class Proc {
  readonly label: string;
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  #partial = '';
  stderr = '';
  exited: { code: number | null; signal: string | null } | undefined;
  readonly exit: Promise<void>;
  /** Resolves once the process exited and its pipes closed (all output read). */
  readonly closed: Promise<void>;

  constructor(label: string, command: string, args: string[], options: { env?: NodeJS.ProcessEnv; stdin?: 'pipe' } = {}) {
    this.label = label;
    this.child = spawn(command, args, {
      cwd: REPO,
      env: options.env ?? cleanEnv(),
      detached: true,
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    });
    if (this.child.pid !== undefined) live.add(this.child.pid);
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => {
      const parts = (this.#partial + chunk).split('\n');
      this.#partial = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      if (this.stderr.length > 200_000) this.stderr = this.stderr.slice(-100_000);
    });
    this.closed = new Promise((resolve) => this.child.on('close', () => resolve()));
    this.exit = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        if (this.child.pid !== undefined) live.delete(this.child.pid);
        resolve();
      });
      this.child.on('error', (error) => {
        this.stderr += `spawn error: ${error.message}\n`;
        this.exited = { code: null, signal: null };
        resolve();
      });
    });
  }

  describe(): string {
    const tail = (text: string) => text.split('\n').slice(-25).join('\n');
    return `${this.label}: exited ${JSON.stringify(this.exited)}\n  stdout:\n${tail(this.lines.join('\n') + this.#partial)}\n  stderr:\n${tail(this.stderr)}`;
  }

  /** The first stdout line at or after `from` matching `pattern`; fails early if the process exits. */
  async line(pattern: RegExp, from = 0, timeoutMs = READY_TIMEOUT_MS): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.lines.length; i++) {
        const match = pattern.exec(this.lines[i]!);
        if (match) return match;
      }
      if (this.exited) throw new Error(`${this.label} exited before printing ${pattern}\n${this.describe()}`);
      if (Date.now() >= deadline) throw new Error(`${this.label}: no line ${pattern} within ${timeoutMs} ms\n${this.describe()}`);
      await sleep(POLL_MS);
    }
  }

  write(text: string): void {
    this.child.stdin!.write(text);
  }

  async kill(): Promise<void> {
    if (this.exited || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, 'SIGTERM');
    } catch {
      return;
    }
    const done = await Promise.race([this.exit.then(() => true), sleep(KILL_GRACE_MS).then(() => false)]);
    if (!done) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await this.exit;
    }
  }
}

/** sdk_peer: JSON events on stdout, commands on stdin (call mode). */
export class SdkPeer extends Proc {
  /** Parsed events so far. */
  events(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.lines) {
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not an event
      }
    }
    return out;
  }

  /** The first event (after `skip` matching ones) for which `predicate` holds. */
  async event(what: string, predicate: (event: Record<string, unknown>) => boolean, timeoutMs = EVENT_TIMEOUT_MS): Promise<Record<string, unknown>> {
    return waitFor(
      `${this.label} event: ${what}`,
      () => {
        if (this.exited) throw new Error(`${this.label} exited\n${this.describe()}`);
        return this.events().find(predicate);
      },
      timeoutMs,
      () => this.describe(),
    );
  }

  command(command: Record<string, unknown>): void {
    this.write(`${JSON.stringify(command)}\n`);
  }
}

/** The environment without the caller's MESH_* settings, HOME in the temporary directory. */
export function cleanEnv(extra: Record<string, string> = {}, home?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('MESH_')) env[key] = value;
  if (home !== undefined) env['HOME'] = home;
  return { ...env, ...extra };
}

export interface Agent {
  name: string;
  identity: Identity;
  keyFile: string;
  home: string;
}

/** One agent-mesh-server and what the tests start around it. */
export class Mesh {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'agent-mesh-interop-'));
  readonly procs: Proc[] = [];
  /** TypeScript clients and agents made by client()/agent(), closed first by close(). */
  readonly endpoints: MeshClient[] = [];
  cpUrl = '';
  relayUrl = '';
  token = '';

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return cleanEnv({ MESH_CP_URL: this.cpUrl, ...extra }, path.join(this.dir, 'home'));
  }

  start<T extends Proc>(proc: T): T {
    this.procs.push(proc);
    return proc;
  }

  describe(): string {
    return this.procs.map((p) => p.describe()).join('\n\n');
  }

  async startServer(extraArgs: string[] = []): Promise<void> {
    const dataDir = path.join(this.dir, 'server');
    const server = this.start(
      new Proc('agent-mesh-server', BINARIES.server, [
        '--listen',
        '127.0.0.1:0',
        '--data-dir',
        dataDir,
        '--bootstrap',
        '--ip-connect-rate',
        '1000',
        ...extraArgs,
      ]),
    );
    const [, url, port] = await server.line(/^listening (http:\/\/127\.0\.0\.1:(\d+))$/);
    this.cpUrl = url!;
    this.relayUrl = `ws://127.0.0.1:${port}/relay/ws`;
    const tokenFile = path.join(dataDir, 'bootstrap-token');
    this.token = await waitFor('the bootstrap token', () => existsSync(tokenFile) && readFileSync(tokenFile, 'utf8').trim());
  }

  /** Starts the server and registers `agents` (name → capabilities) in parallel. */
  async startWithAgents<K extends string>(agents: Record<K, string[]>, serverArgs: string[] = []): Promise<Record<K, Agent>> {
    await this.startServer(serverArgs);
    const names = Object.keys(agents) as K[];
    const registered = await Promise.all(names.map((name) => this.register(name, agents[name])));
    return Object.fromEntries(names.map((name, i) => [name, registered[i]])) as Record<K, Agent>;
  }

  /** A TypeScript MeshClient for `agent` on this relay (over `ws`); close() closes it. */
  client(agent: Agent, options: MeshClientOptions = {}): MeshClient {
    const client = new MeshClient(agent.identity, { relayUrl: this.relayUrl, WebSocket: WS, ...options });
    this.endpoints.push(client);
    return client;
  }

  /** A TypeScript MeshAgent for `agent` on this relay (over `ws`); close() closes it. */
  agent(agent: Agent, options: MeshAgentOptions = {}): MeshAgent {
    const meshAgent = new MeshAgent(agent.identity, { relayUrl: this.relayUrl, WebSocket: WS, ...options });
    this.endpoints.push(meshAgent);
    return meshAgent;
  }

  /** Waits until every client and agent made here is online. */
  async online(): Promise<void> {
    await Promise.all(this.endpoints.map((endpoint) => endpoint.waitOnline()));
  }

  /** Runs agent-meshctl to its end; throws with its output on a non-zero exit. */
  async meshctl(args: string[], extraEnv: Record<string, string> = {}): Promise<string> {
    const proc = new Proc('agent-meshctl', BINARIES.meshctl, args, {
      env: this.env({ MESH_HOME: path.join(this.dir, 'meshctl-home'), MESH_TOKEN: this.token, ...extraEnv }),
    });
    const finished = await Promise.race([proc.exit.then(() => true), sleep(30_000).then(() => false)]);
    if (!finished) {
      await proc.kill();
      throw new Error(`agent-meshctl ${args.join(' ')} did not finish\n${proc.describe()}`);
    }
    await proc.closed;
    if (proc.exited?.code !== 0) throw new Error(`agent-meshctl ${args.join(' ')} failed\n${proc.describe()}`);
    return proc.lines.join('\n');
  }

  /** A new identity (made here, in TypeScript), its key file, and its card in the registry. */
  async register(name: string, capabilities: string[]): Promise<Agent> {
    const identity = Identity.fromSeed(randomBytes(32));
    const home = path.join(this.dir, name);
    const keyFile = path.join(this.dir, `${name}.key`);
    writeFileSync(keyFile, `${encodeBase64url(identity.seed)}\n`, { mode: 0o600 });
    chmodSync(keyFile, 0o600);
    const out = await this.meshctl(['register', '--name', name, '--capabilities', capabilities.join(','), '--secret-key', encodeBase64url(identity.seed)]);
    if (!out.includes(identity.agentId)) throw new Error(`register printed ${JSON.stringify(out)}, expected ${identity.agentId}`);
    return { name, identity, keyFile, home };
  }

  /** sdk_peer serve: a C++ MeshAgent for `agent`, serving the --allow'ed agents. */
  async sdkServe(agent: Agent, allow: Agent[]): Promise<SdkPeer> {
    const args = ['serve', '--relay', this.relayUrl, '--key-file', agent.keyFile];
    for (const a of allow) args.push('--allow', a.identity.agentId);
    const peer = this.start(new SdkPeer(`sdk_peer serve ${agent.name}`, BINARIES.sdkPeer, args, { env: this.env(), stdin: 'pipe' }));
    await peer.event('ready', (e) => e['event'] === 'ready', READY_TIMEOUT_MS);
    return peer;
  }

  /** sdk_peer call: a C++ MeshClient for `agent`, driven by commands. */
  async sdkCall(agent: Agent): Promise<SdkPeer> {
    const peer = this.start(
      new SdkPeer(`sdk_peer call ${agent.name}`, BINARIES.sdkPeer, ['call', '--relay', this.relayUrl, '--key-file', agent.keyFile], {
        env: this.env(),
        stdin: 'pipe',
      }),
    );
    await peer.event('ready', (e) => e['event'] === 'ready', READY_TIMEOUT_MS);
    return peer;
  }

  /** scripts/echo_server.py NAME on a free port, logging requests and cancellations to a file. */
  async startEcho(name: string): Promise<{ url: string; events: () => string[] }> {
    const eventsFile = path.join(this.dir, `${name}-echo-events.log`);
    writeFileSync(eventsFile, '');
    const proc = this.start(
      new Proc(`echo_server ${name}`, 'python3', [path.join(REPO, 'scripts', 'echo_server.py'), '0', name], {
        env: cleanEnv({ ECHO_EVENTS_FILE: eventsFile }),
      }),
    );
    const [, url] = await proc.line(/^listening (http:\/\/127\.0\.0\.1:\d+)$/);
    return { url: url!, events: () => readFileSync(eventsFile, 'utf8').split('\n').filter(Boolean) };
  }

  /** agent-meshd for `agent` with a local ACL file allowing `allow` everything. */
  async startMeshd(agent: Agent, localAgentUrl: string, allow: Agent[]): Promise<Proc> {
    const aclFile = path.join(this.dir, `${agent.name}-acl.json`);
    writeFileSync(
      aclFile,
      JSON.stringify({
        default_deny: true,
        rules: allow.map((a) => ({ source: a.identity.agentId, target: agent.identity.agentId, allowed_capabilities: ['*'] })),
      }),
    );
    const proc = this.start(
      new Proc(`agent-meshd ${agent.name}`, BINARIES.meshd, [
        '--relay',
        this.relayUrl,
        '--key-file',
        agent.keyFile,
        '--local-agent',
        localAgentUrl,
        '--acl',
        aclFile,
      ], { env: this.env({ MESH_HOME: agent.home }) }),
    );
    await proc.line(new RegExp(`^agent ${agent.identity.agentId.replace(/[-]/g, '\\-')} socket \\S+$`));
    return proc;
  }

  /** Closes the TypeScript endpoints (in order), then stops every process. */
  async close(): Promise<void> {
    for (const endpoint of this.endpoints) await endpoint.close();
    await Promise.all(this.procs.map((p) => p.kill()));
    if (process.env['AGENT_MESH_KEEP_TMP'] !== '1') rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Mesh for the enclosing describe block, closed after all its tests. */
export function useMesh(): Mesh {
  const mesh = new Mesh();
  afterAll(() => mesh.close());
  return mesh;
}
