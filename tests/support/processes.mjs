// Processes for the Node test suites (tests/mcp, web/e2e): the real binaries started in their own
// process groups, stdout split into lines, waits that poll with a named deadline (nothing sleeps to
// synchronise), and every group killed when the test process ends in any way it can observe.
//
// Environment:
//   AGENT_MESH_BIN_DIR  directory (or several joined by ':') holding the binaries (set by ctest);
//                       binary() then looks in <repo>/build/apps and PATH
//   AGENT_MESH_REPO     the repository root; default: ../.. from here

import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const READY_TIMEOUT_MS = 20_000;     // a started process's first stdout line
export const COMMAND_TIMEOUT_MS = 30_000;   // one agent-meshctl command
export const ONLINE_TIMEOUT_MS = 20_000;    // agents online in discovery and their ACL synced
export const KILL_GRACE_MS = 3_000;         // SIGTERM to SIGKILL at the end
export const POLL_MS = 50;

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = process.env.AGENT_MESH_REPO || path.resolve(here, '..', '..');
export const BIN_DIRS = (process.env.AGENT_MESH_BIN_DIR || '').split(':').filter(Boolean);

export function binary(name) {
  const dirs = [...BIN_DIRS, path.join(REPO, 'build', 'apps'), ...(process.env.PATH || '').split(path.delimiter)];
  for (const dir of dirs.filter(Boolean)) {
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not found in AGENT_MESH_BIN_DIR=${process.env.AGENT_MESH_BIN_DIR ?? '(unset)'}, build/apps or PATH`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// `promise`'s value, or `fallback` after `ms` (the timer is cleared: it keeps nothing alive).
export function within(promise, ms, fallback = null) {
  let timer;
  const expired = new Promise((resolve) => { timer = setTimeout(() => resolve(fallback), ms); });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

// Polls `probe` (sync or async) until it returns a truthy value; throws `what` after `timeoutMs`.
// A probe's exception is retried, except an assertion or one marked `fatal`, which ends the wait.
export async function waitFor(what, timeoutMs, probe, intervalMs = POLL_MS) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      if (error?.fatal || error?.code === 'ERR_ASSERTION') throw error;   // not worth waiting for
      lastError = error;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
                      (lastError ? ` (last error: ${lastError.message ?? lastError})` : ''));
    }
    await sleep(intervalMs);
  }
}

// An environment without the caller's MESH_* settings, with HOME pointing at `home`.
export function cleanEnv(extra = {}, home = undefined) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('MESH_') && key !== 'ECHO_EVENTS_FILE') env[key] = value;
  }
  if (home) env.HOME = home;
  return { ...env, ...extra };
}

// Every process group started here, killed with SIGKILL when this test process ends in any way it
// can observe (a killed test file must not leave servers behind).
const liveGroups = new Set();
export const liveDirs = new Set();   // temporary directories not yet removed (Mesh adds its own)
function killLiveGroups() {
  for (const pid of liveGroups) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ }
  }
  liveGroups.clear();
  if (!process.env.AGENT_MESH_KEEP_TMP) {
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  }
  liveDirs.clear();
}
process.on('exit', killLiveGroups);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killLiveGroups();
    process.kill(process.pid, signal);
  });
}

// A started process: stdout split into lines, stderr kept, exit observed.
export class Proc {
  constructor(label, command, args, { env, cwd, stdin } = {}) {
    this.label = label;
    this.command = command;
    this.args = args;
    this.stdoutLines = [];
    this.stdoutPartial = '';
    this.stderr = '';
    this.exited = null;   // {code, signal} once it exited
    this.child = spawn(command, args, {
      env: env ?? cleanEnv(),
      cwd: cwd ?? REPO,
      detached: true,    // its own process group, killed as a whole
      stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (this.child.pid) liveGroups.add(this.child.pid);
    if (stdin !== undefined) {
      this.child.stdin.on('error', () => {});
      this.child.stdin.end(stdin);
    }
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (chunk) => {
      const parts = (this.stdoutPartial + chunk).split('\n');
      this.stdoutPartial = parts.pop();
      this.stdoutLines.push(...parts);
    });
    this.child.stderr.on('data', (chunk) => { this.stderr += chunk; });
    this.exitPromise = new Promise((resolve) => {
      this.child.on('error', (error) => {
        this.stderr += `spawn error: ${error.message}\n`;
        this.exited = { code: null, signal: null, error };
        resolve(this.exited);
      });
      this.child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        // Whatever the leader left in its group goes with it; the group ID is not signalled later.
        try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* none left */ }
        liveGroups.delete(this.child.pid);
        resolve(this.exited);
      });
    });
    // 'exit' can precede the last 'data' events: 'close' waits for the pipes.
    this.closePromise = new Promise((resolve) => this.child.on('close', resolve));
  }

  get pid() { return this.child.pid; }

  describe() {
    const tail = (text) => text.split('\n').slice(-30).join('\n');
    return `${this.label}: ${this.command} ${this.args.join(' ')}\n` +
           `  exited: ${JSON.stringify(this.exited)}\n` +
           `  stdout:\n${tail(this.stdoutLines.join('\n') + this.stdoutPartial)}\n` +
           `  stderr:\n${tail(this.stderr)}`;
  }

  // The stdout line `index` (0-based), matching `pattern`; fails early when the process exits.
  async line(index, pattern, timeoutMs = READY_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    while (this.stdoutLines.length <= index) {
      if (this.exited) {
        await within(this.closePromise, 200);
        if (this.stdoutLines.length > index) break;
        throw new Error(`process exited before stdout line ${index + 1}\n${this.describe()}`);
      }
      if (Date.now() >= deadline) {
        throw new Error(`no stdout line ${index + 1} within ${timeoutMs} ms\n${this.describe()}`);
      }
      await sleep(POLL_MS);
    }
    const text = this.stdoutLines[index];
    const match = pattern ? pattern.exec(text) : [text];
    if (!match) throw new Error(`stdout line ${index + 1} is ${JSON.stringify(text)}, expected ${pattern}\n${this.describe()}`);
    return match;
  }

  async stderrMatch(pattern, timeoutMs = READY_TIMEOUT_MS) {
    return waitFor(`${this.label}'s stderr to match ${pattern}`, timeoutMs, () => {
      const match = pattern.exec(this.stderr);
      if (!match && this.exited) throw Object.assign(new Error(`exited\n${this.describe()}`), { fatal: true });
      return match;
    });
  }

  async wait(timeoutMs = COMMAND_TIMEOUT_MS) {
    const result = await within(this.exitPromise, timeoutMs);
    if (!result) {
      await this.kill();
      throw new Error(`still running after ${timeoutMs} ms, killed\n${this.describe()}`);
    }
    await within(this.closePromise, 1000);
    return {
      code: result.code,
      signal: result.signal,
      stdout: this.stdoutLines.join('\n') + (this.stdoutLines.length ? '\n' : '') + this.stdoutPartial,
      stderr: this.stderr,
    };
  }

  // SIGTERM to the process group, SIGKILL after KILL_GRACE_MS (the exit handler clears the rest).
  async kill() {
    if (this.exited || !this.child.pid) return;
    try { process.kill(-this.child.pid, 'SIGTERM'); } catch { /* gone */ }
    const done = await within(this.exitPromise, KILL_GRACE_MS);
    if (!done) {
      try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* gone */ }
      await within(this.exitPromise, KILL_GRACE_MS);
    }
  }
}

// Runs one command to its end: {code, stdout, stderr}.
export async function run(command, args, { env, stdin, timeoutMs = COMMAND_TIMEOUT_MS, cwd } = {}) {
  const proc = new Proc(path.basename(command), command, args, { env, stdin, cwd });
  return proc.wait(timeoutMs);
}
