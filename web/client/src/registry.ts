// The registry's REST API (registry.md) over `fetch`, for browsers and other runtimes: who the user
// is, the device-flow login, this agent's signed card, discovery with online state, ACL rules and
// the agent-signed ACL sync. Errors are MeshErrors carrying the registry's own code (`unauthorized`,
// `forbidden`, `not_found`, `conflict`, `bad_request`, ...) and message, or `unreachable` /
// `timeout` when no answer came.
import { MeshError, isKnownErrorCode, type MeshErrorCode } from './errors.js';
import type { Identity } from './identity.js';
import type { JsonObject, JsonValue } from './ijson.js';
import { httpAuthorization, signCard } from './signed_objects.js';

export interface RegistryInfo {
  version: string;
  relay_url: string;
  oauth: boolean;
}

export interface User {
  id: string;
  login: string;
  created_at: string;
}

export interface GroupMembership {
  id: string;
  name: string;
  role: 'owner' | 'admin' | 'member';
  personal: boolean;
}

export interface Me {
  user: User;
  groups: GroupMembership[];
}

export interface CardCapability {
  name: string;
  description?: string;
  input_schema?: JsonValue;
  output_schema?: JsonValue;
}

/** A registered card as the registry returns it (registry.md "Agent cards"). */
export interface AgentCardResource {
  agent_id: string;
  group_id: string;
  owner_id?: string;
  name: string;
  description?: string;
  capabilities: CardCapability[];
  metadata?: JsonObject;
  timestamp: number;
  signature: string;
  registered_at: string;
  updated_at: string;
  online: boolean;
  last_seen?: string;
}

export interface AclRule {
  id: string;
  group_id: string;
  source: string;
  target: string;
  allowed_capabilities: string[];
  created_at?: string;
}

/** `GET /acl/sync`: every rule whose target is the agent (`*` expanded) and the revoked IDs. */
export interface AclSyncDocument {
  version: number;
  rules: AclRule[];
  revoked: string[];
}

export interface Page<T> {
  items: T[];
  next_cursor?: string;
}

export interface DiscoveryQuery {
  capability?: string;
  q?: string;
  online?: boolean;
  group?: string;
  limit?: number;
  cursor?: string;
}

/** What the person is shown to approve a device login (RFC 8628 §3.2). */
export interface DeviceLogin {
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Seconds until the code expires. */
  expiresIn: number;
  /** Seconds between polls. */
  interval: number;
}

/** One poll's outcome; `expired_token` and `access_denied` reject with a MeshError of that code. */
export type DevicePoll =
  | { state: 'pending' }
  | { state: 'slow_down'; interval: number }
  | { state: 'approved'; token: string };

export interface CardContent {
  name: string;
  description?: string;
  capabilities: CardCapability[];
  metadata?: JsonObject;
}

export interface RegistryClientOptions {
  /** The registry's origin, e.g. `http://127.0.0.1:8080`; empty for the page's own origin (browsers). */
  baseUrl?: string;
  /** The user's API token (`Authorization: Bearer`). */
  token?: string;
  /** Signs agent calls (`Authorization: MeshAgent`), e.g. the ACL sync. */
  identity?: Identity;
  /** The Host header the browser sends (signed by agent calls); default: from baseUrl or the page's location. */
  host?: string;
  fetch?: typeof fetch;
  /** Per call, long polls excepted (they get their wait plus this). Default 15 s. */
  timeoutMs?: number;
  /** Wall clock (ms) for card timestamps and agent signatures. */
  now?: () => number;
}

interface CallOptions {
  auth?: 'token' | 'agent' | 'none';
  body?: JsonValue;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The device flow's RFC 6749 error shape: `{"error": "<code>"}` answers are returned, not thrown. */
  oauth?: boolean;
}

interface Answer {
  status: number;
  json: JsonValue | undefined;
  headers: Headers;
}

const API = '/api/v1';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const DEFAULT_TIMEOUT_MS = 15_000;
const MAX_LIST_PAGES = 25;

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: JsonValue | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function num(value: JsonValue | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

function query(params: Record<string, string | number | boolean | undefined>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === '') continue;
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get('Retry-After');
  if (value === null || !/^\d{1,6}$/.test(value)) return undefined;
  return Number(value) * 1000;
}

/** The code a failed HTTP answer maps to when its body names none we know. */
function codeForStatus(status: number): MeshErrorCode {
  switch (status) {
    case 400: return 'bad_request';
    case 401: return 'unauthorized';
    case 403: return 'forbidden';
    case 404: return 'not_found';
    case 409: return 'conflict';
    case 413: return 'too_large';
    case 429: return 'rate_limited';
    case 502:
    case 503: return 'unreachable';
    case 504: return 'timeout';
    default: return 'internal';
  }
}

/** A user may manage (grant ACL rules for) an agent they registered, or any agent of a group they own or administer. */
export function mayManage(me: Me, card: Pick<AgentCardResource, 'owner_id' | 'group_id'>): boolean {
  if (card.owner_id !== undefined && card.owner_id === me.user.id) return true;
  return me.groups.some((g) => g.id === card.group_id && (g.role === 'owner' || g.role === 'admin'));
}

/** The user's personal group (every user has one). */
export function personalGroup(me: Me): GroupMembership {
  const group = me.groups.find((g) => g.personal);
  if (group === undefined) throw new MeshError('not_found', 'this user has no personal group');
  return group;
}

/** True when some rule lets `source` call `capability` (or any capability, when omitted) on `target`. */
export function ruleAllows(rules: readonly AclRule[], source: string, target: string, capability?: string): boolean {
  return rules.some(
    (r) =>
      r.target === target &&
      (r.source === source || r.source === '*') &&
      (capability === undefined || r.allowed_capabilities.includes('*') || r.allowed_capabilities.includes(capability)),
  );
}

export class RegistryClient {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly identity: Identity | undefined;
  private readonly host: string;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private lastTs = 0;

  constructor(options: RegistryClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? '').replace(/\/+$/, '');
    this.token = options.token;
    this.identity = options.identity;
    const page = (globalThis as { location?: { host?: string } }).location;
    this.host = options.host ?? (this.baseUrl !== '' ? new URL(this.baseUrl).host : (page?.host ?? ''));
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new MeshError('internal', 'no fetch() in this runtime; pass options.fetch');
    this.fetchFn = f.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.now = options.now ?? (() => Date.now());
  }

  /** The same registry with other credentials. */
  with(options: { token?: string; identity?: Identity }): RegistryClient {
    return new RegistryClient({
      baseUrl: this.baseUrl,
      host: this.host,
      fetch: this.fetchFn,
      timeoutMs: this.timeoutMs,
      now: this.now,
      token: 'token' in options ? options.token : this.token,
      identity: 'identity' in options ? options.identity : this.identity,
    });
  }

  // ---- public, users, login ----

  async info(): Promise<RegistryInfo> {
    const json = await this.json('GET', '/info', { auth: 'none' });
    if (!isObject(json) || typeof json.relay_url !== 'string') {
      throw new MeshError('internal', 'the registry answered /info without a relay_url');
    }
    return { version: str(json.version) ?? '', relay_url: json.relay_url, oauth: json.oauth === true };
  }

  /** Who the token belongs to; `unauthorized` for a bad token, `forbidden` for the admin token (no user). */
  async me(): Promise<Me> {
    const json = await this.json('GET', '/users/me');
    if (!isObject(json) || !isObject(json.user) || !Array.isArray(json.groups)) {
      throw new MeshError('internal', 'the registry answered /users/me without user and groups');
    }
    return json as unknown as Me;
  }

  /** Starts a device login (`not_found` when the registry has no OAuth configured). */
  async startDeviceLogin(signal?: AbortSignal): Promise<DeviceLogin> {
    const answer = await this.call('POST', '/oauth/device', { auth: 'none', body: {}, signal });
    const json = answer.json;
    if (answer.status !== 200) throw this.failure(answer, 'starting the device login');
    const deviceCode = isObject(json) ? str(json.device_code) : undefined;
    const userCode = isObject(json) ? str(json.user_code) : undefined;
    const uri = isObject(json) ? str(json.verification_uri) : undefined;
    if (!isObject(json) || !deviceCode || !userCode || !uri) {
      throw new MeshError('internal', 'the registry answered the device login without device_code, user_code or verification_uri');
    }
    const login: DeviceLogin = {
      deviceCode,
      userCode,
      verificationUri: uri,
      expiresIn: num(json.expires_in) ?? 900,
      interval: num(json.interval) ?? 5,
    };
    const complete = str(json.verification_uri_complete);
    if (complete !== undefined) login.verificationUriComplete = complete;
    return login;
  }

  /** One poll of a device login (RFC 8628 §3.4); the caller waits `interval` seconds between polls. */
  async pollDeviceLogin(deviceCode: string, signal?: AbortSignal): Promise<DevicePoll> {
    const answer = await this.call('POST', '/oauth/token', {
      auth: 'none',
      body: { grant_type: DEVICE_GRANT, device_code: deviceCode },
      signal,
      oauth: true,
    });
    const json = isObject(answer.json) ? answer.json : {};
    if (answer.status === 200) {
      const token = str(json.access_token);
      if (!token) throw new MeshError('internal', 'the registry approved the login without an access_token');
      return { state: 'approved', token };
    }
    const error = str(json.error);
    if (error === 'authorization_pending') return { state: 'pending' };
    if (error === 'slow_down') return { state: 'slow_down', interval: num(json.interval) ?? 0 };
    if (error === 'expired_token') throw new MeshError('expired_token', 'the login code expired before it was approved; start again');
    if (error === 'access_denied') throw new MeshError('access_denied', 'the login was denied');
    const description = str(json.error_description);
    throw new MeshError(
      codeForStatus(answer.status),
      `the device login failed: ${error ?? `HTTP ${answer.status}`}${description ? ` (${description})` : ''}`,
    );
  }

  // ---- cards ----

  /**
   * Signs and registers (or replaces) `identity`'s card in `groupId` with the user's token. The
   * seed never leaves the identity: only the public card and its signature are sent.
   */
  async registerCard(identity: Identity, groupId: string, content: CardContent): Promise<AgentCardResource> {
    const unsigned: JsonObject = {
      agent_id: identity.agentId,
      group_id: groupId,
      name: content.name,
      capabilities: content.capabilities.map((c) => {
        // Optional members are omitted, never null or undefined (protocol §1).
        const out: JsonObject = { name: c.name };
        if (c.description !== undefined) out.description = c.description;
        if (c.input_schema !== undefined) out.input_schema = c.input_schema;
        if (c.output_schema !== undefined) out.output_schema = c.output_schema;
        return out;
      }),
      timestamp: this.freshTimestamp(),
    };
    if (content.description !== undefined) unsigned.description = content.description;
    if (content.metadata !== undefined) unsigned.metadata = content.metadata;
    const card = signCard(unsigned, identity);
    const json = await this.json('POST', '/agents', { body: card });
    return json as unknown as AgentCardResource;
  }

  async getAgent(agentId: string): Promise<AgentCardResource> {
    return (await this.json('GET', `/agents/${encodeURIComponent(agentId)}`)) as unknown as AgentCardResource;
  }

  /** One page of discovery (group-scoped by the registry; `online` from the relay at query time). */
  async discover(q: DiscoveryQuery = {}, signal?: AbortSignal): Promise<Page<AgentCardResource>> {
    const path = `/agents${query({ capability: q.capability, q: q.q, online: q.online, group: q.group, limit: q.limit, cursor: q.cursor })}`;
    return this.page<AgentCardResource>(await this.json('GET', path, { signal }), 'agents');
  }

  /** Every card the query finds, page by page (200 per page, at most 25 pages). */
  async discoverAll(q: Omit<DiscoveryQuery, 'cursor' | 'limit'> = {}, signal?: AbortSignal): Promise<AgentCardResource[]> {
    const all: AgentCardResource[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < MAX_LIST_PAGES; ++i) {
      const page = await this.discover({ ...q, limit: 200, cursor }, signal);
      all.push(...page.items);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    return all;
  }

  // ---- ACL ----

  async listAcl(options: { group?: string; limit?: number; cursor?: string } = {}, signal?: AbortSignal): Promise<Page<AclRule>> {
    const path = `/acl${query({ group: options.group, limit: options.limit, cursor: options.cursor })}`;
    return this.page<AclRule>(await this.json('GET', path, { signal }), 'acl');
  }

  async listAllAcl(group?: string, signal?: AbortSignal): Promise<AclRule[]> {
    const all: AclRule[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < MAX_LIST_PAGES; ++i) {
      const page = await this.listAcl({ group, limit: 200, cursor }, signal);
      all.push(...page.items);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    return all;
  }

  /**
   * Creates a rule letting `source` (an agent ID or `*`) call `capabilities` (or `["*"]`) on
   * `target`. Only the target's owner or a group owner/admin may (`forbidden` otherwise).
   */
  async grant(rule: { group_id: string; source: string; target: string; allowed_capabilities: string[] }): Promise<AclRule> {
    return (await this.json('POST', '/acl', { body: { ...rule, allowed_capabilities: [...rule.allowed_capabilities] } })) as unknown as AclRule;
  }

  async deleteRule(id: string): Promise<void> {
    await this.json('DELETE', `/acl/${encodeURIComponent(id)}`);
  }

  /**
   * The agent's own rules (agent signature): answers as soon as the version differs from `since`,
   * else after `waitS` seconds (0..30). Abort `signal` to stop waiting.
   */
  async aclSync(since: number, waitS = 25, signal?: AbortSignal): Promise<AclSyncDocument> {
    const identity = this.requireIdentity();
    const path = `/acl/sync${query({ agent_id: identity.agentId, since, wait_s: waitS })}`;
    const json = await this.json('GET', path, { auth: 'agent', signal, timeoutMs: this.timeoutMs + waitS * 1000 });
    if (!isObject(json) || typeof json.version !== 'number' || !Array.isArray(json.rules) || !Array.isArray(json.revoked)) {
      throw new MeshError('internal', 'the registry answered /acl/sync without version, rules and revoked');
    }
    return json as unknown as AclSyncDocument;
  }

  // ---- plumbing ----

  private requireIdentity(): Identity {
    if (this.identity === undefined) throw new MeshError('internal', 'this call needs the agent identity (RegistryClient identity option)');
    return this.identity;
  }

  /** Wall-clock ms, strictly increasing per client (a card must be newer than the stored one; signatures are not replayable). */
  private freshTimestamp(): number {
    const now = Math.floor(this.now());
    this.lastTs = now > this.lastTs ? now : this.lastTs + 1;
    return this.lastTs;
  }

  private page<T>(json: JsonValue | undefined, what: string): Page<T> {
    if (!isObject(json) || !Array.isArray(json.items)) throw new MeshError('internal', `the registry answered the ${what} list without items`);
    const page: Page<T> = { items: json.items as unknown as T[] };
    const next = str(json.next_cursor);
    if (next) page.next_cursor = next;
    return page;
  }

  private async json(method: string, path: string, options: CallOptions = {}): Promise<JsonValue | undefined> {
    const answer = await this.call(method, path, options);
    if (answer.status >= 200 && answer.status < 300) return answer.json;
    throw this.failure(answer, `${method} ${API}${path.split('?')[0]}`);
  }

  private failure(answer: Answer, what: string): MeshError {
    const body = answer.json;
    let code: MeshErrorCode = codeForStatus(answer.status);
    let message = `${what}: HTTP ${answer.status}`;
    if (isObject(body) && isObject(body.error)) {
      const c = str(body.error.code);
      const m = str(body.error.message);
      if (isKnownErrorCode(c)) code = c;
      if (m) message = m;
    } else if (isObject(body) && typeof body.error === 'string' && isKnownErrorCode(body.error)) {
      code = body.error;
    }
    const retry = retryAfterMs(answer.headers);
    return new MeshError(code, message, retry === undefined ? undefined : { retryAfterMs: retry });
  }

  private async call(method: string, path: string, options: CallOptions): Promise<Answer> {
    const target = `${API}${path}`;
    const headers: Record<string, string> = { Accept: 'application/json' };
    const auth = options.auth ?? 'token';
    if (auth === 'token') {
      if (!this.token) throw new MeshError('unauthorized', 'not logged in: this call needs an API token');
      headers.Authorization = `Bearer ${this.token}`;
    } else if (auth === 'agent') {
      const identity = this.requireIdentity();
      headers.Authorization = httpAuthorization(identity, method, target, this.host, this.freshTimestamp());
    }
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.body);
    }

    const controller = new AbortController();
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const outer = options.signal;
    const onAbort = (): void => controller.abort();
    if (outer?.aborted) controller.abort();
    outer?.addEventListener('abort', onAbort, { once: true });
    try {
      let response: Response;
      try {
        const init: RequestInit = { method, headers, signal: controller.signal, cache: 'no-store', credentials: 'omit' };
        if (body !== undefined) init.body = body;
        response = await this.fetchFn(`${this.baseUrl}${target}`, init);
      } catch (e) {
        if (timedOut) throw new MeshError('timeout', `${method} ${target}: no answer from the registry within ${timeoutMs} ms`);
        if (outer?.aborted) throw new MeshError('cancelled', `${method} ${target}: cancelled`);
        throw new MeshError('unreachable', `${method} ${target}: the registry is unreachable (${e instanceof Error ? e.message : String(e)})`, { cause: e });
      }
      let text: string;
      try {
        text = await response.text();
      } catch (e) {
        if (timedOut) throw new MeshError('timeout', `${method} ${target}: the answer did not arrive within ${timeoutMs} ms`);
        if (outer?.aborted) throw new MeshError('cancelled', `${method} ${target}: cancelled`);
        throw new MeshError('unreachable', `${method} ${target}: the answer broke off`, { cause: e });
      }
      let json: JsonValue | undefined;
      if (text !== '') {
        try {
          json = JSON.parse(text) as JsonValue;
        } catch {
          if (response.ok) throw new MeshError('internal', `${method} ${target}: the registry's answer is not JSON`);
        }
      }
      return { status: response.status, json, headers: response.headers };
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
    }
  }
}
