// The web UI's controller (app/src/controller.ts) outside the browser: sessions (token and device
// logins, logout, a second login, late answers of older ones), incoming chat requests (the 60 s
// timeout, replies reaching the right sender, the per-sender limit, refusals sent before the agent
// closes), discovery and grants (ordering, failures), remembered tokens, revoked keys, the bounds
// on what a conversation keeps, and one tab per agent (Web Locks: a second tab waits, a take-over,
// logout). The registry is a scripted fetch (fakes.ts); the incoming-chat timeout and the logout
// refusal go through a real MeshAgent and the in-process FakeRelay.
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MeshError } from '../../client/src/errors.js';
import { Identity } from '../../client/src/identity.js';
import { MeshAgent, MeshClient, type WebSocketConstructor } from '../../client/src/mesh.js';
import type { AgentCardResource } from '../../client/src/registry.js';
import { FakeRelay } from '../../client/test/fake_relay.js';
import {
  Controller,
  MAX_CONVERSATION_ITEMS,
  MAX_SHOWN_CHUNKS,
  MAX_WAITING_PER_SENDER,
  NO_SESSION,
  agentLockName,
  relayFor,
  safeVerificationUri,
  type ConversationItem,
  type ControllerOptions,
  type IncomingItem,
  type OutgoingItem,
  type VisibilitySource,
} from '../src/controller.js';
import { showBody } from '../src/format.js';
import { FakeLocks, FakeRegistry, MemoryStore, fakeAgents, settle, until, user } from './fakes.js';

const WS = WebSocket as unknown as WebSocketConstructor;
const ADA_SEED = new Uint8Array(32).fill(0x0a);
const adaBrowser = Identity.fromSeed(ADA_SEED).agentId;
const bob = Identity.fromSeed(new Uint8Array(32).fill(0xb0));
const carol = Identity.fromSeed(new Uint8Array(32).fill(0xc0));
const echoId = Identity.fromSeed(new Uint8Array(32).fill(0xe0)).agentId;
const ADA_GROUP = '11111111-1111-4111-8111-111111111111';
const BEA_GROUP = '22222222-2222-4222-8222-222222222222';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function setup(options: Partial<ControllerOptions> = {}) {
  const registry = new FakeRegistry();
  registry.addUser('tok-ada', user('u1', 'ada', ADA_GROUP));
  registry.addUser('tok-bea', user('u2', 'bea', BEA_GROUP));
  const store = new MemoryStore();
  store.seeds.set('u1', ADA_SEED);
  const fakes = fakeAgents();
  const controller = new Controller({
    registry: registry.client(),
    page: { protocol: 'http:', host: 'registry.test' },
    store,
    createAgent: fakes.create,
    discoveryIntervalMs: 60_000,
    devicePollMinMs: 10,
    locks: new FakeLocks(),
    ...options,
  });
  cleanups.push(() => controller.logout());
  return { registry, store, controller, agents: fakes.agents };
}

/** Another tab of the same browser profile: the same registry, IndexedDB and locks, its own agents. */
function anotherTab(first: { registry: FakeRegistry; store: MemoryStore }, locks: FakeLocks | null, onCreate?: () => void) {
  const fakes = fakeAgents();
  const controller = new Controller({
    registry: first.registry.client(),
    page: { protocol: 'http:', host: 'registry.test' },
    store: first.store,
    createAgent: (identity, options) => {
      onCreate?.();
      return fakes.create(identity, options);
    },
    discoveryIntervalMs: 60_000,
    locks,
  });
  cleanups.push(() => controller.logout());
  return { controller, agents: fakes.agents };
}

/** An echo agent of ada's, in her personal group, that the browser may be granted access to. */
function addEcho(registry: FakeRegistry): void {
  registry.cards.set(echoId, {
    agent_id: echoId,
    group_id: ADA_GROUP,
    owner_id: 'u1',
    name: 'echo',
    capabilities: [{ name: 'echo' }],
    timestamp: 1,
    signature: 'x',
    registered_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    online: true,
  });
}

function allowChat(registry: FakeRegistry, source: string): void {
  registry.addRule({ group_id: ADA_GROUP, source, target: adaBrowser, allowed_capabilities: ['chat'] });
}

async function loggedIn(options: Partial<ControllerOptions> = {}, prepare?: (registry: FakeRegistry) => void) {
  const s = setup(options);
  prepare?.(s.registry);
  await s.controller.loginWithToken('tok-ada');
  await until(s.controller, (st) => st.phase === 'ready' && st.agentsLoaded, 'the session to be ready');
  return s;
}

function items(controller: Controller, agentId: string): readonly ConversationItem[] {
  return controller.state.conversations[agentId]?.items ?? [];
}

function grantedAt(controller: Controller): Map<string, unknown> {
  return (controller as unknown as { grantedAt: Map<string, unknown> }).grantedAt;
}

function echoCard(controller: Controller): AgentCardResource {
  const card = controller.state.agents.find((a) => a.agent_id === echoId);
  if (!card) throw new Error('the echo agent is not in discovery');
  return card;
}

/** A controller whose agent is a real MeshAgent on an in-process relay, and a caller there. */
async function onRelay(options: Partial<ControllerOptions> = {}) {
  const relay = await FakeRelay.start();
  cleanups.push(() => relay.stop());
  const s = setup({
    page: { protocol: 'http:', host: new URL(relay.url).host },
    createAgent: (identity, agentOptions) => new MeshAgent(identity, { ...agentOptions, WebSocket: WS }),
    ...options,
  });
  s.registry.relayUrl = relay.url;
  allowChat(s.registry, bob.agentId);
  await s.controller.loginWithToken('tok-ada');
  await until(s.controller, (st) => st.link.state === 'online' && st.ownRules.length === 1, 'online, with the rule letting bob chat');
  const caller = new MeshClient(bob, { relayUrl: relay.url, WebSocket: WS });
  cleanups.push(() => caller.close());
  await caller.waitOnline();
  return { ...s, caller };
}

function failure(promise: Promise<unknown>): Promise<MeshError> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => {
      if (!(e instanceof MeshError)) throw e;
      return e;
    },
  );
}

describe('incoming chat requests', () => {
  it('an unanswered chat fails with timeout for the caller after the (injected) 60 s', async () => {
    const { controller, caller } = await onRelay({ incomingTimeoutMs: 300 });
    const started = Date.now();
    const error = await failure(caller.request(adaBrowser, 'chat', { message: 'anyone there?' }, { timeoutMs: 15_000 }));
    expect(error.code).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(5_000);
    const [item] = items(controller, bob.agentId) as IncomingItem[];
    expect(item).toMatchObject({ kind: 'in', from: bob.agentId, status: 'timeout', body: { text: 'anyone there?', json: false } });
    // Too late: the answer goes nowhere.
    expect(controller.reply(bob.agentId, item!.id, 'sorry, late')).toBe(false);
  });

  it("the person's answer is the response", async () => {
    const { controller, caller } = await onRelay();
    const answer = caller.request(adaBrowser, 'chat', { message: 'hi' }, { timeoutMs: 15_000 });
    const state = await until(controller, (s) => items(controller, bob.agentId).length === 1, 'the incoming chat');
    expect(state.unread[bob.agentId]).toBe(1);
    const item = items(controller, bob.agentId)[0]!;
    expect(controller.reply(bob.agentId, item.id, 'hello, bob')).toBe(true);
    expect(await answer).toEqual({ message: 'hello, bob' });
  });

  it('logging out refuses the waiting chats before the agent closes: the caller hears unreachable at once', async () => {
    const { controller, caller } = await onRelay();
    const refused = failure(caller.request(adaBrowser, 'chat', { message: 'still there?' }, { timeoutMs: 15_000 }));
    await until(controller, () => items(controller, bob.agentId).length === 1, 'the incoming chat');
    const started = Date.now();
    await controller.logout();
    const error = await refused;
    expect(error.code).toBe('unreachable');
    expect(error.message).toMatch(/logged out/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('a reply reaches the request it answers even when another sender reuses the request ID', async () => {
    const { controller, agents } = await loggedIn({}, (registry) => {
      allowChat(registry, bob.agentId);
      allowChat(registry, carol.agentId);
    });
    await until(controller, (s) => s.ownRules.length === 2, 'both rules synced');
    const agent = agents[0]!;
    const fromBob = agent.deliver(bob.agentId, 'same-id', { message: 'from bob' });
    const fromCarol = agent.deliver(carol.agentId, 'same-id', { message: 'from carol' });
    await until(controller, () => items(controller, bob.agentId).length === 1 && items(controller, carol.agentId).length === 1, 'both chats');
    const bobItem = items(controller, bob.agentId)[0] as IncomingItem;
    const carolItem = items(controller, carol.agentId)[0] as IncomingItem;
    expect(bobItem.callId).toBe('same-id');
    expect(carolItem.callId).toBe('same-id');
    expect(bobItem.id).not.toBe(carolItem.id);

    // An item of Carol's is not Bob's to answer.
    expect(controller.reply(bob.agentId, carolItem.id, 'wrong')).toBe(false);
    expect(controller.reply(bob.agentId, bobItem.id, 'hi bob')).toBe(true);
    expect(await fromBob).toEqual({ sent: 'response', body: { message: 'hi bob' } });
    expect((items(controller, carol.agentId)[0] as IncomingItem).status).toBe('waiting');
    expect(controller.reply(carol.agentId, carolItem.id, 'hi carol')).toBe(true);
    expect(await fromCarol).toEqual({ sent: 'response', body: { message: 'hi carol' } });
  });

  it("an earlier request's abort does not touch a later one with the same ID", async () => {
    const { controller, agents } = await loggedIn({}, (registry) => allowChat(registry, bob.agentId));
    await until(controller, (s) => s.ownRules.length === 1, 'the rule synced');
    const agent = agents[0]!;
    const firstSignal = new AbortController();
    const first = agent.deliver(bob.agentId, 'x', { message: 'one' }, firstSignal);
    await until(controller, () => items(controller, bob.agentId).length === 1, 'the first chat');
    controller.reply(bob.agentId, items(controller, bob.agentId)[0]!.id, 'answer one');
    expect(await first).toEqual({ sent: 'response', body: { message: 'answer one' } });

    const second = agent.deliver(bob.agentId, 'x', { message: 'two' });
    await until(controller, () => items(controller, bob.agentId).length === 2, 'the second chat');
    firstSignal.abort();
    const secondItem = items(controller, bob.agentId)[1] as IncomingItem;
    expect(secondItem.status).toBe('waiting');
    expect(controller.reply(bob.agentId, secondItem.id, 'answer two')).toBe(true);
    expect(await second).toEqual({ sent: 'response', body: { message: 'answer two' } });
  });

  it(`more than ${MAX_WAITING_PER_SENDER} waiting chats from one sender are refused rate_limited; others still get through`, async () => {
    const { controller, agents } = await loggedIn({}, (registry) => {
      allowChat(registry, bob.agentId);
      allowChat(registry, carol.agentId);
    });
    await until(controller, (s) => s.ownRules.length === 2, 'both rules synced');
    const agent = agents[0]!;
    for (let i = 0; i < MAX_WAITING_PER_SENDER; i++) void agent.deliver(bob.agentId, `b${i}`, { message: `${i}` });
    expect(await agent.deliver(bob.agentId, 'one-too-many', { message: 'more' })).toEqual({ sent: 'error', code: 'rate_limited' });
    expect(items(controller, bob.agentId)).toHaveLength(MAX_WAITING_PER_SENDER);
    void agent.deliver(carol.agentId, 'c0', { message: 'hello' });
    await until(controller, () => items(controller, carol.agentId).length === 1, "carol's chat");
    // Answering one makes room for the next.
    controller.reply(bob.agentId, items(controller, bob.agentId)[0]!.id, 'ok');
    void agent.deliver(bob.agentId, 'b-next', { message: 'next' });
    await until(controller, () => items(controller, bob.agentId).length === MAX_WAITING_PER_SENDER + 1, "bob's next chat");
  });

  it('chats from agents no rule allows are refused acl_denied and leave no trace', async () => {
    const { controller, agents } = await loggedIn();
    expect(await agents[0]!.deliver(carol.agentId, 'c1', { message: 'let me in' })).toEqual({ sent: 'error', code: 'acl_denied' });
    expect(controller.state.conversations).toEqual({});
  });
});

describe('sessions', () => {
  it('logout clears the session, the token and the credentials, refuses waiting chats, then closes the agent', async () => {
    const { controller, agents, registry, store } = await loggedIn({}, (r) => {
      addEcho(r);
      allowChat(r, bob.agentId);
    });
    await until(controller, (s) => s.ownRules.length === 1, 'the rule synced');
    const agent = agents[0]!;
    const echo = echoCard(controller);
    expect(await controller.grantAccess(echo)).toBe(true);
    await controller.send(echoId, 'echo', 'request', { message: 'hi' });
    controller.select(echoId);
    const waiting = agent.deliver(bob.agentId, 'w1', { message: 'wait for me' });
    await until(controller, () => items(controller, bob.agentId).length === 1, 'the incoming chat');
    expect(store.token).toBe('tok-ada');
    expect(JSON.stringify(controller.state)).not.toContain('tok-ada');
    expect(grantedAt(controller).size).toBe(1);

    const callsBefore = registry.calls.length;
    await controller.logout();
    // The refusal was sent: the agent waited for it before closing (a reply on an aborted call is dropped).
    expect(await waiting).toEqual({ sent: 'error', code: 'unreachable' });
    expect(agent.closes).toEqual([{ graceMs: 1000 }]);
    const state = controller.state;
    // Everything of the session is gone (NO_SESSION: no agent ID, rules, conversations, …).
    expect(state).toMatchObject({ ...NO_SESSION, phase: 'login', loginBusy: false });
    expect(state.conversations).toEqual({});
    for (const key of ['me', 'agentId', 'selected', 'device', 'loginError'] as const) {
      expect(state[key], key).toBeUndefined();
    }
    expect(store.token).toBeUndefined();
    expect(store.seeds.get('u1')).toEqual(ADA_SEED); // this browser's key stays for the next login
    expect(grantedAt(controller).size).toBe(0);

    // Nothing of the session is left to use: no call goes out with the old token.
    await controller.refresh();
    expect(await controller.grantAccess(echo)).toBe(false);
    await controller.send(echoId, 'echo', 'request', { message: 'after logout' });
    expect(registry.calls.slice(callsBefore).filter((c) => c.auth === 'Bearer tok-ada')).toEqual([]);
    expect(controller.state.conversations).toEqual({});
  });

  it('a second login stops the first agent before the next one starts', async () => {
    const { controller, agents } = await loggedIn();
    await controller.send(adaBrowser, 'chat', 'request', { message: 'note to self' });
    await controller.loginWithToken('tok-bea');
    await until(controller, (s) => s.phase === 'ready' && s.me?.user.login === 'bea', 'bea logged in');
    expect(agents).toHaveLength(2);
    expect(agents[0]!.closes).toEqual([{ graceMs: 1000 }]);
    expect(agents[1]!.closed).toBe(false);
    expect(controller.state.agentId).toBe(agents[1]!.identity.agentId);
    expect(controller.state.conversations).toEqual({});
  });

  it('a token login cancels a device login still polling: its late approval logs nobody in', async () => {
    const { controller, registry, agents } = setup();
    await controller.start();
    expect(controller.state.phase).toBe('login');
    registry.deviceToken = 'tok-bea';
    const poll = registry.hold('POST', '/oauth/token');
    const device = controller.startDeviceLogin();
    await poll.reached; // approved, the answer in flight
    expect(controller.state.device?.userCode).toBe('ABCD-EFGH');
    await controller.loginWithToken('tok-ada');
    expect(controller.state.device).toBeUndefined();
    poll.release();
    await device;
    await settle(50);
    expect(controller.state.me?.user.login).toBe('ada');
    expect(controller.state.phase).toBe('ready');
    expect(agents).toHaveLength(1);
    expect(registry.count('POST', '/oauth/token')).toBe(1);
  });

  it('logout stops a device login', async () => {
    const { controller, registry } = setup();
    await controller.start();
    const device = controller.startDeviceLogin();
    await until(controller, (s) => s.device !== undefined, 'the device code');
    await controller.logout();
    await device;
    const polls = registry.count('POST', '/oauth/token');
    registry.deviceToken = 'tok-bea';
    await settle(60);
    expect(registry.count('POST', '/oauth/token')).toBe(polls);
    expect(controller.state.me).toBeUndefined();
    expect(controller.state.device).toBeUndefined();
  });

  it('a late answer of an older login is dropped', async () => {
    const { controller, registry, agents } = setup();
    const me = registry.hold('GET', '/users/me');
    const first = controller.loginWithToken('tok-ada');
    await me.reached;
    await controller.loginWithToken('tok-bea');
    me.release();
    await first;
    expect(controller.state.me?.user.login).toBe('bea');
    expect(agents).toHaveLength(1);
  });

  it('a logout during registration starts no agent', async () => {
    const { controller, registry, agents } = setup();
    const registration = registry.hold('POST', '/agents');
    const login = controller.loginWithToken('tok-ada');
    await registration.reached;
    await controller.logout();
    registration.release();
    await login;
    expect(agents).toHaveLength(0);
    expect(controller.state.phase).toBe('login');
    expect(controller.state.agentId).toBeUndefined();
    expect(controller.state.me).toBeUndefined();
  });

  it('a grant answered after logout leaves nothing behind', async () => {
    const { controller, registry } = await loggedIn({}, addEcho);
    const echo = echoCard(controller);
    const held = registry.hold('POST', '/acl');
    const granted = controller.grantAccess(echo);
    await held.reached;
    await controller.logout();
    held.release();
    expect(await granted).toBe(false);
    expect(controller.state.rules).toEqual([]);
    expect(controller.state.granting).toEqual({});
    expect(controller.state.notice).toBeUndefined();
    expect(grantedAt(controller).size).toBe(0);
  });

  it('a failed registration clears the signed-in user', async () => {
    const { controller, registry, store } = setup();
    registry.scripted.set('POST /agents', [{ status: 500, body: { error: { code: 'internal', message: 'the database is down' } } }]);
    await controller.loginWithToken('tok-ada');
    expect(controller.state.phase).toBe('login');
    expect(controller.state.me).toBeUndefined();
    expect(controller.state.agentId).toBeUndefined();
    expect(controller.state.loginError).toEqual({ code: 'internal', message: 'registering this browser as an agent failed: the database is down' });
    expect(store.token).toBe('tok-ada'); // the token itself is fine
  });

  it('a revoked key is explained, and a new key registers a new agent', async () => {
    const { controller, registry, store, agents } = setup();
    registry.revokedAgents.add(adaBrowser);
    await controller.loginWithToken('tok-ada');
    expect(controller.state.phase).toBe('login');
    expect(controller.state.keyRevoked).toBe(true);
    expect(controller.state.me).toBeUndefined();
    expect(controller.state.loginError?.code).toBe('revoked');
    expect(controller.state.loginError?.message).toContain(adaBrowser);
    expect(agents).toHaveLength(0);

    await controller.makeNewKey();
    await until(controller, (s) => s.phase === 'ready', 'the new agent');
    const newId = controller.state.agentId!;
    expect(newId).not.toBe(adaBrowser);
    expect(controller.state.keyRevoked).toBe(false);
    expect(controller.state.me?.user.login).toBe('ada');
    expect(store.seeds.get('u1')).not.toEqual(ADA_SEED);
    expect(registry.cards.get(newId)?.name).toBe(`ada (browser ${newId.slice(0, 6)})`);
    expect(agents).toHaveLength(1);
  });
});

describe('the remembered token', () => {
  const cases: { what: string; answer: { status: number; code: string } | Error; kept: boolean }[] = [
    { what: 'unauthorized', answer: { status: 401, code: 'unauthorized' }, kept: false },
    { what: 'forbidden (the admin token)', answer: { status: 403, code: 'forbidden' }, kept: false },
    { what: 'a 5xx', answer: { status: 500, code: 'internal' }, kept: true },
    { what: 'a 503', answer: { status: 503, code: 'unreachable' }, kept: true },
    { what: 'a gateway timeout', answer: { status: 504, code: 'timeout' }, kept: true },
    { what: 'no answer at all', answer: new TypeError('fetch failed'), kept: true },
  ];
  for (const { what, answer, kept } of cases) {
    it(`is ${kept ? 'kept' : 'forgotten'} when the registry answers ${what}`, async () => {
      const { controller, registry, store } = setup();
      store.token = 'tok-ada';
      registry.scripted.set(
        'GET /users/me',
        answer instanceof Error ? [answer] : [{ status: answer.status, body: { error: { code: answer.code, message: 'no' } } }],
      );
      await controller.start();
      expect(controller.state.phase).toBe('login');
      expect(controller.state.loginError?.code).toBe(answer instanceof Error ? 'unreachable' : answer.code);
      expect(store.token).toBe(kept ? 'tok-ada' : undefined);
      expect(controller.state.loginRetry).toBe(kept);
      if (kept) {
        await controller.retry();
        expect(controller.state.phase).toBe('ready');
        expect(controller.state.me?.user.login).toBe('ada');
      }
    });
  }
});

describe('one tab per agent (Web Locks)', () => {
  const ADA_LOCK = agentLockName('u1');

  it('a second tab of the same user waits: it says the agent is open elsewhere and makes no agent', async () => {
    const locks = new FakeLocks();
    const first = await loggedIn({ locks });
    const cardsBefore = first.registry.count('POST', '/agents');
    const second = anotherTab(first, locks);
    await second.controller.start();
    expect(second.controller.state.phase).toBe('elsewhere');
    expect(second.controller.state.me?.user.login).toBe('ada');
    expect(second.controller.state.agentId).toBeUndefined();
    expect(second.agents).toHaveLength(0);
    expect(first.registry.count('POST', '/agents')).toBe(cardsBefore);
    expect(first.controller.state.phase).toBe('ready');
    expect(first.agents[0]!.closed).toBe(false);
    // Another user in the same profile is an agent of their own.
    const bea = anotherTab(first, locks);
    await bea.controller.loginWithToken('tok-bea');
    expect(bea.controller.state.phase).toBe('ready');
  });

  it("taking over closes the first tab's agent (refusing its waiting chats) before the new one dials", async () => {
    const locks = new FakeLocks();
    const first = await loggedIn({ locks }, (r) => allowChat(r, bob.agentId));
    await until(first.controller, (s) => s.ownRules.length === 1, 'the rule synced');
    const firstAgent = first.agents[0]!;
    const waiting = firstAgent.deliver(bob.agentId, 'w1', { message: 'are you there?' });
    await until(first.controller, () => items(first.controller, bob.agentId).length === 1, 'the incoming chat');

    const closedWhenDialing: boolean[] = [];
    const second = anotherTab(first, locks, () => closedWhenDialing.push(firstAgent.closeFinished));
    await second.controller.start();
    expect(second.controller.state.phase).toBe('elsewhere');
    await second.controller.useHere();
    expect(second.controller.state.phase).toBe('ready');
    expect(second.controller.state.agentId).toBe(adaBrowser);
    expect(closedWhenDialing).toEqual([true]);

    expect(await waiting).toEqual({ sent: 'error', code: 'unreachable' });
    expect(firstAgent.closes).toEqual([{ graceMs: 1000 }]);
    expect(first.controller.state).toMatchObject({ ...NO_SESSION, phase: 'elsewhere' });
    expect(first.controller.state.me?.user.login).toBe('ada');

    // And back: the first tab takes it over again.
    await first.controller.useHere();
    expect(first.controller.state.phase).toBe('ready');
    expect(first.agents).toHaveLength(2);
    expect(second.agents[0]!.closes).toEqual([{ graceMs: 1000 }]);
    expect(second.controller.state.phase).toBe('elsewhere');
  });

  it('logging out lets go of the agent: the next tab to log in is the agent', async () => {
    const locks = new FakeLocks();
    const first = await loggedIn({ locks });
    const second = anotherTab(first, locks);
    await second.controller.start();
    expect(second.controller.state.phase).toBe('elsewhere');
    await first.controller.logout();
    expect(locks.held(ADA_LOCK)).toBe(false);
    expect(locks.held(`${ADA_LOCK}:link`)).toBe(false);
    first.store.token = 'tok-ada';
    const third = anotherTab(first, locks);
    await third.controller.start();
    expect(third.controller.state.phase).toBe('ready');
    expect(locks.held(ADA_LOCK)).toBe(true);
    // Logging out of a waiting tab takes nothing from the agent's tab.
    await second.controller.logout();
    expect(second.controller.state.phase).toBe('login');
    expect(third.controller.state.phase).toBe('ready');
    expect(third.agents[0]!.closed).toBe(false);
  });

  it('without Web Locks both tabs connect, as before', async () => {
    const first = await loggedIn({ locks: null });
    const second = anotherTab(first, null);
    await second.controller.start();
    expect(second.controller.state.phase).toBe('ready');
    expect(first.controller.state.phase).toBe('ready');
  });
});

describe('discovery and grants', () => {
  it('a discovery answer from before a grant does not drop the new rule', async () => {
    const { controller, registry } = await loggedIn({}, addEcho);
    const echo = echoCard(controller);
    const held = registry.hold('GET', '/acl');
    const refreshing = controller.refresh();
    await held.reached; // this answer predates the grant
    expect(await controller.grantAccess(echo)).toBe(true);
    expect(controller.mayCall(echoId, 'echo')).toBe(true);
    held.release();
    await refreshing;
    expect(controller.mayCall(echoId, 'echo')).toBe(true);
    expect(controller.state.rules.filter((r) => r.target === echoId)).toHaveLength(1);
    expect(registry.count('POST', '/acl')).toBe(1);
  });

  it('refreshes never overlap, and the newest answer is the one that stays', async () => {
    const { controller, registry } = await loggedIn();
    const before = registry.count('GET', '/agents');
    const held = registry.hold('GET', '/agents');
    const first = controller.refresh();
    await held.reached;
    addEcho(registry); // the registry changes while the first answer is in flight
    const second = controller.refresh();
    const third = controller.refresh();
    expect(registry.count('GET', '/agents')).toBe(before + 1);
    held.release();
    await Promise.all([first, second, third]);
    expect(registry.count('GET', '/agents')).toBe(before + 2);
    expect(controller.state.agents.map((a) => a.agent_id)).toContain(echoId);
  });

  it('a failed grant records nothing and says why', async () => {
    const { controller, registry } = await loggedIn({}, addEcho);
    registry.scripted.set('POST /acl', [{ status: 403, body: { error: { code: 'forbidden', message: 'not yours' } } }]);
    expect(await controller.grantAccess(echoCard(controller))).toBe(false);
    expect(grantedAt(controller).size).toBe(0);
    expect(controller.state.notice).toEqual({ code: 'forbidden', message: 'granting access failed: not yours' });
    expect(controller.state.granting).toEqual({});
    expect(controller.mayCall(echoId)).toBe(false);
  });

  it('discovery pauses while the page is hidden and refreshes when it is shown', async () => {
    const listeners: (() => void)[] = [];
    const visibility: VisibilitySource & { hidden: boolean } = {
      hidden: true,
      addEventListener: (_type, listener) => listeners.push(listener),
    };
    const { controller, registry } = setup({ visibility });
    await controller.loginWithToken('tok-ada');
    expect(controller.state.phase).toBe('ready');
    await settle(30);
    expect(registry.count('GET', '/agents')).toBe(0);
    visibility.hidden = false;
    for (const l of listeners) l();
    await until(controller, (s) => s.agentsLoaded, 'the list');
    expect(registry.count('GET', '/agents')).toBe(1);
  });

  it('failing discovery backs off and keeps the last list, marked stale', async () => {
    const { controller, registry } = await loggedIn({ discoveryIntervalMs: 20 }, addEcho);
    const updatedAt = controller.state.agentsUpdatedAt;
    expect(updatedAt).toBeDefined();
    registry.scripted.set('GET /agents', Array.from({ length: 50 }, () => ({ status: 503, body: { error: { code: 'unreachable', message: 'down' } } })));
    const before = registry.count('GET', '/agents');
    await until(controller, (s) => s.agentsError !== undefined, 'the failure');
    await settle(400);
    // 20 ms apart without backoff would be ~20 more; doubling from 40 ms gives a handful.
    expect(registry.count('GET', '/agents') - before).toBeLessThanOrEqual(6);
    expect(controller.state.agentsError?.code).toBe('unreachable');
    expect(controller.state.agents.map((a) => a.agent_id)).toContain(echoId);
    expect(controller.state.agentsUpdatedAt).toBe(updatedAt);
  });
});

describe('bounded conversations', () => {
  it(`a long stream keeps the last ${MAX_SHOWN_CHUNKS} chunks and counts all`, async () => {
    const { controller, agents } = await loggedIn();
    agents[0]!.onStream = async function* () {
      for (let seq = 0; seq < 500; seq++) yield { seq };
    };
    await controller.send(echoId, 'count', 'stream', {});
    const [item] = items(controller, echoId) as OutgoingItem[];
    expect(item!.status).toBe('done');
    expect(item!.chunkCount).toBe(500);
    expect(item!.chunks).toHaveLength(MAX_SHOWN_CHUNKS);
    expect(item!.chunks[0]).toEqual({ text: `{"seq":${500 - MAX_SHOWN_CHUNKS}}`, json: true });
    expect(item!.chunks[MAX_SHOWN_CHUNKS - 1]).toEqual({ text: '{"seq":499}', json: true });
  });

  it(`a conversation keeps ${MAX_CONVERSATION_ITEMS} messages and counts the hidden ones`, async () => {
    const { controller } = await loggedIn();
    const total = MAX_CONVERSATION_ITEMS + 25;
    for (let i = 0; i < total; i++) await controller.send(echoId, 'echo', 'request', { message: `m${i}` });
    const conversation = controller.state.conversations[echoId]!;
    expect(conversation.items).toHaveLength(MAX_CONVERSATION_ITEMS);
    expect(conversation.hidden).toBe(25);
    expect(conversation.items[0]!.body.text).toBe('m25');
    expect((conversation.items[0] as OutgoingItem).response).toEqual({ text: '{"echo":{"message":"m25"}}', json: true });
  });
});

describe('helpers', () => {
  it('links a device-flow verification URI only when it is https or the loopback stand-in', () => {
    expect(safeVerificationUri('https://github.com/login/device')).toBe(true);
    expect(safeVerificationUri('http://127.0.0.1:4567/login/device')).toBe(true);
    expect(safeVerificationUri('http://localhost:4567/login/device')).toBe(true);
    expect(safeVerificationUri('http://example.com/login/device')).toBe(false);
    expect(safeVerificationUri('javascript:alert(1)')).toBe(false);
    expect(safeVerificationUri('data:text/html,hi')).toBe(false);
    expect(safeVerificationUri('https://user:pw@github.com/')).toBe(false);
    expect(safeVerificationUri('not a url')).toBe(false);
    expect(safeVerificationUri(undefined)).toBe(false);
  });

  it('shows a lone message, reply or text string as text and anything else as JSON', () => {
    expect(showBody({ message: 'hi' })).toEqual({ text: 'hi', json: false });
    expect(showBody({ reply: 'yo' })).toEqual({ text: 'yo', json: false });
    expect(showBody({ message: 'hi', extra: 1 })).toEqual({ text: '{"message":"hi","extra":1}', json: true });
    expect(showBody({ message: 3 })).toEqual({ text: '{"message":3}', json: true });
    expect(showBody('plain')).toEqual({ text: 'plain', json: false });
    expect(showBody(null)).toEqual({ text: 'null', json: true });
  });

  it("reaches the relay on the page's own origin", () => {
    const info = { version: '', relay_url: 'ws://127.0.0.1:8080/relay/ws', oauth: false };
    expect(relayFor(info, { protocol: 'http:', host: '127.0.0.1:8080' })).toEqual({ url: 'ws://127.0.0.1:8080/relay/ws' });
    expect(relayFor(info, { protocol: 'http:', host: 'localhost:8080' })).toEqual({
      url: 'ws://localhost:8080/relay/ws',
      expectedRelayId: 'ws://127.0.0.1:8080/relay/ws',
    });
  });
});
