// Test doubles for the web UI's controller (app/src/controller.ts): a registry behind a scripted
// `fetch` (users, cards, discovery, rules, the agent's ACL long poll, the device flow), answers that
// can be held in flight to reorder them, an in-memory key store, a fake browser agent and an
// in-memory Web Locks API. The real registry and relay are exercised end to end by web/e2e.
import { MeshError } from '../../client/src/errors.js';
import type { Identity } from '../../client/src/identity.js';
import type { JsonValue } from '../../client/src/ijson.js';
import type { Handler, IncomingCall, MeshAgentOptions, RequestOptions } from '../../client/src/mesh.js';
import { RegistryClient, type AclRule, type AgentCardResource, type Me } from '../../client/src/registry.js';
import type { AgentLike, AppState, Controller, LockManagerLike } from '../src/controller.js';
import type { KeyStore } from '../src/keystore.js';

/** A user whose personal group's ID is `groupId` (a UUID, as the registry checks). */
export function user(id: string, login: string, groupId: string): Me {
  return {
    user: { id, login, created_at: '2026-01-01T00:00:00Z' },
    groups: [{ id: groupId, name: login, role: 'owner', personal: true }],
  };
}

interface Answer {
  status: number;
  body?: unknown;
}

interface Hold {
  method: string;
  path: string;
  reached: () => void;
  gate: Promise<void>;
}

export interface HeldCall {
  /** Resolves when a matching request has been answered and is waiting at the gate. */
  reached: Promise<void>;
  /** Lets the answer through. */
  release: () => void;
}

function abortError(): Error {
  const error = new Error('The operation was aborted');
  error.name = 'AbortError';
  return error;
}

/** Resolves with `promise`, or rejects as fetch does when `signal` aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | null | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

export class FakeRegistry {
  readonly baseUrl = 'http://registry.test';
  relayUrl = 'ws://registry.test/relay/ws';
  readonly tokens = new Map<string, Me>();
  readonly cards = new Map<string, AgentCardResource>();
  readonly online = new Set<string>();
  readonly revokedAgents = new Set<string>();
  rules: AclRule[] = [];
  version = 1;
  /** Every call, in order. */
  readonly calls: { method: string; path: string; auth: string | undefined }[] = [];
  /** Forced answers for `GET /users/me` (status and error code), in order. */
  meFailures: Answer[] = [];
  /** Forced answers for a method and path, in order (then the normal answer). */
  readonly scripted = new Map<string, (Answer | Error)[]>();
  /** What `POST /oauth/token` answers next: pending, or approved with this token. */
  deviceToken: string | undefined;
  #holds: Hold[] = [];
  #versionWaiters = new Set<() => void>();
  #nextRule = 1;

  addUser(token: string, me: Me): void {
    this.tokens.set(token, me);
  }

  client(): RegistryClient {
    return new RegistryClient({ baseUrl: this.baseUrl, fetch: this.fetch, timeoutMs: 5_000 });
  }

  count(method: string, path: string): number {
    return this.calls.filter((c) => c.method === method && c.path === path).length;
  }

  /** The next `method path` request is answered, then held until released. */
  hold(method: string, path: string): HeldCall {
    let reached!: () => void;
    let release!: () => void;
    const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
    const gate = new Promise<void>((resolve) => (release = resolve));
    this.#holds.push({ method, path, reached, gate });
    return { reached: reachedPromise, release };
  }

  addRule(rule: Omit<AclRule, 'id'>): AclRule {
    const created = { id: `rule-${this.#nextRule++}`, ...rule };
    this.rules.push(created);
    this.#bump();
    return created;
  }

  #bump(): void {
    this.version += 1;
    const waiters = [...this.#versionWaiters];
    this.#versionWaiters.clear();
    for (const w of waiters) w();
  }

  fetch = (async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const method = init?.method ?? 'GET';
    const path = url.pathname.replace(/^\/api\/v1/, '');
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as Record<string, unknown>) : undefined;
    const signal = init?.signal;
    this.calls.push({ method, path, auth: headers.Authorization });
    const script = this.scripted.get(`${method} ${path}`);
    let answer: Answer;
    const forced = script?.shift();
    if (forced instanceof Error) throw forced;
    if (forced !== undefined) answer = forced;
    else answer = await this.#route(method, path, url.searchParams, headers, body, signal);
    // Serialized now: a held answer says what the registry knew when it answered.
    const text = answer.body === undefined ? '' : JSON.stringify(answer.body);
    const index = this.#holds.findIndex((h) => h.method === method && h.path === path);
    if (index >= 0) {
      const hold = this.#holds[index]!;
      this.#holds.splice(index, 1);
      hold.reached();
      await abortable(hold.gate, signal);
    }
    if (signal?.aborted) throw abortError();
    return new Response(text, {
      status: answer.status,
      headers: { 'Content-Type': 'application/json' },
    });
  }) as typeof globalThis.fetch;

  #user(headers: Record<string, string>): Me | undefined {
    const auth = headers.Authorization ?? '';
    return auth.startsWith('Bearer ') ? this.tokens.get(auth.slice(7)) : undefined;
  }

  async #route(
    method: string,
    path: string,
    query: URLSearchParams,
    headers: Record<string, string>,
    body: Record<string, unknown> | undefined,
    signal: AbortSignal | null | undefined,
  ): Promise<Answer> {
    const error = (status: number, code: string, message: string): Answer => ({ status, body: { error: { code, message } } });
    if (method === 'GET' && path === '/info') return { status: 200, body: { version: 'test', relay_url: this.relayUrl, oauth: true } };
    if (method === 'POST' && path === '/oauth/device') {
      return {
        status: 200,
        body: { device_code: 'dev-1', user_code: 'ABCD-EFGH', verification_uri: 'https://github.com/login/device', expires_in: 900, interval: 0 },
      };
    }
    if (method === 'POST' && path === '/oauth/token') {
      if (this.deviceToken === undefined) return { status: 400, body: { error: 'authorization_pending' } };
      return { status: 200, body: { access_token: this.deviceToken, token_type: 'bearer' } };
    }
    if (method === 'GET' && path === '/acl/sync') {
      const agentId = query.get('agent_id') ?? '';
      const since = Number(query.get('since'));
      const waitS = Number(query.get('wait_s'));
      if (since === this.version && waitS > 0) {
        await abortable(
          new Promise<void>((resolve) => {
            const timer = setTimeout(done, waitS * 1000);
            const waiters = this.#versionWaiters;
            function done(): void {
              clearTimeout(timer);
              waiters.delete(done);
              resolve();
            }
            waiters.add(done);
          }),
          signal,
        );
      }
      return {
        status: 200,
        body: { version: this.version, rules: this.rules.filter((r) => r.target === agentId), revoked: [...this.revokedAgents] },
      };
    }
    const me = this.#user(headers);
    if (method === 'GET' && path === '/users/me') {
      const failure = this.meFailures.shift();
      if (failure) return failure;
      return me ? { status: 200, body: me } : error(401, 'unauthorized', 'unknown or revoked token');
    }
    if (!me) return error(401, 'unauthorized', 'unknown or revoked token');
    if (method === 'POST' && path === '/agents') {
      const card = body as unknown as AgentCardResource;
      if (this.revokedAgents.has(card.agent_id)) return error(403, 'revoked', `agent ${card.agent_id} is revoked`);
      const stored: AgentCardResource = {
        ...card,
        owner_id: me.user.id,
        registered_at: '2026-01-01T00:00:00Z',
        updated_at: '2026-01-01T00:00:00Z',
        online: false,
      };
      this.cards.set(card.agent_id, stored);
      return { status: 201, body: stored };
    }
    if (method === 'GET' && path === '/agents') {
      const items = [...this.cards.values()].map((c) => ({ ...c, online: this.online.has(c.agent_id) }));
      return { status: 200, body: { items } };
    }
    if (method === 'GET' && path === '/acl') return { status: 200, body: { items: this.rules } };
    if (method === 'POST' && path === '/acl') {
      const rule = body as unknown as Omit<AclRule, 'id'>;
      return { status: 201, body: this.addRule(rule) };
    }
    return error(404, 'not_found', `no route ${method} ${path}`);
  }
}

export class MemoryStore implements KeyStore {
  readonly seeds = new Map<string, Uint8Array>();
  token: string | undefined;
  async loadSeed(userId: string): Promise<Uint8Array | undefined> {
    return this.seeds.get(userId);
  }
  async saveSeedOnce(userId: string, seed: Uint8Array): Promise<Uint8Array> {
    const existing = this.seeds.get(userId);
    if (existing) return existing;
    this.seeds.set(userId, seed);
    return seed;
  }
  async forgetSeed(userId: string): Promise<void> {
    this.seeds.delete(userId);
  }
  async loadToken(): Promise<string | undefined> {
    return this.token;
  }
  async saveToken(token: string): Promise<void> {
    this.token = token;
  }
  async forgetToken(): Promise<void> {
    this.token = undefined;
  }
}

/** What an incoming request's handler led to, as MeshAgent would send it (or drop it). */
export type Outcome = { sent: 'response'; body: JsonValue } | { sent: 'error'; code: string } | { sent: 'dropped' };

/**
 * The browser's agent without a relay: records requests and closes, and delivers incoming calls the
 * way MeshAgent does (revoked → ACL → handler; a reply after the call's signal aborted is dropped;
 * close waits its grace period before aborting the handlers' signals).
 */
export class FakeAgent implements AgentLike {
  readonly handlers = new Map<string, Handler>();
  readonly closes: { graceMs?: number }[] = [];
  readonly served = new Set<AbortController>();
  /** The close has finished (its grace period over, the handlers' signals aborted). */
  closeFinished = false;
  onRequest: (target: string, capability: string, body: JsonValue) => Promise<JsonValue> = async (_t, _c, body) => ({ echo: body });
  onStream: (target: string, capability: string, body: JsonValue) => AsyncIterable<JsonValue> = async function* () {};

  constructor(
    readonly identity: Identity,
    readonly options: MeshAgentOptions,
  ) {}

  get closed(): boolean {
    return this.closes.length > 0;
  }

  handle(capability: string, handler: Handler): this {
    this.handlers.set(capability, handler);
    return this;
  }

  request(target: string, capability: string, body: JsonValue, options?: RequestOptions): Promise<JsonValue> {
    if (this.closed) return Promise.reject(new MeshError('cancelled', 'the client is closed'));
    return abortable(this.onRequest(target, capability, body), options?.signal).catch((e: unknown) => {
      throw options?.signal?.aborted ? new MeshError('cancelled', 'cancelled') : e;
    });
  }

  stream(target: string, capability: string, body: JsonValue): AsyncIterable<JsonValue> {
    return this.onStream(target, capability, body);
  }

  async close(options: { graceMs?: number } = {}): Promise<void> {
    this.closes.push(options);
    if ((options.graceMs ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, 0));
    for (const controller of this.served) controller.abort(new MeshError('cancelled', 'the client is closed'));
    this.served.clear();
    this.closeFinished = true;
  }

  /** An incoming `chat` from `from` with the request ID `id`; resolves with what the caller would get. */
  async deliver(from: string, id: string, body: JsonValue, controller = new AbortController()): Promise<Outcome> {
    if (this.closed) return { sent: 'error', code: 'unreachable' };
    if (await this.options.isRevoked?.(from)) return { sent: 'error', code: 'revoked' };
    if ((await this.options.isAllowed?.(from, 'chat')) !== true) return { sent: 'error', code: 'acl_denied' };
    const handler = this.handlers.get('chat');
    if (!handler) return { sent: 'error', code: 'unknown_capability' };
    this.served.add(controller);
    const call: IncomingCall = { id, from, capability: 'chat', body, stream: false, encrypted: true, deadlineMs: undefined, signal: controller.signal };
    let outcome: Outcome;
    try {
      outcome = { sent: 'response', body: await handler(call) };
    } catch (e) {
      outcome = { sent: 'error', code: e instanceof MeshError ? e.code : 'internal' };
    }
    this.served.delete(controller);
    return controller.signal.aborted ? { sent: 'dropped' } : outcome;
  }
}

/** Records the fake agents the controller makes. */
export function fakeAgents(): { agents: FakeAgent[]; create: (identity: Identity, options: MeshAgentOptions) => FakeAgent } {
  const agents: FakeAgent[] = [];
  return {
    agents,
    create: (identity, options) => {
      const agent = new FakeAgent(identity, options);
      agents.push(agent);
      return agent;
    },
  };
}

/** Resolves once `predicate(state)` holds, checked after every state change. */
export function until(controller: Controller, predicate: (state: AppState) => boolean, what = 'the state', ms = 5_000): Promise<AppState> {
  if (predicate(controller.state)) return Promise.resolve(controller.state);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out waiting for ${what}; phase ${controller.state.phase}, error ${JSON.stringify(controller.state.loginError)}`));
    }, ms);
    const unsubscribe = controller.subscribe(() => {
      if (!predicate(controller.state)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(controller.state);
    });
  });
}

/** Lets pending promise callbacks and zero-delay timers run. */
export function settle(ms = 0): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface LockRequest {
  grant: () => void;
  fail: (e: Error) => void;
}

/**
 * The Web Locks API (navigator.locks) of one browser profile, in memory: exclusive locks granted in
 * order, `ifAvailable` (the callback gets null when the lock is taken or asked for), `steal` (the
 * holder's request rejects with AbortError) and `signal` (a queued request gives up).
 */
export class FakeLocks implements LockManagerLike {
  readonly #held = new Map<string, LockRequest>();
  readonly #queues = new Map<string, LockRequest[]>();

  /** Whether `name` is held by some tab. */
  held(name: string): boolean {
    return this.#held.has(name);
  }

  request<T>(
    name: string,
    options: { ifAvailable?: boolean; steal?: boolean; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<T> | T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const queue = this.#queues.get(name) ?? [];
      this.#queues.set(name, queue);
      if (options.ifAvailable && (this.#held.has(name) || queue.length > 0)) {
        Promise.resolve()
          .then(() => callback(null))
          .then(resolve, reject);
        return;
      }
      if (options.signal?.aborted) {
        reject(abortError());
        return;
      }
      let settled = false;
      const request: LockRequest = {
        grant: () => {
          options.signal?.removeEventListener('abort', onAbort);
          this.#held.set(name, request);
          Promise.resolve()
            .then(() => callback({ name }))
            .then(
              (value) => {
                this.#release(name, request);
                if (!settled) resolve(value);
                settled = true;
              },
              (e: unknown) => {
                this.#release(name, request);
                if (!settled) reject(e instanceof Error ? e : new Error(String(e)));
                settled = true;
              },
            );
        },
        fail: (e) => {
          settled = true;
          reject(e);
        },
      };
      const onAbort = (): void => {
        const index = queue.indexOf(request);
        if (index < 0) return;
        queue.splice(index, 1);
        request.fail(abortError());
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.steal) {
        const holder = this.#held.get(name);
        this.#held.delete(name);
        holder?.fail(abortError());
        request.grant();
      } else if (!this.#held.has(name) && queue.length === 0) {
        request.grant();
      } else {
        queue.push(request);
      }
    });
  }

  #release(name: string, request: LockRequest): void {
    if (this.#held.get(name) !== request) return;
    this.#held.delete(name);
    const next = this.#queues.get(name)?.shift();
    next?.grant();
  }
}
