// The app's state and everything it does, outside React: login (pasted token or device flow), the
// browser's own agent (seed in IndexedDB, signed card with capability `chat`, relay link through
// MeshAgent), discovery with online state, ACL rules and grants, conversations, incoming chat
// requests answered by the person. Components read the immutable `state` through
// useSyncExternalStore and call the methods.
//
// Sessions: every login attempt (token, device flow, a new key) and every logout takes a new
// generation; anything that finishes late for an older generation is dropped. A session (the
// agent, its loops, the registry with the user's token) is torn down completely before the next one
// starts, and every await in it re-checks that its session is still the current one.
//
// One tab per agent: tabs of one browser profile share the user's seed, and two connections of one
// agent replace each other at the relay (4009). With the Web Locks API the tab whose session holds
// the lock `agent-mesh:agent:<user id>` is the agent; another tab shows "open in another tab" until
// the person takes it over there (a steal: the first tab then ends its session as a logout does).
// A second lock, `…:link`, is held until the agent's relay connection is closed, so the next tab
// dials only once the previous one has refused its waiting chats and gone.
import { MeshError } from '../../client/src/errors.js';
import { Identity } from '../../client/src/identity.js';
import type { JsonValue } from '../../client/src/ijson.js';
import { MeshAgent, type Handler, type IncomingCall, type LinkStatus, type MeshAgentOptions, type RequestOptions } from '../../client/src/mesh.js';
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
import { showBody, type ShownBody } from './format.js';
import { indexedDbStore, type KeyStore } from './keystore.js';

/** Unanswered incoming chat requests fail with `timeout` after this long (cli-mcp-web.md). */
export const INCOMING_TIMEOUT_MS = 60_000;
/** How long a caller waits for an answer: people get the responder's 60 s and some slack. */
const REQUEST_TIMEOUT_MS = 30_000;
const CHAT_TIMEOUT_MS = 70_000;
/** A new rule reaches the target's daemon within 2 s (registry.md); `acl_denied` is retried that long. */
const GRANT_PROPAGATION_MS = 6_000;
const GRANT_RETRY_MS = 250;
const DISCOVERY_INTERVAL_MS = 4_000;
/** Discovery failing: the interval doubles per failure up to this. */
const DISCOVERY_MAX_BACKOFF_MS = 60_000;
const SYNC_WAIT_S = 25;
/** The device flow never polls faster than this, whatever the server says. */
const DEVICE_POLL_MIN_MS = 1_000;
/** Waiting for the old agent's refusals to go out before its relay connection closes. */
const CLOSE_GRACE_MS = 1_000;
/** Waiting for another tab's agent to close after a take-over; past this its link lock is stolen. */
const LINK_HANDOVER_MS = 5_000;

/** Messages kept per conversation; older finished ones are dropped ("N earlier messages hidden"). */
export const MAX_CONVERSATION_ITEMS = 200;
/** Stream chunks kept per message; older ones are dropped ("N earlier chunks hidden"). */
export const MAX_SHOWN_CHUNKS = 200;
/** Chat requests one sender may have waiting for the person; more are refused `rate_limited`. */
export const MAX_WAITING_PER_SENDER = 10;

/** `elsewhere`: logged in, but this user's agent is open in another tab of this browser. */
export type Phase = 'starting' | 'login' | 'connecting' | 'ready' | 'elsewhere';
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
  body: ShownBody;
  at: number;
  status: 'pending' | 'streaming' | 'done' | 'error' | 'cancelled';
  response?: ShownBody;
  /** The last MAX_SHOWN_CHUNKS chunks. */
  chunks: readonly ShownBody[];
  /** All chunks received (chunkCount - chunks.length are hidden). */
  chunkCount: number;
  error?: ShownError;
}

export interface IncomingItem {
  kind: 'in';
  /** Local and unique: the sender chooses callId, so it identifies nothing on its own. */
  id: string;
  /** The request's ID as the sender sent it. */
  callId: string;
  from: string;
  capability: string;
  body: ShownBody;
  at: number;
  deadline: number;
  status: 'waiting' | 'answered' | 'timeout' | 'cancelled';
  reply?: string;
}

export type ConversationItem = OutgoingItem | IncomingItem;

export interface ConversationState {
  items: readonly ConversationItem[];
  /** Earlier messages dropped to keep the conversation bounded. */
  hidden: number;
}

export interface DeviceState extends DeviceLogin {
  started: number;
}

export interface AppState {
  phase: Phase;
  info?: RegistryInfo;
  me?: Me;
  agentId?: string;
  groupId?: string;
  link: { state: LinkState; reason?: string };
  agents: AgentCardResource[];
  agentsError?: ShownError;
  agentsLoaded: boolean;
  /** When discovery last succeeded (the list is stale while agentsError is set). */
  agentsUpdatedAt?: number;
  /** The rules of the user's groups (discovery). */
  rules: AclRule[];
  /** The rules this browser's agent enforces (its own ACL sync): who may send it `chat`. */
  ownRules: readonly AclRule[];
  conversations: Readonly<Record<string, ConversationState>>;
  unread: Readonly<Record<string, number>>;
  selected?: string;
  loginBusy: boolean;
  loginError?: ShownError;
  /** The remembered login failed for a reason other than the token (the registry is down, say): it is kept. */
  loginRetry: boolean;
  /** This browser's key was revoked: a new one can be made (makeNewKey). */
  keyRevoked: boolean;
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

/**
 * Whether a device-flow verification URI may be shown as a link: https, or plain http on the
 * loopback host (the GitHub stand-in of the tests). Anything else is shown as text only.
 */
export function safeVerificationUri(uri: string | undefined): boolean {
  if (uri === undefined) return false;
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  if (url.username !== '' || url.password !== '') return false;
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && (url.hostname === '127.0.0.1' || url.hostname === 'localhost' || url.hostname === '[::1]');
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

/** Resolves after `ms`, or at once when `signal` aborts or `wake` fires. */
function sleep(ms: number, signal: AbortSignal, wake?: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      wake?.delete(done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
    wake?.add(done);
  });
}

function active(item: ConversationItem): boolean {
  return item.status === 'pending' || item.status === 'streaming' || item.status === 'waiting';
}

const NO_CONVERSATION: ConversationState = { items: [], hidden: 0 };

interface PendingIncoming {
  from: string;
  itemId: string;
  resolve: (body: JsonValue) => void;
  reject: (e: MeshError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** What the controller needs of the browser's agent (MeshAgent; a fake in unit tests). */
export interface AgentLike {
  handle(capability: string, handler: Handler): unknown;
  request(target: string, capability: string, body: JsonValue, options?: RequestOptions): Promise<JsonValue>;
  stream(target: string, capability: string, body: JsonValue, options?: RequestOptions): AsyncIterable<JsonValue>;
  close(options?: { graceMs?: number }): Promise<void>;
}

export type AgentFactory = (identity: Identity, options: MeshAgentOptions) => AgentLike;

/** The page's visibility (document), to pause discovery in background tabs. */
export interface VisibilitySource {
  readonly hidden: boolean;
  addEventListener(type: 'visibilitychange', listener: () => void): void;
}

/** The part of the Web Locks API (navigator.locks) the controller uses; a fake in unit tests. */
export interface LockManagerLike {
  request<T>(
    name: string,
    options: { ifAvailable?: boolean; steal?: boolean; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<T> | T,
  ): Promise<T>;
}

/** A lock this tab holds until release(); `lost` resolves when another tab steals it. */
interface HeldLock {
  release(): void;
  lost: Promise<void>;
}

/**
 * Requests a Web Lock and keeps it until released. Resolves undefined when `ifAvailable` finds it
 * held elsewhere; rejects when the request fails (or `signal` aborts) before it is granted.
 */
function holdLock(
  locks: LockManagerLike,
  name: string,
  options: { ifAvailable?: boolean; steal?: boolean; signal?: AbortSignal },
): Promise<HeldLock | undefined> {
  return new Promise((resolve, reject) => {
    let granted = false;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let lose!: () => void;
    const lost = new Promise<void>((r) => (lose = r));
    locks
      .request(name, options, (lock) => {
        if (lock === null) {
          resolve(undefined);
          return undefined;
        }
        granted = true;
        resolve({ release, lost });
        return released;
      })
      .then(
        () => undefined,
        (e: unknown) => {
          // Granted, then aborted: another tab stole it.
          if (granted) lose();
          else reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
  });
}

/** The page's Web Locks, when the browser has them. */
function defaultLocks(): LockManagerLike | undefined {
  if (typeof navigator === 'undefined') return undefined;
  const locks = (navigator as { locks?: LockManagerLike }).locks;
  return locks && typeof locks.request === 'function' ? locks : undefined;
}

/** The lock naming the one tab that is this user's agent (per browser profile and origin). */
export function agentLockName(userId: string): string {
  return `agent-mesh:agent:${userId}`;
}

export interface ControllerOptions {
  registry?: RegistryClient;
  page?: { protocol: string; host: string };
  /** Where the seed and the token are kept (default IndexedDB). */
  store?: KeyStore;
  /** Makes the browser's agent (default: MeshAgent). */
  createAgent?: AgentFactory;
  /** Default INCOMING_TIMEOUT_MS (60 s). */
  incomingTimeoutMs?: number;
  /** Default 4 s. */
  discoveryIntervalMs?: number;
  /** Default 1 s. */
  devicePollMinMs?: number;
  /** Default: the page's document, when there is one. */
  visibility?: VisibilitySource;
  /** One tab per agent (default navigator.locks; null, or a browser without it: no coordination). */
  locks?: LockManagerLike | null;
}

/** The state of no session: the initial one, and what ending a session goes back to. */
export const NO_SESSION = {
  agentId: undefined,
  groupId: undefined,
  link: { state: 'offline' },
  agents: [],
  agentsLoaded: false,
  agentsError: undefined,
  agentsUpdatedAt: undefined,
  rules: [],
  ownRules: [],
  conversations: {},
  unread: {},
  selected: undefined,
  notice: undefined,
  granting: {},
} as const satisfies Partial<AppState>;

export class Controller {
  state: AppState = {
    ...NO_SESSION,
    phase: 'starting',
    loginBusy: false,
    loginRetry: false,
    keyRevoked: false,
  };

  private readonly listeners = new Set<() => void>();
  private readonly base: RegistryClient;
  private readonly page: { protocol: string; host: string };
  private readonly store: KeyStore;
  private readonly createAgent: AgentFactory;
  private readonly incomingTimeoutMs: number;
  private readonly discoveryIntervalMs: number;
  private readonly devicePollMinMs: number;
  private readonly visibility: VisibilitySource | undefined;
  private readonly locks: LockManagerLike | undefined;
  /** Sleepers to wake when the page becomes visible again. */
  private readonly onVisible = new Set<() => void>();

  /** Bumped by every login attempt and logout: late results of older ones are dropped. */
  private generation = 0;
  private deviceAbort?: AbortController;
  /** Token store writes, in order (a logout's delete never overtakes a login's save). */
  private storeQueue: Promise<void> = Promise.resolve();
  /** The login whose key turned out revoked, for makeNewKey. */
  private revokedLogin?: { me: Me; registry: RegistryClient };
  /** The login whose agent is open in another tab, for useHere. */
  private elsewhereLogin?: { me: Me; registry: RegistryClient };

  // ---- the session (reset by stopSession) ----
  private session?: AbortController;
  private registry?: RegistryClient;
  private agentRegistry?: RegistryClient;
  private agent?: AgentLike;
  /** This tab is the user's agent (released when the session ends). */
  private agentLock?: HeldLock;
  /** Held until this tab's agent is closed. */
  private linkLock?: HeldLock;
  /** The previous agent's close, awaited before a new agent dials the relay. */
  private closing?: Promise<void>;
  private syncRules: AclRule[] = [];
  private revoked = new Set<string>();
  private readonly grantedAt = new Map<string, { at: number; capabilities: string[] }>();
  /** Incoming chat requests waiting for the person, by `${from} ${callId}`. */
  private readonly pendingIncoming = new Map<string, PendingIncoming>();
  private readonly outgoingAbort = new Map<string, AbortController>();
  private refreshing?: Promise<void>;
  private refreshAgain = false;
  /** Bumped when a grant adds a rule: a discovery answer started before it lacks the rule. */
  private rulesEpoch = 0;
  private refreshSeq = 0;
  private appliedRefreshSeq = 0;

  constructor(options: ControllerOptions = {}) {
    this.base = options.registry ?? new RegistryClient();
    this.page = options.page ?? { protocol: location.protocol, host: location.host };
    this.store = options.store ?? indexedDbStore;
    this.createAgent = options.createAgent ?? ((identity, agentOptions) => new MeshAgent(identity, agentOptions));
    this.incomingTimeoutMs = options.incomingTimeoutMs ?? INCOMING_TIMEOUT_MS;
    this.discoveryIntervalMs = options.discoveryIntervalMs ?? DISCOVERY_INTERVAL_MS;
    this.devicePollMinMs = options.devicePollMinMs ?? DEVICE_POLL_MIN_MS;
    this.visibility = options.visibility ?? (typeof document === 'undefined' ? undefined : document);
    this.locks = options.locks === undefined ? defaultLocks() : (options.locks ?? undefined);
    const visibility = this.visibility;
    visibility?.addEventListener('visibilitychange', () => {
      if (visibility.hidden) return;
      const sleepers = [...this.onVisible];
      this.onVisible.clear();
      for (const wake of sleepers) wake();
    });
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

  private live(session: AbortController | undefined): session is AbortController {
    return session !== undefined && this.session === session && !session.signal.aborted;
  }

  private storeOp(op: () => Promise<void>): Promise<void> {
    const next = this.storeQueue.then(op).catch(() => undefined);
    this.storeQueue = next;
    return next;
  }

  // ---- start and login ----

  async start(): Promise<void> {
    const gen = ++this.generation;
    this.set({ loginRetry: false, loginError: undefined });
    let info: RegistryInfo;
    try {
      info = await this.base.info();
    } catch (e) {
      if (gen !== this.generation) return;
      this.set({
        phase: 'login',
        loginRetry: true,
        loginError: { ...shown(e), message: `the registry does not answer: ${shown(e).message}` },
      });
      return;
    }
    if (gen !== this.generation) return;
    this.set({ info });
    let token: string | undefined;
    try {
      token = await this.store.loadToken();
    } catch {
      token = undefined;
    }
    if (gen !== this.generation) return;
    if (token === undefined) {
      this.set({ phase: 'login' });
      return;
    }
    await this.loginWithToken(token, true);
  }

  /** Tries again after the registry did not answer (the remembered token is still kept). */
  retry(): Promise<void> {
    return this.start();
  }

  async loginWithToken(raw: string, remembered = false): Promise<void> {
    const token = raw.trim();
    if (token === '' || /\s/.test(token)) {
      this.set({ loginError: { code: 'bad_request', message: 'paste one API token (no spaces)' } });
      return;
    }
    // A device login still polling would log someone in over this one.
    this.stopDeviceFlow();
    const gen = ++this.generation;
    this.revokedLogin = undefined;
    this.elsewhereLogin = undefined;
    this.set({ loginBusy: true, loginError: undefined, loginRetry: false, keyRevoked: false });
    const registry = this.base.with({ token });
    let me: Me;
    try {
      me = await registry.me();
    } catch (e) {
      if (gen !== this.generation) return;
      const error = shown(e);
      // Only the registry refusing the token makes it useless; a registry that is down, slow or
      // unreachable says nothing about it.
      const refused = error.code === 'unauthorized' || error.code === 'forbidden';
      if (error.code === 'forbidden') error.message = 'this is the registry admin token, which has no user; log in with a user API token';
      if (error.code === 'unauthorized') {
        error.message = remembered ? `the saved login is no longer valid (${error.message}); log in again` : `the registry refused the token: ${error.message}`;
      }
      if (remembered && refused) {
        await this.storeOp(() => this.store.forgetToken());
        if (gen !== this.generation) return;
      }
      if (remembered && !refused) error.message = `logging in with the saved token failed: ${error.message}; it is kept, try again`;
      this.set({ phase: 'login', loginBusy: false, loginError: error, loginRetry: remembered && !refused });
      return;
    }
    if (gen !== this.generation) return;
    if (!remembered) {
      // Not kept across reloads when this fails; the session still works.
      await this.storeOp(async () => {
        if (gen === this.generation) await this.store.saveToken(token);
      });
      if (gen !== this.generation) return;
    }
    this.set({ me, loginBusy: false, phase: 'connecting' });
    await this.connect(me, registry, gen);
  }

  async startDeviceLogin(): Promise<void> {
    this.stopDeviceFlow();
    const gen = ++this.generation;
    const abort = new AbortController();
    this.deviceAbort = abort;
    const current = (): boolean => !abort.signal.aborted && gen === this.generation;
    this.set({ loginBusy: true, loginError: undefined, loginRetry: false });
    try {
      const login = await this.base.startDeviceLogin(abort.signal);
      if (!current()) return;
      this.set({ device: { ...login, started: Date.now() }, loginBusy: false });
      let interval = Math.max(login.interval * 1000, this.devicePollMinMs);
      const deadline = Date.now() + login.expiresIn * 1000;
      for (;;) {
        await sleep(interval, abort.signal);
        if (!current()) return;
        if (Date.now() > deadline) throw new MeshError('expired_token', 'the login code expired before it was approved; start again');
        const poll = await this.base.pollDeviceLogin(login.deviceCode, abort.signal);
        if (!current()) return;
        if (poll.state === 'approved') {
          this.deviceAbort = undefined;
          this.set({ device: undefined });
          await this.loginWithToken(poll.token);
          return;
        }
        if (poll.state === 'slow_down') interval = Math.max(interval + 5000, poll.interval * 1000);
      }
    } catch (e) {
      if (!current()) return;
      this.deviceAbort = undefined;
      const error = shown(e);
      if (error.code === 'not_found') error.message = 'this server has no GitHub login configured; paste an API token instead';
      this.set({ device: undefined, loginBusy: false, loginError: error });
    }
  }

  cancelDeviceLogin(): void {
    ++this.generation;
    this.stopDeviceFlow();
    if (this.state.loginBusy) this.set({ loginBusy: false });
  }

  private stopDeviceFlow(): void {
    this.deviceAbort?.abort();
    this.deviceAbort = undefined;
    if (this.state.device) this.set({ device: undefined });
  }

  /** The browser's key was revoked: forget its seed and register a new agent for the same login. */
  async makeNewKey(): Promise<void> {
    const revoked = this.revokedLogin;
    if (!revoked) return;
    this.revokedLogin = undefined;
    const gen = ++this.generation;
    this.set({ loginBusy: true, loginError: undefined, keyRevoked: false });
    try {
      await this.store.forgetSeed(revoked.me.user.id);
    } catch (e) {
      if (gen !== this.generation) return;
      this.set({ loginBusy: false, loginError: { ...shown(e), message: `the old key could not be dropped: ${shown(e).message}` } });
      return;
    }
    if (gen !== this.generation) return;
    this.set({ me: revoked.me, loginBusy: false, phase: 'connecting' });
    await this.connect(revoked.me, revoked.registry, gen);
  }

  /** The agent is open in another tab: take it over here (that tab ends its session). */
  async useHere(): Promise<void> {
    const login = this.elsewhereLogin;
    if (!login || this.state.phase !== 'elsewhere') return;
    this.elsewhereLogin = undefined;
    const gen = ++this.generation;
    this.set({ phase: 'connecting' });
    await this.connect(login.me, login.registry, gen, true);
  }

  async logout(): Promise<void> {
    ++this.generation;
    this.stopDeviceFlow();
    this.revokedLogin = undefined;
    this.elsewhereLogin = undefined;
    const closed = this.stopSession('the person logged out');
    this.set({
      phase: 'login',
      me: undefined,
      loginBusy: false,
      loginError: undefined,
      loginRetry: false,
      keyRevoked: false,
    });
    await this.storeOp(() => this.store.forgetToken());
    await closed;
  }

  /**
   * Ends the session: its loops and requests, the registry with the user's token, the rules, the
   * conversations. Waiting incoming chats are refused first; the agent then closes with a grace
   * period so those refusals reach their senders (closing aborts the handlers' signals, and a reply
   * on an aborted signal is dropped). Resolves when the agent is closed.
   */
  private stopSession(reason = 'the person left'): Promise<void> {
    this.session?.abort();
    this.session = undefined;
    this.registry = undefined;
    this.agentRegistry = undefined;
    this.syncRules = [];
    this.revoked = new Set();
    this.grantedAt.clear();
    this.refreshing = undefined;
    this.refreshAgain = false;
    this.rulesEpoch += 1;
    const pending = [...this.pendingIncoming.values()];
    this.pendingIncoming.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(new MeshError('unreachable', `${reason}; nobody will answer this chat message`));
    }
    for (const [, abort] of this.outgoingAbort) abort.abort();
    this.outgoingAbort.clear();
    this.set(NO_SESSION);
    // Another tab may be the agent now; the relay connection is handed over once it is closed.
    this.agentLock?.release();
    this.agentLock = undefined;
    const linkLock = this.linkLock;
    this.linkLock = undefined;
    const agent = this.agent;
    this.agent = undefined;
    if (agent) {
      const closing: Promise<void> = agent
        .close({ graceMs: CLOSE_GRACE_MS })
        .catch(() => undefined)
        .finally(() => {
          linkLock?.release();
          if (this.closing === closing) this.closing = undefined;
        });
      this.closing = closing;
    } else {
      linkLock?.release();
    }
    return this.closing ?? Promise.resolve();
  }

  // ---- the browser's agent ----

  /**
   * Makes this tab the user's agent (Web Locks): false when another tab is (unless `steal`), or when
   * the session ended meanwhile. Waits for the previous tab's agent to close (at most
   * LINK_HANDOVER_MS) before its relay connection would be replaced.
   */
  private async claimAgent(me: Me, registry: RegistryClient, session: AbortController, current: () => boolean, steal: boolean): Promise<boolean> {
    const locks = this.locks;
    if (!locks) return true;
    const name = agentLockName(me.user.id);
    let held: HeldLock | undefined;
    try {
      held = await holdLock(locks, name, steal ? { steal: true } : { ifAvailable: true });
    } catch {
      // No locks for this document after all (an opaque origin, say): connect as without them.
      return current();
    }
    if (!held) return false;
    if (!current()) {
      held.release();
      return false;
    }
    this.agentLock = held;
    void held.lost.then(() => {
      if (this.agentLock === held) this.takenOver(me, registry);
    });
    const handover = new AbortController();
    const timer = setTimeout(() => handover.abort(), LINK_HANDOVER_MS);
    const stop = (): void => handover.abort();
    session.signal.addEventListener('abort', stop, { once: true });
    let link: HeldLock | undefined;
    try {
      link = await holdLock(locks, `${name}:link`, { signal: handover.signal });
    } catch {
      if (!current()) return false;
      // The other tab does not let go (frozen, say): its connection is replaced (4009).
      link = await holdLock(locks, `${name}:link`, { steal: true }).catch(() => undefined);
    } finally {
      clearTimeout(timer);
      session.signal.removeEventListener('abort', stop);
    }
    if (!current()) {
      link?.release();
      return false;
    }
    this.linkLock = link;
    return true;
  }

  /** Another tab took this user's agent over: end the session as a logout does and say so. */
  private takenOver(me: Me, registry: RegistryClient): void {
    void this.stopSession('the agent was opened in another tab');
    this.elsewhereLogin = { me, registry };
    this.set({ phase: 'elsewhere', loginBusy: false });
  }

  private async connect(me: Me, registry: RegistryClient, gen: number, steal = false): Promise<void> {
    const previous = this.stopSession('this browser logged in again');
    const session = new AbortController();
    this.session = session;
    const current = (): boolean => this.live(session) && gen === this.generation;
    let agentId: string | undefined;
    try {
      // The old agent's relay connection goes first, or the two would replace each other (4009).
      await previous;
      if (!current()) return;
      if (!(await this.claimAgent(me, registry, session, current, steal))) {
        if (!current()) return;
        void this.stopSession();
        this.elsewhereLogin = { me, registry };
        this.set({ phase: 'elsewhere' });
        return;
      }
      if (!current()) return;
      const group = personalGroup(me);
      const stored = await this.store.loadSeed(me.user.id);
      if (!current()) return;
      const seed = stored ?? (await this.store.saveSeedOnce(me.user.id, Identity.generate().seed));
      if (!current()) return;
      const identity = Identity.fromSeed(seed);
      agentId = identity.agentId;
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
      if (!current()) return;
      const info = this.state.info ?? (await this.base.info());
      if (!current()) return;
      this.registry = registry;
      this.agentRegistry = registry.with({ identity });
      this.set({ agentId: identity.agentId, groupId: group.id });
      const relay = relayFor(info, this.page);
      const agent = this.createAgent(identity, {
        relayUrl: relay.url,
        ...(relay.expectedRelayId === undefined ? {} : { expectedRelayId: relay.expectedRelayId }),
        onStatus: (status) => {
          if (this.agent !== agent) return;
          if (status.state === 'closed' && status.code === 'revoked') {
            // Not from inside the link's own callback: it closes the agent.
            queueMicrotask(() => {
              if (this.agent === agent) this.keyRevoked(me, registry, identity.agentId);
            });
            return;
          }
          const wasOnline = this.state.link.state === 'online';
          this.set({ link: linkOf(status) });
          // Discovery reads liveness at query time: show this browser online at once.
          if (!wasOnline && status.state === 'online') void this.refresh();
        },
        isAllowed: (from, capability) => this.incomingAllowed(from, capability),
        isRevoked: (from) => this.revoked.has(from),
      });
      this.agent = agent;
      agent.handle('chat', (call) => this.incoming(call));
      this.set({ phase: 'ready', link: this.state.link.state === 'offline' ? { state: 'connecting' } : this.state.link });
      void this.discoveryLoop(session);
      void this.syncLoop(session);
    } catch (e) {
      if (!current()) return;
      const error = shown(e);
      if (error.code === 'revoked') {
        this.keyRevoked(me, registry, agentId);
        return;
      }
      void this.stopSession('registering this browser failed');
      if (error.code === 'unauthorized') void this.storeOp(() => this.store.forgetToken());
      // Not signed in: the login screen must not claim otherwise.
      this.set({
        phase: 'login',
        me: undefined,
        loginBusy: false,
        loginError: { code: error.code, message: `registering this browser as an agent failed: ${error.message}` },
      });
    }
  }

  /** The registry or the relay refuses this browser's key: say so and offer a new key. */
  private keyRevoked(me: Me, registry: RegistryClient, agentId: string | undefined): void {
    void this.stopSession("this browser's key was revoked");
    this.revokedLogin = { me, registry };
    this.set({
      phase: 'login',
      me: undefined,
      loginBusy: false,
      keyRevoked: true,
      loginError: {
        code: 'revoked',
        message:
          `this browser's key${agentId ? ` (agent ${agentId})` : ''} was revoked, so ${me.user.login} cannot use it any more. ` +
          'Make a new key to continue: this browser then becomes a new agent with a new ID, and rules granted to the old one do not apply to it.',
      },
    });
  }

  private incomingAllowed(from: string, capability: string): boolean {
    const me = this.state.agentId;
    if (me === undefined || capability !== 'chat' || this.revoked.has(from)) return false;
    return ruleAllows(this.syncRules, from, me, capability);
  }

  /** This agent's own rules through the registry's long poll (agent signature), like meshd's sync. */
  private async syncLoop(session: AbortController): Promise<void> {
    const registry = this.agentRegistry;
    if (!registry) return;
    const signal = session.signal;
    let since = 0;
    let first = true;
    let failures = 0;
    while (this.live(session)) {
      try {
        const doc = await registry.aclSync(since, first ? 0 : SYNC_WAIT_S, signal);
        if (!this.live(session)) return;
        const changed = first || doc.version !== since;
        first = false;
        failures = 0;
        since = doc.version;
        this.syncRules = doc.rules;
        this.revoked = new Set(doc.revoked);
        if (changed) this.set({ ownRules: doc.rules });
        if (this.state.notice?.code === 'acl_sync') this.set({ notice: undefined });
      } catch (e) {
        if (!this.live(session)) return;
        failures += 1;
        if (failures >= 3) this.set({ notice: { code: shown(e).code, message: `the ACL sync fails: ${shown(e).message}` } });
        await sleep(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), signal);
      }
    }
  }

  /** Discovery every few seconds while the page is visible; backs off while it fails. */
  private async discoveryLoop(session: AbortController): Promise<void> {
    let failures = 0;
    while (this.live(session)) {
      if (this.visibility?.hidden) {
        // A background tab polls nothing; it refreshes as soon as it is shown again.
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            session.signal.removeEventListener('abort', wake);
            this.onVisible.delete(wake);
            resolve();
          };
          session.signal.addEventListener('abort', wake, { once: true });
          this.onVisible.add(wake);
        });
        continue;
      }
      await this.refresh();
      if (!this.live(session)) return;
      failures = this.state.agentsError ? failures + 1 : 0;
      const wait = failures === 0 ? this.discoveryIntervalMs : Math.min(DISCOVERY_MAX_BACKOFF_MS, this.discoveryIntervalMs * 2 ** failures);
      await sleep(wait, session.signal, this.onVisible);
    }
  }

  /**
   * Discovery (with online state) and the rules of the user's groups. One refresh runs at a time;
   * asking while one runs queues exactly one more, so answers land in order.
   */
  refresh(): Promise<void> {
    const session = this.session;
    if (!this.live(session) || !this.registry) return Promise.resolve();
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    let run: Promise<void> | undefined;
    run = (async () => {
      try {
        do {
          this.refreshAgain = false;
          await this.refreshOnce(session);
        } while (this.refreshAgain && this.live(session));
      } finally {
        if (this.refreshing === run) this.refreshing = undefined;
      }
    })();
    this.refreshing = run;
    return run;
  }

  private async refreshOnce(session: AbortController): Promise<void> {
    const registry = this.registry;
    if (!registry || !this.live(session)) return;
    const seq = ++this.refreshSeq;
    const epoch = this.rulesEpoch;
    try {
      const [agents, rules] = await Promise.all([
        registry.discoverAll({}, session.signal),
        registry.listAllAcl(undefined, session.signal),
      ]);
      if (!this.live(session) || seq < this.appliedRefreshSeq) return;
      this.appliedRefreshSeq = seq;
      agents.sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name) || a.agent_id.localeCompare(b.agent_id));
      const update: Partial<AppState> = { agents, agentsLoaded: true, agentsError: undefined, agentsUpdatedAt: Date.now() };
      // A grant landed meanwhile: these rules may predate it. Keep ours and ask again.
      if (epoch === this.rulesEpoch) update.rules = rules;
      else this.refreshAgain = true;
      this.set(update);
    } catch (e) {
      if (!this.live(session)) return;
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

  /**
   * Whether the user owns the agent (this browser, or an agent they may manage); agents they do not
   * own are shown with their full ID next to the (self-chosen) name. Pass the card when at hand.
   */
  owns(agentId: string, card?: AgentCardResource): boolean {
    if (agentId === this.state.agentId) return true;
    const me = this.state.me;
    const known = card ?? this.state.agents.find((a) => a.agent_id === agentId);
    return me !== undefined && known !== undefined && mayManage(me, known);
  }

  /** May this browser call `capability` (any, when omitted) on the agent? (the registry's rules) */
  mayCall(target: string, capability?: string): boolean {
    const me = this.state.agentId;
    return me !== undefined && ruleAllows(this.state.rules, me, target, capability);
  }

  /** May the agent send us chat requests? (a rule in the registry, or one our sync already has) */
  mayChatWithMe(source: string): boolean {
    const me = this.state.agentId;
    return me !== undefined && (ruleAllows(this.state.rules, source, me, 'chat') || ruleAllows(this.state.ownRules, source, me, 'chat'));
  }

  /** Does this browser's agent already enforce a rule letting the agent chat with it? (its ACL sync) */
  chatActive(source: string): boolean {
    const me = this.state.agentId;
    return me !== undefined && ruleAllows(this.state.ownRules, source, me, 'chat');
  }

  /** A rule letting this browser call the agent's capabilities. True when it was created. */
  async grantAccess(card: AgentCardResource): Promise<boolean> {
    const me = this.state.agentId;
    if (me === undefined) return false;
    const capabilities = card.capabilities.map((c) => c.name);
    const ok = await this.grant(`call:${card.agent_id}`, {
      group_id: card.group_id,
      source: me,
      target: card.agent_id,
      allowed_capabilities: capabilities,
    });
    if (ok) this.grantedAt.set(card.agent_id, { at: Date.now(), capabilities });
    return ok;
  }

  /** A rule letting the agent send this browser `chat` requests. True when it was created. */
  async allowChat(card: AgentCardResource): Promise<boolean> {
    const me = this.state.agentId;
    if (me === undefined) return false;
    return this.grant(`chat:${card.agent_id}`, {
      group_id: card.group_id,
      source: card.agent_id,
      target: me,
      allowed_capabilities: ['chat'],
    });
  }

  private async grant(key: string, rule: { group_id: string; source: string; target: string; allowed_capabilities: string[] }): Promise<boolean> {
    const session = this.session;
    const registry = this.registry;
    if (!this.live(session) || !registry || this.state.granting[key]) return false;
    this.set({ granting: { ...this.state.granting, [key]: true }, notice: undefined });
    try {
      const created = await registry.grant(rule);
      if (!this.live(session)) return false;
      this.rulesEpoch += 1;
      this.set({ rules: [...this.state.rules.filter((r) => r.id !== created.id), created] });
      return true;
    } catch (e) {
      if (!this.live(session)) return false;
      const error = shown(e);
      this.set({ notice: { code: error.code, message: `granting access failed: ${error.message}` } });
      return false;
    } finally {
      if (this.live(session)) {
        const granting = { ...this.state.granting };
        delete granting[key];
        this.set({ granting });
      }
    }
  }

  // ---- conversations ----

  private conversation(agentId: string): ConversationState {
    return this.state.conversations[agentId] ?? NO_CONVERSATION;
  }

  /** Appends an item; past MAX_CONVERSATION_ITEMS the oldest finished ones are dropped and counted. */
  private addItem(agentId: string, item: ConversationItem, extra: Partial<AppState> = {}): void {
    const conversation = this.conversation(agentId);
    let items: readonly ConversationItem[] = [...conversation.items, item];
    let hidden = conversation.hidden;
    if (items.length > MAX_CONVERSATION_ITEMS) {
      let excess = items.length - MAX_CONVERSATION_ITEMS;
      items = items.filter((i) => {
        if (excess > 0 && !active(i)) {
          excess -= 1;
          hidden += 1;
          return false;
        }
        return true;
      });
    }
    this.set({ ...extra, conversations: { ...this.state.conversations, [agentId]: { items, hidden } } });
  }

  private patchItem<T extends ConversationItem>(agentId: string, id: string, patch: (item: T) => T): void {
    const conversation = this.state.conversations[agentId];
    if (!conversation) return;
    const index = conversation.items.findIndex((i) => i.id === id);
    if (index < 0) return;
    const item = conversation.items[index] as T;
    const next = patch(item);
    if (next === item) return;
    const items = conversation.items.slice();
    items[index] = next;
    this.set({ conversations: { ...this.state.conversations, [agentId]: { items, hidden: conversation.hidden } } });
  }

  private findItem(agentId: string, id: string): ConversationItem | undefined {
    return this.state.conversations[agentId]?.items.find((i) => i.id === id);
  }

  /** Sends a request or a stream request; the answer, chunks or error land in the conversation. */
  async send(target: string, capability: string, mode: 'request' | 'stream', body: JsonValue): Promise<void> {
    const agent = this.agent;
    const session = this.session;
    if (!agent || !this.live(session)) return;
    const id = newId();
    const abort = new AbortController();
    this.outgoingAbort.set(id, abort);
    const item: OutgoingItem = { kind: 'out', id, capability, mode, body: showBody(body), at: Date.now(), status: 'pending', chunks: [], chunkCount: 0 };
    this.addItem(target, item);
    const timeoutMs = capability === 'chat' ? CHAT_TIMEOUT_MS : REQUEST_TIMEOUT_MS;
    let chunkCount = 0;
    try {
      for (;;) {
        try {
          if (mode === 'request') {
            const response = await agent.request(target, capability, body, { timeoutMs, signal: abort.signal });
            if (!this.live(session)) return;
            this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: 'done', response: showBody(response) }));
          } else {
            for await (const chunk of agent.stream(target, capability, body, { timeoutMs, signal: abort.signal })) {
              if (!this.live(session)) return;
              chunkCount += 1;
              const shownChunk = showBody(chunk);
              this.patchItem<OutgoingItem>(target, id, (i) => ({
                ...i,
                status: 'streaming',
                chunks: i.chunks.length >= MAX_SHOWN_CHUNKS ? [...i.chunks.slice(i.chunks.length - MAX_SHOWN_CHUNKS + 1), shownChunk] : [...i.chunks, shownChunk],
                chunkCount: i.chunkCount + 1,
              }));
            }
            if (!this.live(session)) return;
            this.patchItem<OutgoingItem>(target, id, (i) => ({ ...i, status: 'done' }));
          }
          return;
        } catch (e) {
          // A rule granted a moment ago may not have reached the target's daemon yet (≤ 2 s).
          const granted = this.grantedAt.get(target);
          if (
            e instanceof MeshError &&
            e.code === 'acl_denied' &&
            granted !== undefined &&
            granted.capabilities.includes(capability) &&
            Date.now() - granted.at < GRANT_PROPAGATION_MS &&
            chunkCount === 0 &&
            !abort.signal.aborted &&
            this.live(session)
          ) {
            await sleep(GRANT_RETRY_MS, abort.signal);
            continue;
          }
          throw e;
        }
      }
    } catch (e) {
      if (!this.live(session)) return;
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
    const session = this.session;
    if (!this.live(session)) return Promise.reject(new MeshError('unreachable', 'nobody is logged in here'));
    if (call.signal.aborted) return Promise.reject(new MeshError('cancelled', 'the sender stopped waiting'));
    const from = call.from;
    // The sender chooses the request ID: only the pair (sender, ID) identifies a request.
    const key = `${from} ${call.id}`;
    if (this.pendingIncoming.has(key)) return Promise.reject(new MeshError('bad_request', 'a chat message with this ID is already waiting'));
    let waiting = 0;
    for (const entry of this.pendingIncoming.values()) if (entry.from === from) waiting += 1;
    if (waiting >= MAX_WAITING_PER_SENDER) {
      return Promise.reject(
        new MeshError('rate_limited', `${MAX_WAITING_PER_SENDER} of your chat messages are already waiting for an answer; wait for those first`),
      );
    }
    const itemId = `in-${newId()}`;
    const now = Date.now();
    const item: IncomingItem = {
      kind: 'in',
      id: itemId,
      callId: call.id,
      from,
      capability: call.capability,
      body: showBody(call.body),
      at: now,
      // The person has 60 s, or less when the caller stops waiting sooner (its timeout_ms).
      deadline: Math.min(now + this.incomingTimeoutMs, call.deadlineMs ?? Number.POSITIVE_INFINITY),
      status: 'waiting',
    };
    this.addItem(from, item, this.state.selected === from ? {} : { unread: { ...this.state.unread, [from]: (this.state.unread[from] ?? 0) + 1 } });
    if (!this.state.agents.some((a) => a.agent_id === from)) void this.refresh();
    return new Promise<JsonValue>((resolve, reject) => {
      const entry: PendingIncoming = {
        from,
        itemId,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (this.pendingIncoming.get(key) !== entry) return;
          this.pendingIncoming.delete(key);
          this.patchItem<IncomingItem>(from, itemId, (i) => (i.status === 'waiting' ? { ...i, status: 'timeout' } : i));
          reject(new MeshError('timeout', `nobody answered the chat message within ${Math.round(this.incomingTimeoutMs / 1000)} s`));
        }, this.incomingTimeoutMs),
      };
      this.pendingIncoming.set(key, entry);
      call.signal.addEventListener(
        'abort',
        () => {
          if (this.pendingIncoming.get(key) !== entry) return;
          clearTimeout(entry.timer);
          this.pendingIncoming.delete(key);
          this.patchItem<IncomingItem>(from, itemId, (i) => (i.status === 'waiting' ? { ...i, status: 'cancelled' } : i));
          reject(new MeshError('cancelled', 'the sender stopped waiting'));
        },
        { once: true },
      );
    });
  }

  /** The person's answer to the incoming chat request `id` (the item's ID) from `from`. True when it was sent. */
  reply(from: string, id: string, text: string): boolean {
    const item = this.findItem(from, id);
    if (item?.kind !== 'in' || item.status !== 'waiting') return false;
    const key = `${from} ${item.callId}`;
    const entry = this.pendingIncoming.get(key);
    if (!entry || entry.itemId !== id || entry.from !== from) return false;
    clearTimeout(entry.timer);
    this.pendingIncoming.delete(key);
    entry.resolve({ message: text });
    this.patchItem<IncomingItem>(from, id, (i) => ({ ...i, status: 'answered', reply: text }));
    return true;
  }

  dismissNotice(): void {
    this.set({ notice: undefined });
  }
}
