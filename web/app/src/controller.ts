// The app's state and everything it does, outside React: login (pasted token or device flow), the
// browser's own agent (seed in IndexedDB, signed card with capability `chat`, relay link through
// MeshAgent), discovery with online state, ACL rules and grants, conversations, incoming chat
// requests answered by the person. Components read the immutable `state` through
// useSyncExternalStore and call the methods.
import { MeshError } from '../../client/src/errors.js';
import { Identity } from '../../client/src/identity.js';
import type { JsonValue } from '../../client/src/ijson.js';
import { MeshAgent, type IncomingCall, type LinkStatus } from '../../client/src/mesh.js';
import {
  RegistryClient,
  mayManage,
  personalGroup,
  ruleAllows,
  type AclRule,
  type AgentCardResource,
  type DeviceLogin,
  type Me,
  type RegistryInfo,
} from '../../client/src/registry.js';
import { forgetToken, loadSeed, loadToken, saveSeedOnce, saveToken } from './keystore.js';

/** Unanswered incoming chat requests fail with `timeout` after this long (cli-mcp-web.md). */
export const INCOMING_TIMEOUT_MS = 60_000;
/** How long a caller waits for an answer: people get the responder's 60 s and some slack. */
const REQUEST_TIMEOUT_MS = 30_000;
const CHAT_TIMEOUT_MS = 70_000;
/** A new rule reaches the target's daemon within 2 s (registry.md); `acl_denied` is retried that long. */
const GRANT_PROPAGATION_MS = 6_000;
const GRANT_RETRY_MS = 250;
const DISCOVERY_INTERVAL_MS = 4_000;
const SYNC_WAIT_S = 25;

export type Phase = 'starting' | 'login' | 'connecting' | 'ready';
export type LinkState = 'connecting' | 'online' | 'offline' | 'closed';

export interface ShownError {
  code: string;
  message: string;
}

export interface OutgoingItem {
  kind: 'out';
  id: string;
  capability: string;
  mode: 'request' | 'stream';
  body: JsonValue;
  at: number;
  status: 'pending' | 'streaming' | 'done' | 'error' | 'cancelled';
  response?: JsonValue;
  chunks: JsonValue[];
  error?: ShownError;
}

export interface IncomingItem {
  kind: 'in';
  id: string;
  from: string;
  capability: string;
  body: JsonValue;
  at: number;
  deadline: number;
  status: 'waiting' | 'answered' | 'timeout' | 'cancelled';
  reply?: string;
}

export type ConversationItem = OutgoingItem | IncomingItem;

export interface DeviceState extends DeviceLogin {
  started: number;
}

export interface AppState {
  phase: Phase;
  info?: RegistryInfo;
  me?: Me;
  token?: string;
  agentId?: string;
  groupId?: string;
  link: { state: LinkState; reason?: string };
  agents: AgentCardResource[];
  agentsError?: ShownError;
  agentsLoaded: boolean;
  rules: AclRule[];
  conversations: Readonly<Record<string, readonly ConversationItem[]>>;
  unread: Readonly<Record<string, number>>;
  selected?: string;
  loginBusy: boolean;
  loginError?: ShownError;
  device?: DeviceState;
  /** A problem that is not tied to one message (registration, grants, the ACL sync). */
  notice?: ShownError;
  granting: Readonly<Record<string, boolean>>;
}

export function shown(e: unknown): ShownError {
  if (e instanceof MeshError) return { code: e.code, message: e.message };
  if (e instanceof Error) return { code: 'internal', message: e.message };
  return { code: 'internal', message: String(e) };
}

function newId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The relay as this page can reach it (CSP connect-src 'self'): the registry's relay_url when it is
 * this origin, else this origin's /relay/ws (the page was opened as localhost rather than 127.0.0.1,
 * say), expecting the relay to present the registry's relay_url as its relay_id.
 */
export function relayFor(info: RegistryInfo, page: { protocol: string; host: string }): { url: string; expectedRelayId?: string } {
  const scheme = page.protocol === 'https:' ? 'wss:' : 'ws:';
  try {
    const relay = new URL(info.relay_url);
    if (relay.host === page.host && relay.protocol === scheme) return { url: info.relay_url };
  } catch {
    // fall through
  }
  return { url: `${scheme}//${page.host}/relay/ws`, expectedRelayId: info.relay_url };
}

function linkOf(status: LinkStatus): { state: LinkState; reason?: string } {
  switch (status.state) {
    case 'connecting':
      return status.attempt > 1 ? { state: 'connecting', reason: `attempt ${status.attempt}` } : { state: 'connecting' };
    case 'online':
      return { state: 'online' };
    case 'offline':
      return { state: 'offline', reason: `${status.reason}; retrying in ${Math.ceil(status.retryInMs / 1000)} s` };
    case 'closed':
      return { state: 'closed', reason: `${status.code}: ${status.reason}` };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

interface PendingIncoming {
  resolve: (body: JsonValue) => void;
  reject: (e: MeshError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface ControllerOptions {
  registry?: RegistryClient;
  page?: { protocol: string; host: string };
}

export class Controller {
  state: AppState = {
    phase: 'starting',
    link: { state: 'offline' },
    agents: [],
    agentsLoaded: false,
    rules: [],
    conversations: {},
    unread: {},
    loginBusy: false,
    granting: {},
  };

  private readonly listeners = new Set<() => void>();
  private readonly base: RegistryClient;
  private readonly page: { protocol: string; host: string };
  private registry?: RegistryClient;
  private agentRegistry?: RegistryClient;
  private agent?: MeshAgent;
  private session?: AbortController;
  private deviceAbort?: AbortController;
  private syncRules: AclRule[] = [];
  private revoked = new Set<string>();
  private readonly grantedAt = new Map<string, { at: number; capabilities: string[] }>();
  private readonly pendingIncoming = new Map<string, PendingIncoming>();
  private readonly outgoingAbort = new Map<string, AbortController>();

  constructor(options: ControllerOptions = {}) {
    this.base = options.registry ?? new RegistryClient();
    this.page = options.page ?? { protocol: location.protocol, host: location.host };
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getState = (): AppState => this.state;

  private set(patch: Partial<AppState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  // ---- start and login ----

  async start(): Promise<void> {
    let info: RegistryInfo;
    try {
      info = await this.base.info();
    } catch (e) {
      this.set({ phase: 'login', loginError: { ...shown(e), message: `the registry does not answer: ${shown(e).message}` } });
      return;
    }
    this.set({ info });
    let token: string | undefined;
    try {
      token = await loadToken();
    } catch {
      token = undefined;
    }
    if (token === undefined) {
      this.set({ phase: 'login' });
      return;
    }
    await this.loginWithToken(token, true);
  }

  async loginWithToken(raw: string, remembered = false): Promise<void> {
    const token = raw.trim();
    if (token === '' || /\s/.test(token)) {
      this.set({ loginError: { code: 'bad_request', message: 'paste one API token (no spaces)' } });
      return;
    }
    this.set({ loginBusy: true, loginError: undefined });
    const registry = this.base.with({ token });
    let me: Me;
    try {
      me = await registry.me();
    } catch (e) {
      const error = shown(e);
      if (error.code === 'forbidden') error.message = 'this is the registry admin token, which has no user; log in with a user API token';
      if (error.code === 'unauthorized') error.message = `the registry refused the token: ${error.message}`;
      if (remembered) await forgetToken().catch(() => undefined);
      this.set({ phase: 'login', loginBusy: false, loginError: remembered && error.code === 'unauthorized' ? undefined : error });
      return;
    }
    try {
      await saveToken(token);
    } catch {
      // Not kept across reloads; the session still works.
    }
    this.set({ me, token, loginBusy: false, phase: 'connecting' });
    this.registry = registry;
    await this.connect(me, registry);
  }

  async startDeviceLogin(): Promise<void> {
    this.cancelDeviceLogin();
    const abort = new AbortController();
    this.deviceAbort = abort;
    this.set({ loginBusy: true, loginError: undefined });
    try {
      const login = await this.base.startDeviceLogin(abort.signal);
      this.set({ device: { ...login, started: Date.now() }, loginBusy: false });
      let interval = Math.max(login.interval, 1) * 1000;
      const deadline = Date.now() + login.expiresIn * 1000;
      while (!abort.signal.aborted) {
        await sleep(interval, abort.signal);
        if (abort.signal.aborted) return;
        if (Date.now() > deadline) throw new MeshError('expired_token', 'the login code expired before it was approved; start again');
        const poll = await this.base.pollDeviceLogin(login.deviceCode, abort.signal);
        if (poll.state === 'approved') {
          this.set({ device: undefined });
          this.deviceAbort = undefined;
          await this.loginWithToken(poll.token);
          return;
        }
        if (poll.state === 'slow_down') interval = Math.max(interval + 5000, poll.interval * 1000);
      }
    } catch (e) {
      if (abort.signal.aborted) return;
      const error = shown(e);
      if (error.code === 'not_found') error.message = 'this server has no GitHub login configured; paste an API token instead';
      this.set({ device: undefined, loginBusy: false, loginError: error });
    }
  }

  cancelDeviceLogin(): void {
    this.deviceAbort?.abort();
    this.deviceAbort = undefined;
    if (this.state.device || this.state.loginBusy) this.set({ device: undefined, loginBusy: false });
  }

  async logout(): Promise<void> {
    this.stopSession();
    await forgetToken().catch(() => undefined);
    this.set({
      phase: 'login',
      me: undefined,
      token: undefined,
      agentId: undefined,
      groupId: undefined,
      link: { state: 'offline' },
      agents: [],
      agentsLoaded: false,
      agentsError: undefined,
      rules: [],
      conversations: {},
      unread: {},
      selected: undefined,
      notice: undefined,
      granting: {},
    });
  }

  private stopSession(): void {
    this.session?.abort();
    this.session = undefined;
    for (const [, pending] of this.pendingIncoming) {
      clearTimeout(pending.timer);
      pending.reject(new MeshError('unreachable', 'the person logged out'));
    }
    this.pendingIncoming.clear();
    for (const [, abort] of this.outgoingAbort) abort.abort();
    this.outgoingAbort.clear();
    const agent = this.agent;
    this.agent = undefined;
    if (agent) void agent.close().catch(() => undefined);
  }

  // ---- the browser's agent ----

  private async connect(me: Me, registry: RegistryClient): Promise<void> {
    const session = new AbortController();
    this.session = session;
    try {
      const group = personalGroup(me);
      const stored = await loadSeed(me.user.id);
      const seed = stored ?? (await saveSeedOnce(me.user.id, Identity.generate().seed));
      const identity = Identity.fromSeed(seed);
      this.set({ agentId: identity.agentId, groupId: group.id });
      await registry.registerCard(identity, group.id, {
        name: `${me.user.login} (browser ${identity.agentId.slice(0, 6)})`,
        description: 'A person in the agent-mesh web UI: chat requests are read and answered by hand.',
        capabilities: [
          {
            name: 'chat',
            description: 'Send {"message": "..."}; a person reads it and answers {"message": "..."} within 60 s, else timeout.',
            input_schema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
            output_schema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
          },
        ],
        metadata: { kind: 'browser' },
      });
      if (session.signal.aborted) return;
      this.agentRegistry = registry.with({ identity });
      const info = this.state.info ?? (await this.base.info());
      const relay = relayFor(info, this.page);
      const agent = new MeshAgent(identity, {
        relayUrl: relay.url,
        ...(relay.expectedRelayId === undefined ? {} : { expectedRelayId: relay.expectedRelayId }),
        onStatus: (status) => {
          if (this.agent !== agent) return;
          const wasOnline = this.state.link.state === 'online';
          this.set({ link: linkOf(status) });
          // Discovery reads liveness at query time: show this browser online at once.
          if (!wasOnline && status.state === 'online') void this.refresh(session.signal);
        },
        isAllowed: (from, capability) => this.incomingAllowed(from, capability),
        isRevoked: (from) => this.revoked.has(from),
      });
      this.agent = agent;
      agent.handle('chat', (call) => this.incoming(call));
      this.set({ phase: 'ready', link: this.state.link.state === 'offline' ? { state: 'connecting' } : this.state.link });
      void this.discoveryLoop(session.signal);
      void this.syncLoop(session.signal);
    } catch (e) {
      if (session.signal.aborted) return;
      const error = shown(e);
      this.set({
        phase: 'login',
        loginError: { code: error.code, message: `registering this browser as an agent failed: ${error.message}` },
      });
      this.stopSession();
    }
  }

  private incomingAllowed(from: string, capability: string): boolean {
    const me = this.state.agentId;
    if (me === undefined || capability !== 'chat' || this.revoked.has(from)) return false;
    return ruleAllows(this.syncRules, from, me, capability);
  }

  /** This agent's own rules through the registry's long poll (agent signature), like meshd's sync. */
  private async syncLoop(signal: AbortSignal): Promise<void> {
    let since = 0;
    let first = true;
    let failures = 0;
    while (!signal.aborted) {
      const registry = this.agentRegistry;
      if (!registry) return;
      try {
        const doc = await registry.aclSync(since, first ? 0 : SYNC_WAIT_S, signal);
        first = false;
        failures = 0;
        since = doc.version;
        this.syncRules = doc.rules;
        this.revoked = new Set(doc.revoked);
        if (this.state.notice?.code === 'acl_sync') this.set({ notice: undefined });
      } catch (e) {
        if (signal.aborted) return;
        failures += 1;
        if (failures >= 3) this.set({ notice: { code: shown(e).code, message: `the ACL sync fails: ${shown(e).message}` } });
        await sleep(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), signal);
      }
    }
  }

  private async discoveryLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.refresh(signal);
      await sleep(DISCOVERY_INTERVAL_MS, signal);
    }
  }

  /** Discovery (with online state) and the rules of the user's groups. */
  async refresh(signal?: AbortSignal): Promise<void> {
    const registry = this.registry;
    if (!registry) return;
    try {
      const [agents, rules] = await Promise.all([registry.discoverAll({}, signal), registry.listAllAcl(undefined, signal)]);
      if (signal?.aborted || this.registry !== registry) return;
      agents.sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name) || a.agent_id.localeCompare(b.agent_id));
      this.set({ agents, rules, agentsLoaded: true, agentsError: undefined });
    } catch (e) {
      if (signal?.aborted) return;
      this.set({ agentsError: shown(e), agentsLoaded: true });
    }
  }

  // ---- selection and grants ----

  select(agentId: string | undefined): void {
    if (agentId === undefined) {
      this.set({ selected: undefined });
      return;
    }
    const unread = { ...this.state.unread };
    delete unread[agentId];
    this.set({ selected: agentId, unread });
  }

  /** Whether the UI may offer grants for this agent: the user manages it and it shares our card's group. */
  canGrant(card: AgentCardResource): boolean {
    const me = this.state.me;
    return me !== undefined && card.group_id === this.state.groupId && card.agent_id !== this.state.agentId && mayManage(me, card);
  }

  /** May this browser call `capability` (any, when omitted) on the agent? (the registry's rules) */
  mayCall(target: string, capability?: string): boolean {
    const me = this.state.agentId;
    return me !== undefined && ruleAllows(this.state.rules, me, target, capability);
  }

  /** May the agent send us chat requests? */
  mayChatWithMe(source: string): boolean {
    const me = this.state.agentId;
    return me !== undefined && ruleAllows(this.state.rules, source, me, 'chat');
  }

  /** A rule letting this browser call the agent's capabilities. */
  async grantAccess(card: AgentCardResource): Promise<void> {
    await this.grant(`call:${card.agent_id}`, {
      group_id: card.group_id,
      source: this.state.agentId ?? '',
      target: card.agent_id,
      allowed_capabilities: card.capabilities.map((c) => c.name),
    });
    this.grantedAt.set(card.agent_id, { at: Date.now(), capabilities: card.capabilities.map((c) => c.name) });
  }

  /** A rule letting the agent send this browser `chat` requests. */
  async allowChat(card: AgentCardResource): Promise<void> {
    await this.grant(`chat:${card.agent_id}`, {
      group_id: card.group_id,
      source: card.agent_id,
      target: this.state.agentId ?? '',
      allowed_capabilities: ['chat'],
    });
  }

  private async grant(key: string, rule: { group_id: string; source: string; target: string; allowed_capabilities: string[] }): Promise<void> {
    const registry = this.registry;
    if (!registry) return;
    this.set({ granting: { ...this.state.granting, [key]: true }, notice: undefined });
    try {
      const created = await registry.grant(rule);
      this.set({ rules: [...this.state.rules, created] });
    } catch (e) {
      const error = shown(e);
      this.set({ notice: { code: error.code, message: `granting access failed: ${error.message}` } });
    } finally {
      const granting = { ...this.state.granting };
      delete granting[key];
      this.set({ granting });
    }
  }

  // ---- conversations ----

  private items(agentId: string): readonly ConversationItem[] {
    return this.state.conversations[agentId] ?? [];
  }

  private upsert(agentId: string, item: ConversationItem): void {
    const list = this.items(agentId);
    const index = list.findIndex((i) => i.id === item.id);
    const next = index < 0 ? [...list, item] : list.map((i, n) => (n === index ? item : i));
    this.set({ conversations: { ...this.state.conversations, [agentId]: next } });
  }

  private patchItem<T extends ConversationItem>(agentId: string, id: string, patch: (item: T) => T): void {
    const item = this.items(agentId).find((i) => i.id === id) as T | undefined;
    if (item) this.upsert(agentId, patch(item));
  }

  /** Sends a request or a stream request; the answer, chunks or error land in the conversation. */
  async send(target: string, capability: string, mode: 'request' | 'stream', body: JsonValue): Promise<void> {
    const agent = this.agent;
    if (!agent) return;
    const id = newId();
    const abort = new AbortController();
    this.outgoingAbort.set(id, abort);
    const item: OutgoingItem = { kind: 'out', id, capability, mode, body, at: Date.now(), status: 'pending', chunks: [] };
    this.upsert(target, item);
    const timeoutMs = capability === 'chat' ? CHAT_TIMEOUT_MS : REQUEST_TIMEOUT_MS;
    try {
      for (;;) {
        try {
          if (mode === 'request') {
            const response = await agent.request(target, capability, body, { timeoutMs, signal: abort.signal });
            this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: 'done', response }));
          } else {
            for await (const chunk of agent.stream(target, capability, body, { timeoutMs, signal: abort.signal })) {
              this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: 'streaming', chunks: [...i.chunks, chunk] }));
            }
            this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: 'done' }));
          }
          return;
        } catch (e) {
          // A rule granted a moment ago may not have reached the target's daemon yet (≤ 2 s).
          const granted = this.grantedAt.get(target);
          const started = this.items(target).find((i) => i.id === id) as OutgoingItem | undefined;
          if (
            e instanceof MeshError &&
            e.code === 'acl_denied' &&
            granted !== undefined &&
            granted.capabilities.includes(capability) &&
            Date.now() - granted.at < GRANT_PROPAGATION_MS &&
            (started?.chunks.length ?? 0) === 0 &&
            !abort.signal.aborted
          ) {
            await sleep(GRANT_RETRY_MS, abort.signal);
            continue;
          }
          throw e;
        }
      }
    } catch (e) {
      const error = shown(e);
      this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: error.code === 'cancelled' ? 'cancelled' : 'error', error }));
    } finally {
      this.outgoingAbort.delete(id);
    }
  }

  cancel(id: string): void {
    this.outgoingAbort.get(id)?.abort();
  }

  /** An incoming `chat` request: shown in the sender's conversation until the person answers (60 s). */
  private incoming(call: IncomingCall): Promise<JsonValue> {
    const id = `in-${call.id}`;
    const from = call.from;
    const now = Date.now();
    const item: IncomingItem = {
      kind: 'in',
      id,
      from,
      capability: call.capability,
      body: call.body,
      at: now,
      // The person has 60 s, or less when the caller stops waiting sooner (its timeout_ms).
      deadline: Math.min(now + INCOMING_TIMEOUT_MS, call.deadlineMs ?? Number.POSITIVE_INFINITY),
      status: 'waiting',
    };
    this.upsert(from, item);
    if (!this.state.agents.some((a) => a.agent_id === from)) void this.refresh(this.session?.signal);
    if (this.state.selected !== from) {
      this.set({ unread: { ...this.state.unread, [from]: (this.state.unread[from] ?? 0) + 1 } });
    }
    return new Promise<JsonValue>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingIncoming.delete(id);
        this.patchItem<IncomingItem>(from, id, (i) => ({ ...i, status: 'timeout' }));
        reject(new MeshError('timeout', 'nobody answered the chat message within 60 s'));
      }, INCOMING_TIMEOUT_MS);
      this.pendingIncoming.set(id, { resolve, reject, timer });
      call.signal.addEventListener(
        'abort',
        () => {
          const pending = this.pendingIncoming.get(id);
          if (!pending) return;
          clearTimeout(pending.timer);
          this.pendingIncoming.delete(id);
          this.patchItem<IncomingItem>(from, id, (i) => (i.status === 'waiting' ? { ...i, status: 'cancelled' } : i));
          reject(new MeshError('cancelled', 'the sender stopped waiting'));
        },
        { once: true },
      );
    });
  }

  /** The person's answer to an incoming chat request. */
  reply(from: string, id: string, text: string): void {
    const pending = this.pendingIncoming.get(id);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.pendingIncoming.delete(id);
    pending.resolve({ message: text });
    this.patchItem<IncomingItem>(from, id, (i) => ({ ...i, status: 'answered', reply: text }));
  }

  dismissNotice(): void {
    this.set({ notice: undefined });
  }
}
