// End to end in headless Chromium (cli-mcp-web.md "TypeScript client and web UI"): `mesh-demo
// --serve` on port 0 serves the built UI (web/app/dist); Debian's chromium, driven by
// playwright-core, opens the page, logs in with the bootstrap token, sees the echo agent online,
// grants access, sends a message, sees the echoed answer and streams a reply, then a second browser
// (its own profile, so its own agent) chats with the first, where a person answers; last, the
// device-flow login against agent-mesh-server and the GitHub stand-in (tests/support). Screenshots
// go to $AGENT_MESH_TEST_ARTIFACTS (ctest: <build>/test-artifacts/web).
//
// Run: node web/e2e/chat.e2e.mjs   (node:test; exits 77 = skipped when there is no chromium)
// Env: AGENT_MESH_BIN_DIR (dirs holding mesh-demo and agent-mesh-server, ':'-separated; default
//      build/apps, then PATH),
//      AGENT_MESH_WEB_ROOT (default web/app/dist), CHROMIUM (default /usr/bin/chromium).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// The spec's flags (cli-mcp-web.md); --headless comes from `headless: true`, --user-data-dir from
// launchPersistentContext's fresh temporary directory.
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const STEP_MS = 15_000; // any one UI step; the whole file is bounded by ctest's TIMEOUT

if (!existsSync(CHROMIUM)) {
  console.log(`SKIPPED: ${CHROMIUM} is not installed (scripts/setup installs Debian's chromium; apt-get install chromium)`);
  process.exit(77);
}

function findBinary(name) {
  const dirs = [
    ...(process.env.AGENT_MESH_BIN_DIR ?? '').split(delimiter).filter(Boolean),
    join(repo, 'build', 'apps'),
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
  ];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not found in AGENT_MESH_BIN_DIR, build/apps or PATH; build it first (scripts/setup)`);
}

const webRoot = resolve(process.env.AGENT_MESH_WEB_ROOT ?? join(repo, 'web', 'app', 'dist'));
const artifacts = resolve(process.env.AGENT_MESH_TEST_ARTIFACTS ?? join(repo, 'web', 'test-results'));

/** mesh-demo --serve on an ephemeral port; resolves once it prints the URL, the token and the echo agent. */
function startDemo() {
  const binary = findBinary('mesh-demo');
  const child = spawn(binary, ['--serve', '--listen', '127.0.0.1:0', '--web-root', webRoot], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => output.push(text));
  return new Promise((resolvePromise, reject) => {
    const found = {};
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mesh-demo --serve was not ready within 60 s:\n${output.join('')}`));
    }, 60_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`mesh-demo exited early (${code ?? signal}):\n${output.join('')}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      output.push(`${line}\n`);
      const url = /Open (http:\/\/\S+?)\/? /.exec(line);
      if (url) found.url = url[1];
      const token = /bootstrap token: (\S+)/.exec(line);
      if (token) found.token = token[1];
      const echo = /echo agent \(bob\): (\S+)/.exec(line);
      if (echo) found.echoId = echo[1];
      if (/Ctrl-C stops it/.test(line)) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        if (!found.url || !found.token || !found.echoId) {
          reject(new Error(`mesh-demo's serving banner lacks the URL, token or echo agent:\n${output.join('')}`));
          return;
        }
        resolvePromise({ child, output, ...found });
      }
    });
  });
}

/** A server that prints `listening http://<host>:<port>` first on stdout (agent-mesh-server, the GitHub stand-in). */
function startListening(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => output.push(text));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} did not listen within 30 s:\n${output.join('')}`));
    }, 30_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited early (${code ?? signal}):\n${output.join('')}`));
    });
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      const match = /^listening (https?:\/\/\S+)$/.exec(line);
      if (!match) reject(new Error(`${command}: unexpected first line ${JSON.stringify(line)}`));
      else resolvePromise({ child, output, url: match[1] });
    });
  });
}

async function stopChild(demo) {
  if (!demo || demo.child.exitCode !== null) return;
  const exited = new Promise((r) => demo.child.once('exit', r));
  demo.child.kill('SIGTERM');
  const timer = setTimeout(() => demo.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** A fresh Chromium profile (its own IndexedDB, so its own agent) with the spec's flags. */
async function openBrowser(chromium, name) {
  const profile = mkdtempSync(join(tmpdir(), `agent-mesh-e2e-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
  });
  context.setDefaultTimeout(STEP_MS);
  const page = context.pages()[0] ?? (await context.newPage());
  // What the page sent anywhere: the seed must never be in it. CSP violations and page errors fail the test.
  const sent = [];
  const problems = [];
  page.on('request', (request) => sent.push(`${request.url()} ${request.postData() ?? ''}`));
  page.on('websocket', (ws) => ws.on('framesent', (frame) => sent.push(frame.payload)));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return {
    context,
    page,
    sent,
    problems,
    close: async () => {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

async function login(page, url, token) {
  const response = await page.goto(`${url}/`);
  assert.equal(response?.status(), 200);
  await page.getByTestId('login-token-input').fill(token);
  await page.getByTestId('login-token-submit').click();
  await page.locator('[data-testid="status-link"][data-state="online"]').waitFor();
  return page.getByTestId('status-agent-id').getAttribute('data-agent-id');
}

/** The seed this page's agent keeps in IndexedDB, as base64url and hex. */
async function seedForms(page) {
  const bytes = await page.evaluate(
    () =>
      new Promise((resolveSeed, reject) => {
        const open = indexedDB.open('agent-mesh');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const all = open.result.transaction('kv').objectStore('kv').getAll();
          all.onerror = () => reject(all.error);
          all.onsuccess = () => {
            const seed = all.result.find((v) => v instanceof Uint8Array && v.length === 32);
            resolveSeed(seed ? Array.from(seed) : null);
          };
        };
      }),
  );
  assert.ok(bytes, 'no 32-byte seed in IndexedDB');
  const buffer = Buffer.from(bytes);
  return [buffer.toString('base64url'), buffer.toString('base64'), buffer.toString('hex'), buffer];
}

function assertSeedNeverSent(browser, forms) {
  const [b64url, b64, hex, raw] = forms;
  for (const item of browser.sent) {
    if (typeof item === 'string') {
      for (const form of [b64url, b64, hex]) assert.ok(!item.includes(form), 'the seed left the browser');
    } else {
      assert.ok(!Buffer.from(item).includes(raw), 'the seed left the browser (binary frame)');
    }
  }
}

let chromium;
let demo;
const opened = [];
const servers = [];

before(async () => {
  assert.ok(existsSync(join(webRoot, 'index.html')), `no built UI in ${webRoot}: run \`npm run build\` in web/ (scripts/setup does)`);
  ({ chromium } = await import('playwright-core'));
  mkdirSync(artifacts, { recursive: true });
  demo = await startDemo();
});

after(async () => {
  for (const browser of opened) await browser.close();
  await stopChild(demo);
  for (const server of servers) await stopChild(server);
});

test('log in, see the echo agent online, grant access, request and stream', async () => {
  const browser = await openBrowser(chromium, 'alice');
  opened.push(browser);
  const { page } = browser;

  // Served with the strict policy.
  const response = await page.goto(`${demo.url}/`);
  const csp = response?.headers()['content-security-policy'] ?? '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);

  // A wrong token is refused plainly, with the registry's code.
  await page.getByTestId('login-token-input').fill('not-a-real-token');
  await page.getByTestId('login-token-submit').click();
  await page.locator('[data-testid="login-error"] [data-code="unauthorized"]').waitFor();

  // The bootstrap token logs in; the browser registers its own agent and goes online.
  await page.getByTestId('login-token-input').fill(demo.token);
  await page.getByTestId('login-token-submit').click();
  await page.locator('[data-testid="status-link"][data-state="online"]').waitFor();
  assert.equal(await page.getByTestId('status-user').textContent(), 'admin');
  const myId = await page.getByTestId('status-agent-id').getAttribute('data-agent-id');
  assert.match(myId ?? '', /^[A-Za-z0-9_-]{43}$/);

  // The echo agent, online, with its capability; this browser is listed too.
  const echo = page.locator(`[data-testid="agent-item"][data-agent-id="${demo.echoId}"]`);
  await echo.and(page.locator('[data-online="true"]')).waitFor();
  assert.equal(await echo.getByTestId('agent-online').textContent(), 'online');
  assert.match((await echo.getByTestId('agent-capabilities').textContent()) ?? '', /echo/);
  await page.locator(`[data-testid="agent-item"][data-agent-id="${myId}"]`).waitFor();

  // Grant this browser access to the echo agent (the bootstrap user owns it).
  await echo.getByTestId('grant-access').click();
  await echo.getByTestId('access-granted').waitFor();

  // A request, end-to-end encrypted, and the echoed answer.
  await echo.getByTestId('agent-select').click();
  await page.getByTestId('conversation').waitFor();
  assert.equal(await page.getByTestId('composer-capability').inputValue(), 'echo');
  await page.getByTestId('composer-input').fill('hello from the browser');
  await page.getByTestId('composer-send').click();
  const first = page.getByTestId('exchange').nth(0);
  await first.locator('[data-testid="message-reply"][data-status="done"]').waitFor();
  const answer = JSON.parse((await first.getByTestId('reply-body').textContent()) ?? '');
  assert.deepEqual(answer, { agent: 'bob', echo: { capability: 'echo', message: 'hello from the browser' } });

  // A stream: the echo agent sends three chunks, shown as they arrive, then the end.
  await page.getByTestId('composer-mode-stream').check();
  await page.getByTestId('composer-json').check();
  await page.getByTestId('composer-input').fill('{"stream": 3}');
  await page.getByTestId('composer-send').click();
  const second = page.getByTestId('exchange').nth(1);
  await second.locator('[data-testid="message-reply"][data-status="done"]').waitFor();
  const chunks = await second.getByTestId('reply-chunk').allTextContents();
  assert.equal(chunks.length, 3);
  chunks.forEach((text, seq) => assert.deepEqual(JSON.parse(text), { seq, agent: 'bob' }));
  assert.match((await second.getByTestId('stream-end').textContent()) ?? '', /3 chunks/);

  // Errors are shown with their code: a capability the echo agent does not have.
  await page.getByTestId('composer-mode-request').check();
  await page.getByTestId('composer-json').uncheck();
  await page.getByTestId('composer-capability').evaluate((select) => {
    const option = document.createElement('option');
    option.value = option.textContent = 'nope';
    select.append(option);
  });
  await page.getByTestId('composer-capability').selectOption('nope');
  await page.getByTestId('composer-input').fill('anyone there?');
  await page.getByTestId('composer-send').click();
  const third = page.getByTestId('exchange').nth(2);
  await third.locator('[data-testid="message-reply"][data-status="error"]').waitFor();
  const code = await third.getByTestId('message-error').getAttribute('data-code');
  assert.ok(code === 'acl_denied' || code === 'unknown_capability', `unexpected error code ${code}`);

  const shot = join(artifacts, 'web-ui-chat.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  assertSeedNeverSent(browser, await seedForms(page));
  assert.deepEqual(browser.problems, []);
});

test('another browser agent chats with this one, and the person answers', async () => {
  const alice = opened[0];
  assert.ok(alice, 'the first test opened the first browser');
  const aliceId = await alice.page.getByTestId('status-agent-id').getAttribute('data-agent-id');

  const carol = await openBrowser(chromium, 'carol');
  opened.push(carol);
  const carolId = await login(carol.page, demo.url, demo.token);
  assert.notEqual(carolId, aliceId, 'each browser profile has its own agent');

  // Carol grants herself access to the first browser's `chat` (same user owns both) and writes.
  const target = carol.page.locator(`[data-testid="agent-item"][data-agent-id="${aliceId}"]`);
  await target.and(carol.page.locator('[data-online="true"]')).waitFor();
  await target.getByTestId('grant-access').click();
  await target.getByTestId('access-granted').waitFor();
  await target.getByTestId('agent-select').click();
  assert.equal(await carol.page.getByTestId('composer-capability').inputValue(), 'chat');
  await carol.page.getByTestId('composer-input').fill('are you there, person?');
  await carol.page.getByTestId('composer-send').click();

  // The first browser shows the incoming request in Carol's conversation; the person answers.
  const from = alice.page.locator(`[data-testid="agent-item"][data-agent-id="${carolId}"]`);
  await from.getByTestId('agent-unread').waitFor();
  await from.getByTestId('agent-select').click();
  const incoming = alice.page.locator('[data-testid="incoming"][data-status="waiting"]');
  assert.equal(await incoming.getByTestId('incoming-body').textContent(), 'are you there, person?');
  await incoming.getByTestId('incoming-reply-input').fill('yes, a human here');
  await incoming.getByTestId('incoming-reply-send').click();
  await alice.page.locator('[data-testid="incoming"][data-status="answered"]').waitFor();

  // Carol sees the person's answer.
  const exchange = carol.page.getByTestId('exchange').nth(0);
  await exchange.locator('[data-testid="message-reply"][data-status="done"]').waitFor();
  assert.equal(await exchange.getByTestId('reply-body').textContent(), 'yes, a human here');

  await alice.page.screenshot({ path: join(artifacts, 'web-ui-incoming.png'), fullPage: true });
  assertSeedNeverSent(carol, await seedForms(carol.page));
  assert.deepEqual(carol.problems, []);
  assert.deepEqual(alice.problems, []);
});

test('device flow login: the code and the URL are shown, approval logs the new user in', async () => {
  const github = await startListening(process.execPath, [
    join(repo, 'tests', 'support', 'github-standin.mjs'),
    '--interval-ms', '0', '--client-id', 'e2e-client', '--client-secret', 'e2e-secret',
  ]);
  servers.push(github);
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-mesh-e2e-server-'));
  const secretFile = join(dataDir, 'oauth-secret');
  writeFileSync(secretFile, 'e2e-secret\n', { mode: 0o600 });
  const server = await startListening(findBinary('agent-mesh-server'), [
    '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--web-root', webRoot, '--log-level', 'error',
    '--oauth-client-id', 'e2e-client', '--oauth-client-secret-file', secretFile,
    '--oauth-device-url', `${github.url}/login/device/code`,
    '--oauth-token-url', `${github.url}/login/oauth/access_token`,
    '--oauth-user-url', `${github.url}/user`,
  ]);
  servers.push(server);

  const browser = await openBrowser(chromium, 'device');
  opened.push(browser);
  const { page } = browser;
  await page.goto(`${server.url}/`);
  await page.getByTestId('login-device-start').click();
  const userCode = (await page.getByTestId('device-code').textContent())?.trim() ?? '';
  assert.match(userCode, /^[A-Z]{4}-[A-Z]{4}$/);
  assert.match((await page.getByTestId('device-url').getAttribute('href')) ?? '', /^https?:\/\//);

  // The person approves at "GitHub" (the stand-in's control endpoint).
  const approved = await fetch(`${github.url}/_control/approve`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_code: userCode, login: 'octo', id: 4242 }),
  });
  assert.equal(approved.status, 200);

  await page.locator('[data-testid="status-link"][data-state="online"]').waitFor();
  assert.equal(await page.getByTestId('status-user').textContent(), 'octo');
  const myId = await page.getByTestId('status-agent-id').getAttribute('data-agent-id');
  await page.locator(`[data-testid="agent-item"][data-agent-id="${myId}"][data-online="true"]`).waitFor();
  assert.deepEqual(browser.problems, []);
  rmSync(dataDir, { recursive: true, force: true });
});
