// End to end in headless Chromium (cli-mcp-web.md "TypeScript client and web UI"): `mesh-demo
// --serve` on port 0 serves the built UI (web/app/dist) under the exact Content-Security-Policy;
// Debian's chromium, driven by playwright-core, opens the page, logs in with the bootstrap token,
// sees the echo agent online, grants access, sends a message, sees the echoed answer and streams a
// reply, and an ungranted capability fails with `acl_denied`. A second browser (its own profile, so
// its own agent) writes to the first: refused `acl_denied` by the first browser's own ACL until the
// person there clicks "Let it chat with me", then answered by the person. A second tab of the first
// browser (same profile, same agent) waits ("open in another tab") until "Use it here" takes the
// agent over. Logging out clears the session and takes the first browser's agent offline. Last, the
// device-flow login against agent-mesh-server and the GitHub stand-in (tests/support). Throughout, neither the seed nor the
// plaintext of a message is in any request (URL, headers, body) or WebSocket frame. Screenshots go
// to $AGENT_MESH_TEST_ARTIFACTS (ctest: <build>/test-artifacts/web).
//
// Run: node web/e2e/chat.e2e.mjs   (node:test; exits 77 = skipped when there is no chromium)
// Env: AGENT_MESH_BIN_DIR (dirs holding mesh-demo and agent-mesh-server, ':'-separated; default
//      build/apps, then PATH),
//      AGENT_MESH_WEB_ROOT (default web/app/dist), CHROMIUM (default /usr/bin/chromium).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Proc, binary, waitFor } from '../../tests/support/processes.mjs';

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
// What agent-mesh-server sends on every answer of the web root (src/registry/static_files.hpp).
const EXPECTED_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const PLAINTEXT = 'hello from the browser';

if (!existsSync(CHROMIUM)) {
  console.log(`SKIPPED: ${CHROMIUM} is not installed (scripts/setup installs Debian's chromium; apt-get install chromium)`);
  process.exit(77);
}

const webRoot = resolve(process.env.AGENT_MESH_WEB_ROOT ?? join(repo, 'web', 'app', 'dist'));
const artifacts = resolve(process.env.AGENT_MESH_TEST_ARTIFACTS ?? join(repo, 'web', 'test-results'));

/** mesh-demo --serve on an ephemeral port, once it has printed the URL, the token and the echo agent. */
async function startDemo() {
  const proc = new Proc('mesh-demo', binary('mesh-demo'), ['--serve', '--listen', '127.0.0.1:0', '--web-root', webRoot]);
  const banner = await waitFor('mesh-demo --serve to print its serving banner', 60_000, () => {
    if (proc.exited) throw Object.assign(new Error(`mesh-demo exited early\n${proc.describe()}`), { fatal: true });
    return proc.stdoutLines.some((line) => /Ctrl-C stops it/.test(line)) && proc.stdoutLines.join('\n');
  });
  const url = /Open (http:\/\/\S+?)\/? /.exec(banner)?.[1];
  const token = /bootstrap token: (\S+)/.exec(banner)?.[1];
  const echoId = /echo agent \(bob\): (\S+)/.exec(banner)?.[1];
  if (!url || !token || !echoId) {
    await proc.kill();
    throw new Error(`mesh-demo's serving banner lacks the URL, token or echo agent\n${proc.describe()}`);
  }
  return { proc, url, token, echoId };
}

/** A server that prints `listening http://<host>:<port>` first on stdout (agent-mesh-server, the GitHub stand-in). */
async function startListening(label, command, args) {
  const proc = new Proc(label, command, args);
  const [, url] = await proc.line(0, /^listening (https?:\/\/\S+)$/, 30_000);
  return { proc, url };
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
  // What went over the wire: every request (URL, all headers, body) and every WebSocket frame both
  // ways. Neither the seed nor a message's plaintext may be in it. CSP violations and page errors
  // fail the test.
  const sent = [];
  const headers = [];
  const problems = [];
  // The headers as the page set them at once; all of them (what the network stack added too) once a
  // request is finished (allHeaders() of a long poll still waiting would wait for its answer).
  page.on('request', (request) => sent.push(`${request.method()} ${request.url()}\n${JSON.stringify(request.headers())}\n${request.postData() ?? ''}`));
  page.on('requestfinished', (request) => headers.push(request.allHeaders().then((all) => JSON.stringify(all), () => '')));
  const frames = { sent: 0, received: 0 };
  page.on('websocket', (ws) => {
    ws.on('framesent', (frame) => {
      frames.sent += 1;
      sent.push(frame.payload);
    });
    ws.on('framereceived', (frame) => {
      frames.received += 1;
      sent.push(frame.payload);
    });
  });
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content.Security.Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return {
    context,
    page,
    sent,
    headers,
    frames,
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

/** IndexedDB `agent-mesh`/`kv` of the page: every key and value (Uint8Arrays as byte arrays). */
async function storedEntries(page) {
  return page.evaluate(
    () =>
      new Promise((resolveAll, reject) => {
        const open = indexedDB.open('agent-mesh');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const store = open.result.transaction('kv').objectStore('kv');
          const keys = store.getAllKeys();
          const values = store.getAll();
          values.onerror = () => reject(values.error);
          values.onsuccess = () =>
            resolveAll(keys.result.map((key, i) => [String(key), values.result[i] instanceof Uint8Array ? Array.from(values.result[i]) : values.result[i]]));
        };
      }),
  );
}

/** The seed this page's agent keeps in IndexedDB. */
async function seedBytes(page) {
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
  return Buffer.from(bytes);
}

/**
 * The ways `bytes` could appear in text: hex, and base64 / base64url wherever they start in the
 * encoded stream (the characters that depend only on `bytes`, for each of the 3 alignments).
 */
function encodedForms(bytes) {
  const forms = new Set([bytes.toString('hex'), bytes.toString('hex').toUpperCase()]);
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    const inner = encoded.slice(Math.ceil((shift * 8) / 6), Math.floor(((shift + bytes.length) * 8) / 6));
    forms.add(inner);
    forms.add(inner.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return [...forms];
}

/** `bytes` (the seed, a message's text) is in no request URL, header or body and no WebSocket frame. */
async function assertNeverSent(browser, bytes, what) {
  const texts = [bytes.toString('latin1'), bytes.toString('utf8'), ...encodedForms(bytes)];
  const all = [...browser.sent, ...(await Promise.all(browser.headers))];
  assert.ok(all.length > 0, 'nothing was captured');
  for (const item of all) {
    if (typeof item === 'string') {
      for (const form of texts) assert.ok(!item.includes(form), `${what} left the browser: ${item.slice(0, 200)}`);
    } else {
      assert.ok(!Buffer.from(item).includes(bytes), `${what} left the browser (binary frame)`);
    }
  }
}

/** GET of the registry's API with the user's token. */
async function api(url, token, path) {
  const response = await fetch(`${url}/api/v1${path}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
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
  await demo?.proc.kill();
  for (const server of servers) await server.proc.kill();
});

test('log in, see the echo agent online, grant access, request and stream', async () => {
  const browser = await openBrowser(chromium, 'alice');
  opened.push(browser);
  const { page } = browser;

  // Served with the strict policy, exactly: the page, an asset and a 404 alike. Only the hashed
  // assets (the icon included) are cached as immutable.
  const response = await page.goto(`${demo.url}/`);
  assert.equal(response?.headers()['content-security-policy'], EXPECTED_CSP);
  assert.equal(response?.headers()['cache-control'], 'no-cache');
  const html = await (await fetch(`${demo.url}/`)).text();
  const script = /<script type="module" crossorigin src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
  const icon = /<link rel="icon" href="(\/assets\/[^"]+\.svg)"/.exec(html)?.[1];
  assert.ok(script && icon, `index.html names no hashed script and icon:\n${html}`);
  for (const asset of [script, icon]) {
    const answer = await fetch(`${demo.url}${asset}`);
    assert.equal(answer.status, 200, asset);
    assert.equal(answer.headers.get('content-security-policy'), EXPECTED_CSP, asset);
    assert.equal(answer.headers.get('cache-control'), 'public, max-age=31536000, immutable', asset);
  }
  const missing = await fetch(`${demo.url}/assets/no-such-file.js`);
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get('content-security-policy'), EXPECTED_CSP);

  // The token field is no password field (nothing for a password manager to save), masked by CSS.
  const tokenInput = page.getByTestId('login-token-input');
  assert.equal(await tokenInput.getAttribute('type'), 'text');
  assert.equal(await tokenInput.getAttribute('autocomplete'), 'off');
  assert.equal(await tokenInput.evaluate((el) => getComputedStyle(el).getPropertyValue('-webkit-text-security')), 'disc');

  // A wrong token is refused plainly, with the registry's code.
  await tokenInput.fill('not-a-real-token');
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
  // Enter while an input method is composing sends nothing; a plain Enter sends.
  const composer = page.getByTestId('composer-input');
  await composer.fill(PLAINTEXT);
  await composer.dispatchEvent('keydown', { key: 'Enter', code: 'Enter', isComposing: true, bubbles: true, cancelable: true });
  assert.equal(await composer.inputValue(), PLAINTEXT);
  assert.equal(await page.getByTestId('exchange').count(), 0);
  await composer.press('Enter');
  const first = page.getByTestId('exchange').nth(0);
  await first.locator('[data-testid="message-reply"][data-status="done"]').waitFor();
  const answer = JSON.parse((await first.getByTestId('reply-body').textContent()) ?? '');
  assert.deepEqual(answer, { agent: 'bob', echo: { capability: 'echo', message: PLAINTEXT } });

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
  // The grant named the echo agent's capabilities, so its ACL refuses this one.
  assert.equal(await third.getByTestId('message-error').getAttribute('data-code'), 'acl_denied');

  const shot = join(artifacts, 'web-ui-chat.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  // End-to-end encrypted: the relay saw neither the message nor the seed.
  assert.ok(browser.frames.sent > 0 && browser.frames.received > 0, 'the relay traffic was captured');
  await assertNeverSent(browser, Buffer.from(PLAINTEXT), 'the plaintext of a message');
  await assertNeverSent(browser, await seedBytes(page), 'the seed');
  assert.deepEqual(browser.problems, []);
});

test("another browser agent chats with this one once its own ACL allows it, and the person answers", async () => {
  const alice = opened[0];
  assert.ok(alice, 'the first test opened the first browser');
  const aliceId = await alice.page.getByTestId('status-agent-id').getAttribute('data-agent-id');

  // The first browser's card: capability `chat`, in the user's personal group.
  const me = await api(demo.url, demo.token, '/users/me');
  const personal = me.groups.find((g) => g.personal);
  const card = await api(demo.url, demo.token, `/agents/${aliceId}`);
  assert.equal(card.group_id, personal.id);
  assert.deepEqual(card.capabilities.map((c) => c.name), ['chat']);
  assert.equal(card.name, `${me.user.login} (browser ${aliceId.slice(0, 6)})`);

  const carol = await openBrowser(chromium, 'carol');
  opened.push(carol);
  const carolId = await login(carol.page, demo.url, demo.token);
  assert.notEqual(carolId, aliceId, 'each browser profile has its own agent');

  // Carol writes before any rule lets her: the first browser's own ACL refuses it.
  const target = carol.page.locator(`[data-testid="agent-item"][data-agent-id="${aliceId}"]`);
  await target.and(carol.page.locator('[data-online="true"]')).waitFor();
  await target.getByTestId('agent-select').click();
  assert.equal(await carol.page.getByTestId('composer-capability').inputValue(), 'chat');
  await carol.page.getByTestId('composer-input').fill('knock knock');
  await carol.page.getByTestId('composer-send').click();
  const denied = carol.page.getByTestId('exchange').nth(0);
  await denied.locator('[data-testid="message-reply"][data-status="error"]').waitFor();
  assert.equal(await denied.getByTestId('message-error').getAttribute('data-code'), 'acl_denied');

  // The person lets Carol chat with them, and waits until their browser's ACL sync has the rule.
  const from = alice.page.locator(`[data-testid="agent-item"][data-agent-id="${carolId}"]`);
  await from.getByTestId('agent-select').click();
  assert.equal(await alice.page.getByTestId('incoming').count(), 0, 'the refused message reached nobody');
  await alice.page.getByTestId('allow-chat').click();
  await alice.page.locator('[data-testid="chat-allowed"][data-active="true"]').waitFor();

  // Now Carol's message reaches the person, who answers it.
  await carol.page.getByTestId('composer-input').fill('are you there, person?');
  await carol.page.getByTestId('composer-send').click();
  const incoming = alice.page.locator('[data-testid="incoming"][data-status="waiting"]');
  await incoming.waitFor();
  assert.equal(await incoming.getByTestId('incoming-body').textContent(), 'are you there, person?');
  // The seconds tick for the eyes only; screen readers get one fixed sentence.
  assert.equal(await incoming.locator('[data-testid="incoming-countdown"] > [aria-hidden="true"]').count(), 1);
  await incoming.getByTestId('incoming-reply-input').fill('yes, a human here');
  await incoming.getByTestId('incoming-reply-send').click();
  await alice.page.locator('[data-testid="incoming"][data-status="answered"]').waitFor();
  // The answer form is gone: the keyboard is back in the composer.
  assert.equal(await alice.page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'composer-input');

  // Carol sees the person's answer.
  const exchange = carol.page.getByTestId('exchange').nth(1);
  await exchange.locator('[data-testid="message-reply"][data-status="done"]').waitFor();
  assert.equal(await exchange.getByTestId('reply-body').textContent(), 'yes, a human here');

  await alice.page.screenshot({ path: join(artifacts, 'web-ui-incoming.png'), fullPage: true });
  await assertNeverSent(carol, Buffer.from('are you there, person?'), 'the plaintext of a message');
  await assertNeverSent(alice, Buffer.from('yes, a human here'), 'the plaintext of an answer');
  await assertNeverSent(carol, await seedBytes(carol.page), 'the seed');
  assert.deepEqual(carol.problems, []);
  assert.deepEqual(alice.problems, []);
});

test('a second tab of the same profile waits until "Use it here" takes the agent over', async () => {
  const [alice] = opened;
  assert.ok(alice, 'the first test opened the first browser');
  const aliceId = await alice.page.getByTestId('status-agent-id').getAttribute('data-agent-id');
  const online = (page) => page.locator('[data-testid="status-link"][data-state="online"]');

  // The same browser context: the same IndexedDB (token and seed) and the same Web Locks.
  const tab = await alice.context.newPage();
  const problems = [];
  tab.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await tab.goto(`${demo.url}/`);
  await tab.getByText('This agent is open in another tab').waitFor();
  assert.equal(await tab.getByTestId('status-agent-id').count(), 0, 'the second tab did not connect as the agent');
  assert.equal(await alice.page.getByTestId('status-link').getAttribute('data-state'), 'online');

  // "Use it here": the second tab is the agent now; the first one closed its agent and says so.
  await tab.getByRole('button', { name: 'Use it here' }).click();
  await online(tab).waitFor();
  assert.equal(await tab.getByTestId('status-agent-id').getAttribute('data-agent-id'), aliceId);
  await alice.page.getByText('This agent is open in another tab').waitFor();
  await alice.page.getByRole('button', { name: 'Use it here' }).waitFor();

  // Reloading the agent's tab hands the agent over to the reloaded page.
  await tab.reload();
  await online(tab).waitFor();
  assert.equal(await alice.page.getByTestId('elsewhere').count(), 1);

  // And back to the first tab, which the next test logs out.
  await alice.page.getByRole('button', { name: 'Use it here' }).click();
  await online(alice.page).waitFor();
  await tab.getByText('This agent is open in another tab').waitFor();
  await tab.close();
  assert.deepEqual(problems, []);
  assert.deepEqual(alice.problems, []);
});

test('logging out clears the session, forgets the token and takes the agent offline', async () => {
  const [alice, carol] = opened;
  assert.ok(alice && carol, 'the tests before opened both browsers');
  const aliceId = await alice.page.getByTestId('status-agent-id').getAttribute('data-agent-id');
  const seed = await seedBytes(alice.page);

  await alice.page.getByTestId('logout').click();
  await alice.page.getByTestId('login-token-input').waitFor();
  assert.equal(await alice.page.getByTestId('user-login').count(), 0, 'no "Signed in as" after logout');
  assert.equal(await alice.page.getByTestId('status-agent-id').count(), 0);
  assert.equal(await alice.page.getByTestId('status-user').textContent(), '—');
  assert.equal(await alice.page.getByTestId('status-link').getAttribute('data-state'), 'none');
  assert.equal(await alice.page.getByTestId('agent-list').count(), 0);
  assert.equal(await alice.page.getByTestId('login-token-input').inputValue(), '');
  // The token is gone from the browser; the agent's key stays for the next login of this user.
  const stored = await storedEntries(alice.page);
  assert.deepEqual(stored.map(([key]) => key), [`seed:${(await api(demo.url, demo.token, '/users/me')).user.id}`]);
  assert.ok(Buffer.from(stored[0][1]).equals(seed));
  assert.ok(!(await alice.page.content()).includes(demo.token), 'the token is not in the page');

  // The agent left the relay: the other browser's discovery shows it offline.
  await carol.page.locator(`[data-testid="agent-item"][data-agent-id="${aliceId}"][data-online="false"]`).waitFor();
  assert.deepEqual(alice.problems, []);
});

test('device flow login: the code and the URL are shown, approval logs the new user in', async () => {
  const github = await startListening('github-standin', process.execPath, [
    join(repo, 'tests', 'support', 'github-standin.mjs'),
    '--interval-ms', '0', '--client-id', 'e2e-client', '--client-secret', 'e2e-secret',
  ]);
  servers.push(github);
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-mesh-e2e-server-'));
  const secretFile = join(dataDir, 'oauth-secret');
  writeFileSync(secretFile, 'e2e-secret\n', { mode: 0o600 });
  const server = await startListening('agent-mesh-server', binary('agent-mesh-server'), [
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
