// The mesh the MCP adapter tests run against: the real binaries on loopback ports (cli-mcp-web.md
// "MCP adapter"). Nothing here sleeps to synchronise: every wait polls with a named deadline.
//
// Environment:
//   AGENT_MESH_BIN_DIR  directory (or several joined by ':') holding agent-mesh-server, agent-meshd and
//                       agent-meshctl (set by tests/mcp/tests.cmake)
//   AGENT_MESH_REPO     the repository root (scripts/echo_server.py, README.md); default: ../.. from here
//
// Processes (tests/support/processes.mjs) are started in their own process groups and killed
// (SIGTERM, then SIGKILL) by `Mesh.close()`; a process that exits unexpectedly keeps its output for
// the failure message.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  ONLINE_TIMEOUT_MS, Proc, READY_TIMEOUT_MS, REPO, binary, cleanEnv, liveDirs, run, waitFor,
} from '../support/processes.mjs';

// The generic process helpers are re-exported: the MCP suites import everything from here.
export * from '../support/processes.mjs';

const LISTENING = /^listening (http:\/\/127\.0\.0\.1:(\d+))$/;

// One user's mesh: agent-mesh-server, agents (each with its own MESH_HOME), echo agents and meshds.
export class Mesh {
  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), 'agent-mesh-mcp-'));
    liveDirs.add(this.dir);
    this.home = path.join(this.dir, 'home');   // HOME for every process: nothing from ~ takes part
    this.procs = [];
    this.agents = {};
  }

  start(label, command, args, options = {}) {
    const proc = new Proc(label, command, args, { ...options, env: this.env(options.env) });
    this.procs.push(proc);
    return proc;
  }

  env(extra = {}) {
    return cleanEnv({ MESH_CP_URL: this.cpUrl ?? 'http://127.0.0.1:9', ...extra }, this.home);
  }

  // Everything that was started, for a failure message.
  describe() {
    return this.procs.map((proc) => proc.describe()).join('\n\n');
  }

  async startServer() {
    const dataDir = path.join(this.dir, 'server');
    this.server = this.start('agent-mesh-server', binary('agent-mesh-server'),
      ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--bootstrap', '--ip-connect-rate', '1000']);
    const [, url, port] = await this.server.line(0, LISTENING);
    this.cpUrl = url;
    this.port = Number(port);
    this.relayUrl = `ws://127.0.0.1:${port}/relay/ws`;
    const tokenFile = path.join(dataDir, 'bootstrap-token');
    this.token = await waitFor('the bootstrap token file', READY_TIMEOUT_MS,
      () => existsSync(tokenFile) && readFileSync(tokenFile, 'utf8').trim());
    return this;
  }

  async meshctl(home, args, { stdin, timeoutMs, env } = {}) {
    const result = await run(binary('agent-meshctl'), args,
      { env: this.env({ MESH_HOME: home, ...env }), stdin, timeoutMs });
    return result;
  }

  async meshctlOk(home, args, options) {
    const result = await this.meshctl(home, args, options);
    if (result.code !== 0) {
      throw new Error(`agent-meshctl ${args.join(' ')} exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
    }
    return result;
  }

  // A fresh MESH_HOME, logged in with the bootstrap token (not registered).
  async newHome(name) {
    const home = path.join(this.dir, name);
    await this.meshctlOk(home, ['login', '--token-stdin'], { stdin: this.token + '\n' });
    return home;
  }

  // A registered agent: {name, home, id, keyFile}. `capabilitiesFile`: the JSON array of
  // --capabilities-file, written to the home's parent.
  async register(name, { capabilities = [], capabilitiesFile, description } = {}) {
    const home = await this.newHome(name);
    const args = ['register', '--name', name];
    if (capabilities.length) args.push('--capabilities', capabilities.join(','));
    if (capabilitiesFile) {
      const file = path.join(this.dir, `${name}-capabilities.json`);
      writeFileSync(file, JSON.stringify(capabilitiesFile));
      args.push('--capabilities-file', file);
    }
    if (description) args.push('--description', description);
    const { stdout } = await this.meshctlOk(home, args);
    const id = stdout.trim().split('\n').pop().trim();
    const keyFile = path.join(home, 'keys', `${id}.key`);
    if (!existsSync(keyFile)) throw new Error(`register printed ${JSON.stringify(stdout)} but ${keyFile} does not exist`);
    const agent = { name, home, id, keyFile };
    this.agents[name] = agent;
    return agent;
  }

  async aclAdd(source, target, capabilities = '*') {
    await this.meshctlOk(target.home, ['acl', 'add', '--source', source.id, '--target', target.id,
      '--capabilities', capabilities]);
  }

  // scripts/echo_server.py NAME on a free port: {proc, url, eventsFile}.
  async startEcho(name) {
    const eventsFile = path.join(this.dir, `${name}-echo-events.log`);
    writeFileSync(eventsFile, '');
    const proc = this.start(`echo_server ${name}`, 'python3',
      [path.join(REPO, 'scripts', 'echo_server.py'), '0', name], { env: { ECHO_EVENTS_FILE: eventsFile } });
    const [, url] = await proc.line(0, LISTENING);
    return { proc, url, eventsFile, events: () => readFileSync(eventsFile, 'utf8').split('\n').filter(Boolean) };
  }

  // agent-meshd for `agent` forwarding to `localAgentUrl` (its socket in the agent's MESH_HOME).
  async startMeshd(agent, localAgentUrl) {
    const proc = this.start(`agent-meshd ${agent.name}`, binary('agent-meshd'),
      ['--relay', this.relayUrl, '--cp-url', this.cpUrl, '--key-file', agent.keyFile, '--local-agent', localAgentUrl],
      { env: { MESH_HOME: agent.home } });
    const [, id, socket] = await proc.line(0, /^agent (\S+) socket (\S+)$/);
    if (id !== agent.id) throw new Error(`meshd for ${agent.name} says agent ${id}, expected ${agent.id}`);
    agent.meshd = proc;
    agent.socket = socket;
    return proc;
  }

  // The agent IDs the registry reports online to `home`'s user.
  async onlineIds(home) {
    const { code, stdout } = await this.meshctl(home, ['--json', 'discover', '--online']);
    if (code !== 0) return new Set();
    const parsed = JSON.parse(stdout);
    const items = Array.isArray(parsed) ? parsed : parsed.items ?? [];
    return new Set(items.filter((card) => card.online !== false).map((card) => card.agent_id));
  }

  async waitOnline(home, agents, timeoutMs = ONLINE_TIMEOUT_MS) {
    await waitFor(`${agents.map((a) => a.name).join(', ')} online in discovery`, timeoutMs, async () => {
      const online = await this.onlineIds(home);
      return agents.every((agent) => online.has(agent.id));
    }, 200);
  }

  // Polls `agent-meshctl request` from `caller` until `target` answers `capability` (its meshd has
  // synced the ACL rule); returns the parsed answer.
  async waitAnswers(caller, target, capability, payload = {}, timeoutMs = ONLINE_TIMEOUT_MS) {
    let last;
    return waitFor(`${target.name} to answer ${capability} from ${caller.name}`, timeoutMs, async () => {
      last = await this.meshctl(caller.home, ['request', '--target', target.id, '--capability', capability,
        '--payload', JSON.stringify(payload), '--timeout', '5']);
      if (last.code === 0) return JSON.parse(last.stdout);
      throw new Error(`exit ${last.code}: ${last.stderr.trim()}`);
    }, 250);
  }

  async close() {
    await Promise.all(this.procs.map((proc) => proc.kill()));
    if (!process.env.AGENT_MESH_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
  }
}

// The echo capability's card entry (--capabilities-file): description and input_schema become the
// per-agent tool's description and inputSchema.
export const ECHO_CAPABILITY = {
  name: 'echo',
  description: 'Echoes the JSON body back (scripts/echo_server.py)',
  input_schema: {
    type: 'object',
    properties: {
      message: { type: 'string', description: 'anything' },
      stream: { type: 'integer', minimum: 0, maximum: 100 },
      sleep_ms: { type: 'integer', minimum: 0 },
    },
  },
};

// The standard scenario:
//   alice  the MCP server's identity (its MESH_HOME is the adapter's); with `aliceMeshd` her meshd runs
//          (calls go through its socket), else calls are daemonless. `aliceLocalAgent`: where her
//          meshd forwards (default: an echo agent).
//   bob    echo (from the capabilities file) + count, echo agent + meshd; rule alice → bob '*'
//   carol  echo, echo agent + meshd, NO rule: acl_denied
//   dave   echo, registered with a rule alice → dave, no meshd: offline (unreachable)
export async function startMesh({ aliceMeshd = false } = {}) {
  const mesh = new Mesh();
  try {
    await mesh.startServer();
    const [alice, bob, carol, dave] = await Promise.all([
      mesh.register('alice', { capabilities: ['chat'] }),
      mesh.register('bob', { capabilities: ['count'], capabilitiesFile: [ECHO_CAPABILITY], description: 'Bob the echo agent' }),
      mesh.register('carol', { capabilities: ['echo'] }),
      mesh.register('dave', { capabilities: ['echo'] }),
    ]);
    await mesh.aclAdd(alice, bob);
    await mesh.aclAdd(alice, dave);
    await mesh.aclAdd(bob, alice);   // bob may call alice (receive mode)
    const [bobEcho, carolEcho] = await Promise.all([mesh.startEcho('bob'), mesh.startEcho('carol')]);
    bob.echo = bobEcho;
    carol.echo = carolEcho;
    await Promise.all([mesh.startMeshd(bob, bobEcho.url), mesh.startMeshd(carol, carolEcho.url)]);
    if (aliceMeshd) {
      alice.echo = await mesh.startEcho('alice');
      await mesh.startMeshd(alice, alice.echo.url);
    }
    await mesh.waitOnline(alice.home, aliceMeshd ? [alice, bob, carol] : [bob, carol]);
    // bob's meshd has alice's rule once this answers (through alice's meshd or daemonless).
    await mesh.waitAnswers(alice, bob, 'echo', { message: 'warm-up' });
    return mesh;
  } catch (error) {
    const detail = mesh.describe();
    await mesh.close();
    error.message += `\n\n${detail}`;
    throw error;
  }
}

// The per-agent tool name: the first 8 characters of the agent ID, `__`, the capability.
export const toolName = (agent, capability) => `${agent.id.slice(0, 8)}__${capability}`;
