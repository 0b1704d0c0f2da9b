// The client side of the relay connection (protocol §6, docs/protocol.md "Relay link details"), on
// the WebSocket API browsers offer (injectable; default globalThis.WebSocket):
//
// - hello → challenge → auth → welcome, or hello(resume) → welcome. The challenge's relay_id must
//   match the URL dialled (or options.expectedRelayId) before anything is signed; a mismatch closes
//   with 1000 and moves on to the next URL.
// - Resume tokens are kept per normalised relay URL, shown only to the relay that issued them,
//   single use (after a fail-over A → B → A, A sees its own token again, never B's).
// - Keepalive: browsers cannot send WebSocket pings, so `{"type":"ping"}` goes out every
//   heartbeat_ms (from the welcome, clamped to 500 ms – 1 h); when a ping got nothing at all back
//   by the next one, the link is presumed dead and dropped at once (noticed within 1–2 intervals).
// - Stored envelopes (the first `buffered` after welcome) are acked once onEnvelope has returned,
//   ≤ 256 IDs per frame: at 256, after the last stored one, or 20 ms after the first pending one.
//   Acks not yet written when the link fails over go only to the relay that delivered them: a
//   connection to another relay drops them (that relay never stored those envelopes).
// - Frames sent while offline wait (at most maxQueuedFrames and maxQueuedBytes) and go out after
//   the next welcome.
// - whenDrained() waits for the queue and for the socket's own buffer (bufferedAmount, polled
//   every 25 ms while above the bound), so a producer is paced by the network while online too.
// - Reconnect: URLs in turn, full-jitter backoff in [0, min(reconnectMax, reconnectInitial·2^n)],
//   reset after a welcome. After 4009 (replaced) or 4003 (revoked) it gives up for good.
// - During authentication every frame must arrive within connectTimeoutMs (so must the open).
import { MeshError, type MeshErrorCode, isKnownErrorCode } from './errors.js';
import {
  CLOSE_CODES,
  MAX_ACK_IDS,
  MAX_CONTROL_FRAME_BYTES,
  type ControlFrame,
  type UndeliverableFrame,
  ackFrame,
  authFrame,
  classifyFrame,
  controlFrameFromObject,
  helloFrame,
  normalizeRelayUrl,
  pingFrame,
  relayIdMatches,
} from './frames.js';
import type { Identity } from './identity.js';
import { type JsonValue, isJsonObject, parseIJson } from './ijson.js';
import { withDefaults } from './options.js';
import { isUuidV4 } from './uuid.js';

/** The part of the WebSocket API the link uses (browsers, Deno, Node ≥ 22, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  /** Bytes queued by send() but not yet transmitted (browsers, `ws`); absent: taken as 0. */
  readonly bufferedAmount?: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the link reports about itself (MeshAgent's onStatus). */
export type LinkStatus =
  | { state: 'connecting'; url: string; attempt: number }
  | { state: 'online'; url: string; resumed: boolean; buffered: number }
  | { state: 'offline'; url: string; reason: string; closeCode?: number; retryInMs: number }
  | {
      state: 'closed';
      reason: string;
      closeCode?: number;
      /** Why it will not reconnect: `cancelled` (closed by the application), `revoked` (4003), `unreachable` (4009, replaced). */
      code: MeshErrorCode;
    };

export interface RelayLinkOptions {
  identity: Identity;
  /** ws:// or wss:// relay URLs (path /relay/ws), tried in order. */
  urls: readonly string[];
  /** The relay_id the challenge must carry when it differs from the URL dialled. */
  expectedRelayId?: string | undefined;
  WebSocket?: WebSocketConstructor | undefined;
  /** Opening the WebSocket, and each frame during authentication, must happen within this. */
  connectTimeoutMs?: number | undefined;
  reconnectInitialMs?: number | undefined;
  reconnectMaxMs?: number | undefined;
  /** Frames larger than this are neither sent nor accepted after welcome (default 1 MiB). */
  maxFrameBytes?: number | undefined;
  /** Frames held while offline; past it send() returns false. */
  maxQueuedFrames?: number | undefined;
  /** ... and their bytes (default 8 MiB). */
  maxQueuedBytes?: number | undefined;
  /** whenDrained() also waits until the socket's bufferedAmount is at most this (default 256 KiB). */
  drainBufferedBytes?: number | undefined;
  /** Uniform [0, 1) for the jitter (tests fix it). */
  random?: (() => number) | undefined;
  onEnvelope: (frame: string) => void;
  onUndeliverable?: ((frame: UndeliverableFrame) => void) | undefined;
  onQueued?: ((id: string) => void) | undefined;
  onStatus?: ((status: LinkStatus) => void) | undefined;
  onLog?: ((level: 'debug' | 'info' | 'warn' | 'error', event: string, detail: string) => void) | undefined;
}

const DEFAULTS = {
  connectTimeoutMs: 5000,
  reconnectInitialMs: 200,
  reconnectMaxMs: 10_000,
  maxFrameBytes: 1024 * 1024,
  maxQueuedFrames: 4096,
  maxQueuedBytes: 8 * 1024 * 1024,
  drainBufferedBytes: 256 * 1024,
};
/** How often whenDrained() looks at bufferedAmount while it is above the bound. */
const DRAIN_POLL_MS = 25;
const MIN_HEARTBEAT_MS = 500;
const MAX_HEARTBEAT_MS = 3600 * 1000;
/** Acks of stored envelopes wait at most this long for company. */
const ACK_LINGER_MS = 20;
const OPEN = 1;

/** Full jitter: uniform in [0, min(max, initial · 2^attempt)] (docs/protocol.md). */
export function reconnectDelay(initialMs: number, maxMs: number, attempt: number, unit: number): number {
  const ceiling = Math.min(Math.max(0, maxMs), Math.max(0, initialMs) * 2 ** Math.min(attempt, 62));
  const u = Number.isFinite(unit) ? Math.min(Math.max(unit, 0), 1) : 0;
  return Math.min(Math.floor(ceiling * u), Math.max(0, maxMs));
}

/** The `id` of an envelope frame, for its ack (a stored envelope the receiver drops is acked too). */
function envelopeIdOf(value: JsonValue): string | undefined {
  if (!isJsonObject(value)) return undefined;
  const id = value['id'];
  return isUuidV4(id) ? id : undefined;
}

/** JSON.parse's reading of a frame when it is an object (syntax only), else undefined. */
function looseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function utf8Length(text: string): number {
  // Exact for well-formed text; the relay's bounds are in bytes.
  let length = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) length += code >= 0x800 && (code < 0xd800 || code > 0xdfff) ? 2 : 1;
  }
  return length;
}

/** What ended one connection. */
interface Ending {
  closeCode?: number | undefined;
  reason: string;
  /** Set when no later connection can do better (the identity cannot sign): give up with this code. */
  giveUp?: MeshErrorCode;
}

/** One WebSocket, from dial to close. */
class Connection {
  readonly ws: WebSocketLike;
  readonly url: string;
  phase: 'opening' | 'hello' | 'live' | 'done' = 'opening';
  challenged = false;
  sentResume = false;
  relayError = '';
  lastHeard = 0;
  lastPingSent = 0;
  heartbeatMs = 0;
  storedRemaining = 0;

  constructor(ws: WebSocketLike, url: string) {
    this.ws = ws;
    this.url = url;
  }
}

export class RelayLink {
  readonly #options: Required<Omit<RelayLinkOptions, 'expectedRelayId' | 'onUndeliverable' | 'onQueued' | 'onStatus' | 'onLog' | 'WebSocket' | 'random'>> &
    RelayLinkOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #random: () => number;
  #conn: Connection | undefined;
  #started = false;
  #closing = false;
  #gaveUp: { code: MeshErrorCode; reason: string; closeCode?: number | undefined } | undefined;
  #urlIndex = 0;
  #attempt = 0;
  #queue: string[] = [];
  #queuedBytes = 0;
  #acksOut: string[] = [];
  #pendingAcks: string[] = [];
  /** The relay (normalised URL) that delivered the stored envelopes pendingAcks/acksOut ack. */
  #acksRelay: string | undefined;
  /** Resume tokens by normalised relay URL (single use). */
  readonly #resume = new Map<string, string>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #authTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  #backoffTimer: ReturnType<typeof setTimeout> | undefined;
  #closeWaiters: (() => void)[] = [];
  #drainWaiters: { below: number; maxBuffered: number; resolve: () => void }[] = [];
  #drainPoll: ReturnType<typeof setTimeout> | undefined;

  constructor(options: RelayLinkOptions) {
    const WebSocketImpl =
      options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WebSocketImpl === undefined) {
      throw new MeshError('internal', 'no WebSocket in this runtime: pass options.WebSocket (in Node 20, the `ws` package)');
    }
    if (options.urls.length === 0) throw new MeshError('bad_request', 'no relay URL configured');
    for (const url of options.urls) {
      if (normalizeRelayUrl(url) === null) {
        throw new MeshError('bad_request', `not a ws:// or wss:// relay URL: ${url.slice(0, 200)}`);
      }
    }
    this.#WebSocket = WebSocketImpl;
    this.#random = options.random ?? Math.random;
    this.#options = { ...options, ...withDefaults(options, DEFAULTS) };
  }

  /** True between a welcome and the end of that connection. */
  get connected(): boolean {
    return this.#conn?.phase === 'live';
  }

  /** Why the link stopped for good, if it did. */
  get gaveUp(): { code: MeshErrorCode; reason: string; closeCode?: number | undefined } | undefined {
    return this.#gaveUp;
  }

  /** Frames waiting for the connection (or for the socket to take them). */
  get queuedFrames(): number {
    return this.#queue.length;
  }

  /** Their bytes (UTF-8). */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** What the live socket holds but has not transmitted yet (0 when offline). */
  get bufferedAmount(): number {
    const conn = this.#conn;
    if (conn === undefined || conn.phase !== 'live') return 0;
    const amount = conn.ws.bufferedAmount;
    return typeof amount === 'number' && Number.isFinite(amount) && amount > 0 ? amount : 0;
  }

  start(): void {
    if (this.#started || this.#closing) return;
    this.#started = true;
    this.#dial();
  }

  /**
   * Queues an envelope frame; false when it cannot be sent (too large, the queue is full, the link
   * closed or gave up).
   */
  send(frame: string): boolean {
    if (this.#gaveUp !== undefined || this.#closing) return false;
    const bytes = utf8Length(frame);
    if (bytes > this.#options.maxFrameBytes) {
      this.#log('warn', 'relay.frame_too_large', `${frame.length} characters`);
      return false;
    }
    if (this.#queue.length >= this.#options.maxQueuedFrames) return false;
    if (this.#queue.length > 0 && this.#queuedBytes + bytes > this.#options.maxQueuedBytes) return false;
    this.#queue.push(frame);
    this.#queuedBytes += bytes;
    this.#flush();
    return true;
  }

  /**
   * Resolves once fewer than `below` frames are queued and the socket's bufferedAmount is at most
   * `maxBuffered` (default drainBufferedBytes), or the link is closed.
   */
  whenDrained(below: number, maxBuffered: number = this.#options.drainBufferedBytes): Promise<void> {
    if (this.#isDrained(below, maxBuffered) || this.#gaveUp !== undefined || this.#closing) return Promise.resolve();
    return new Promise((resolve) => {
      this.#drainWaiters.push({ below, maxBuffered, resolve });
      this.#checkDrainWaiters();
    });
  }

  #isDrained(below: number, maxBuffered: number): boolean {
    return this.#queue.length < below && this.bufferedAmount <= maxBuffered;
  }

  /** Flushes pending acks, closes with 1000 and stops reconnecting. Resolves when the socket is gone. */
  close(): Promise<void> {
    if (this.#closing) {
      return this.#conn === undefined ? Promise.resolve() : new Promise((resolve) => this.#closeWaiters.push(resolve));
    }
    const wasGaveUp = this.#gaveUp !== undefined;
    this.#closing = true;
    this.#clearTimer(this.#backoffTimer);
    this.#flushAcks();
    const conn = this.#conn;
    const done = conn === undefined ? Promise.resolve() : new Promise<void>((resolve) => this.#closeWaiters.push(resolve));
    if (conn !== undefined) {
      this.#flush();
      this.#closeSocket(conn, CLOSE_CODES.normal);
      // A peer that never answers the close handshake must not hold close() forever.
      this.#after(1000, () => this.#ended(conn, { closeCode: CLOSE_CODES.normal, reason: 'closed by the application' }));
    }
    if (!wasGaveUp) {
      this.#gaveUp = { code: 'cancelled', reason: 'closed: the application closed the link' };
      this.#status({ state: 'closed', reason: this.#gaveUp.reason, code: 'cancelled', ...(conn?.phase === 'live' ? { closeCode: 1000 } : {}) });
    }
    this.#checkDrainWaiters();
    return done.then(() => {
      for (const timer of this.#timers) clearTimeout(timer);
      this.#timers.clear();
    });
  }

  // ---- plumbing ----

  #log(level: 'debug' | 'info' | 'warn' | 'error', event: string, detail: string): void {
    try {
      this.#options.onLog?.(level, event, detail);
    } catch {
      // nowhere left to report it
    }
  }

  #status(status: LinkStatus): void {
    try {
      this.#options.onStatus?.(status);
    } catch (error) {
      this.#log('error', 'relay.handler_threw', `onStatus: ${String(error)}`);
    }
  }

  #after(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #clearTimer(timer: ReturnType<typeof setTimeout> | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  /** Resolves the drain waiters whose bound is met (all once closed); polls bufferedAmount meanwhile. */
  #checkDrainWaiters(): void {
    const over = this.#gaveUp !== undefined || this.#closing;
    const ready = over ? this.#drainWaiters : this.#drainWaiters.filter((w) => this.#isDrained(w.below, w.maxBuffered));
    if (ready.length > 0) this.#drainWaiters = this.#drainWaiters.filter((w) => !ready.includes(w));
    for (const waiter of ready) waiter.resolve();
    // The socket's buffer empties without an event: look again shortly while someone waits on it.
    if (this.#drainWaiters.length > 0 && this.bufferedAmount > 0 && this.#drainPoll === undefined) {
      this.#drainPoll = this.#after(DRAIN_POLL_MS, () => {
        this.#drainPoll = undefined;
        this.#checkDrainWaiters();
      });
    }
  }

  // ---- dialling ----

  #dial(): void {
    if (this.#closing || this.#gaveUp !== undefined) return;
    const urls = this.#options.urls;
    const url = urls[this.#urlIndex % urls.length]!;
    this.#status({ state: 'connecting', url, attempt: this.#attempt });
    this.#log('info', 'relay.connecting', url);
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(url);
    } catch (error) {
      this.#retry({ reason: `cannot open a WebSocket to ${url}: ${String(error)}` }, url);
      return;
    }
    const conn = new Connection(ws, url);
    this.#conn = conn;
    ws.onopen = () => this.#onOpen(conn);
    ws.onmessage = (event) => {
      try {
        this.#onMessage(conn, event.data);
      } catch (error) {
        // Nothing may escape into the WebSocket's event dispatch: end this connection instead.
        this.#log('error', 'relay.internal', error instanceof Error ? error.message : String(error));
        this.#violation(conn, CLOSE_CODES.normal, `internal error handling a relay frame: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    ws.onerror = () => {
      // The close event that follows says what happened.
    };
    ws.onclose = (event) => {
      const reason = conn.relayError !== '' ? `; relay error ${conn.relayError}` : '';
      const code = event.code === 1005 || event.code === 1006 ? undefined : event.code;
      this.#ended(conn, {
        closeCode: code,
        reason:
          conn.phase === 'opening'
            ? `cannot connect to ${url} (close ${event.code})`
            : `the relay closed the connection (${event.code}${event.reason ? ` ${event.reason}` : ''})${reason}`,
      });
    };
    this.#armAuthTimer(conn, 'opening the WebSocket');
  }

  #armAuthTimer(conn: Connection, what: string): void {
    this.#clearTimer(this.#authTimer);
    this.#authTimer = this.#after(this.#options.connectTimeoutMs, () => {
      if (conn.phase === 'opening' || conn.phase === 'hello') {
        this.#closeSocket(conn, CLOSE_CODES.normal);
        this.#ended(conn, { reason: `timed out ${what} (${this.#options.connectTimeoutMs} ms)` });
      }
    });
  }

  #onOpen(conn: Connection): void {
    if (conn !== this.#conn || conn.phase !== 'opening') return;
    conn.phase = 'hello';
    const relay = normalizeRelayUrl(conn.url) ?? conn.url;
    const resume = this.#resume.get(relay);
    this.#resume.delete(relay); // single use (§6): consumed whatever happens next
    conn.sentResume = resume !== undefined;
    this.#write(conn, helloFrame(this.#options.identity.agentId, resume));
    this.#armAuthTimer(conn, 'waiting for the challenge');
  }

  #write(conn: Connection, text: string): boolean {
    if (conn.ws.readyState !== OPEN) return false;
    try {
      conn.ws.send(text);
      return true;
    } catch (error) {
      this.#log('warn', 'relay.write_failed', String(error));
      return false;
    }
  }

  #closeSocket(conn: Connection, code: number): void {
    try {
      conn.ws.close(code);
    } catch {
      try {
        conn.ws.close(CLOSE_CODES.badRequest);
      } catch {
        // already closing
      }
    }
  }

  /** A frame from the relay that ends the connection: we close with `code`. */
  #violation(conn: Connection, code: number, reason: string): void {
    this.#closeSocket(conn, code);
    this.#ended(conn, { closeCode: code, reason: `${reason} (closed with ${code})` });
  }

  #onMessage(conn: Connection, data: unknown): void {
    if (conn !== this.#conn || conn.phase === 'done') return;
    conn.lastHeard = Date.now();
    if (typeof data !== 'string') {
      this.#violation(conn, CLOSE_CODES.badRequest, 'a binary frame from the relay');
      return;
    }
    const limit = conn.phase === 'live' ? this.#options.maxFrameBytes : MAX_CONTROL_FRAME_BYTES;
    let value: JsonValue | undefined;
    let kind: 'control' | 'envelope';
    try {
      value = parseIJson(data, { maxBytes: limit });
      kind = classifyFrame(value);
    } catch (error) {
      if (error instanceof MeshError && error.code === 'too_large') {
        this.#violation(conn, CLOSE_CODES.tooBig, `a frame over ${limit} bytes from the relay`);
        return;
      }
      // The relay checks only an envelope's top level; what is nested (duplicate names, huge
      // integers) is the receiver's to judge. Such an envelope is handed on (the engine drops it,
      // and a stored one is acked); a frame that is not even JSON, or a bad control frame, ends
      // the connection.
      const loose = value === undefined ? looseObject(data) : undefined;
      if (conn.phase === 'live' && loose !== undefined && Object.hasOwn(loose, 'msg_type') && !Object.hasOwn(loose, 'type')) {
        this.#onEnvelopeFrame(conn, data, loose as JsonValue);
        return;
      }
      this.#violation(conn, CLOSE_CODES.badRequest, `unreadable frame from the relay: ${(error as Error).message}`);
      return;
    }
    if (conn.phase !== 'live') {
      this.#onAuthFrame(conn, value, kind);
      return;
    }
    if (kind === 'envelope') {
      this.#onEnvelopeFrame(conn, data, value);
      return;
    }
    const frame = this.#controlFrame(conn, value);
    if (frame === undefined) return;
    switch (frame.type) {
      case 'queued':
        this.#guard('onQueued', () => this.#options.onQueued?.(frame.id));
        return;
      case 'undeliverable':
        this.#guard('onUndeliverable', () => this.#options.onUndeliverable?.(frame));
        return;
      case 'error':
        // The relay closes right after an error; the close's reason will name it.
        conn.relayError = `${frame.code}: ${frame.message}`;
        this.#log('warn', 'relay.error', conn.relayError);
        return;
      case 'pong':
        this.#log('debug', 'relay.pong', conn.url);
        return;
      default:
        this.#violation(conn, CLOSE_CODES.badRequest, `unexpected ${frame.type} frame from the relay after welcome`);
    }
  }

  /** The relay's control frame, or undefined after closing the link over a malformed one. */
  #controlFrame(conn: Connection, value: JsonValue): ControlFrame | undefined {
    try {
      return controlFrameFromObject(value as never, 'relay');
    } catch (error) {
      this.#malformed(conn, error);
      return undefined;
    }
  }

  #malformed(conn: Connection, error: unknown): void {
    const code =
      error instanceof MeshError && error.code === 'unsupported_version' ? CLOSE_CODES.unsupportedVersion : CLOSE_CODES.badRequest;
    this.#violation(conn, code, `malformed control frame from the relay: ${(error as Error).message}`);
  }

  #guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#log('error', 'relay.handler_threw', `${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  // ---- authentication ----

  #onAuthFrame(conn: Connection, value: JsonValue, kind: 'control' | 'envelope'): void {
    if (kind === 'envelope') {
      this.#violation(conn, CLOSE_CODES.badRequest, 'an envelope before authentication');
      return;
    }
    const frame = this.#controlFrame(conn, value);
    if (frame === undefined) return;
    if (frame.type === 'error') {
      // The relay closes after an error; its close code says whether to retry (4003: never).
      conn.relayError = `${frame.code}: ${frame.message}`;
      this.#log('warn', 'relay.error', conn.relayError);
      return;
    }
    if (frame.type === 'welcome') {
      if (!conn.challenged && !conn.sentResume) {
        this.#violation(conn, CLOSE_CODES.badRequest, 'welcome without authentication');
        return;
      }
      this.#goLive(conn, frame.session_token, frame.heartbeat_ms, frame.buffered, !conn.challenged);
      return;
    }
    if (frame.type !== 'challenge' || conn.challenged) {
      this.#violation(conn, CLOSE_CODES.badRequest, `unexpected ${frame.type} frame during authentication`);
      return;
    }
    conn.challenged = true;
    const expected = this.#options.expectedRelayId ?? conn.url;
    if (!relayIdMatches(expected, frame.relay_id)) {
      // Signing would hand this relay an auth for another one (§6): abort before signing.
      this.#closeSocket(conn, CLOSE_CODES.normal);
      this.#ended(conn, {
        reason:
          `relay_id mismatch: expected ${expected} but the relay calls itself ${frame.relay_id.slice(0, 200)} ` +
          '(not authenticating; set expectedRelayId if this relay is right)',
      });
      return;
    }
    let auth: string;
    try {
      auth = authFrame(this.#options.identity, frame);
    } catch (error) {
      // E.g. the identity was destroyed: nothing to authenticate with on this connection.
      const why = error instanceof Error ? error.message : String(error);
      this.#log('error', 'relay.auth_failed', why);
      this.#closeSocket(conn, CLOSE_CODES.normal);
      this.#ended(conn, { reason: `cannot sign the relay's challenge: ${why}; not reconnecting`, giveUp: 'internal' });
      return;
    }
    this.#write(conn, auth);
    this.#armAuthTimer(conn, 'waiting for the welcome');
  }

  #goLive(conn: Connection, token: string, heartbeatMs: number, buffered: number, resumed: boolean): void {
    this.#clearTimer(this.#authTimer);
    conn.phase = 'live';
    const relay = normalizeRelayUrl(conn.url) ?? conn.url;
    this.#resume.set(relay, token);
    if (this.#acksRelay !== undefined && this.#acksRelay !== relay && this.#pendingAcks.length + this.#acksOut.length > 0) {
      // Acks belong to the relay that stored the envelopes; another relay has nothing to delete.
      this.#log('info', 'relay.acks_dropped', `${this.#pendingAcks.length + this.#acksOut.length} acks for ${this.#acksRelay} after a fail-over`);
      this.#clearTimer(this.#ackTimer);
      this.#ackTimer = undefined;
      this.#pendingAcks = [];
      this.#acksOut = [];
    }
    this.#acksRelay = relay;
    conn.storedRemaining = buffered;
    conn.heartbeatMs = Math.min(Math.max(heartbeatMs, MIN_HEARTBEAT_MS), MAX_HEARTBEAT_MS);
    conn.lastHeard = Date.now();
    this.#attempt = 0;
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(conn), conn.heartbeatMs);
    this.#log('info', 'relay.connected', `${conn.url}${resumed ? ' (resumed)' : ''}, ${buffered} stored envelopes follow`);
    this.#status({ state: 'online', url: conn.url, resumed, buffered });
    // Acks left over from the previous connection, then the frames queued meanwhile, in order.
    this.#flushAcks();
    this.#flush();
  }

  #heartbeat(conn: Connection): void {
    if (conn !== this.#conn || conn.phase !== 'live') return;
    // Dead when the previous ping got no frame at all back within a whole interval. Measured from
    // our own ping rather than by wall-clock silence, so a background tab whose timers the browser
    // throttles (to once a minute) is not mistaken for a dead link.
    if (conn.lastPingSent > 0 && conn.lastHeard < conn.lastPingSent) {
      // Presumed dead: no close handshake can complete on it, so it is dropped at once.
      this.#closeSocket(conn, CLOSE_CODES.normal);
      this.#ended(conn, {
        reason: `the relay did not answer a ping within ${Date.now() - conn.lastPingSent} ms (connection presumed dead)`,
      });
      return;
    }
    conn.lastPingSent = Date.now();
    this.#write(conn, pingFrame());
  }

  // ---- envelopes and acks ----

  #onEnvelopeFrame(conn: Connection, text: string, value: JsonValue): void {
    const stored = conn.storedRemaining > 0;
    let id: string | undefined;
    if (stored) {
      conn.storedRemaining -= 1;
      id = envelopeIdOf(value);
    }
    this.#guard('onEnvelope', () => this.#options.onEnvelope(text));
    if (!stored) return;
    // Processed or dropped, whatever the verdict (§6): acked so that it is not delivered again.
    if (id !== undefined) {
      this.#acksRelay = normalizeRelayUrl(conn.url) ?? conn.url;
      this.#pendingAcks.push(id);
      if (this.#pendingAcks.length >= MAX_ACK_IDS || conn.storedRemaining === 0) {
        this.#flushAcks();
      } else if (this.#ackTimer === undefined) {
        this.#ackTimer = this.#after(ACK_LINGER_MS, () => {
          this.#ackTimer = undefined;
          this.#flushAcks();
        });
      }
    } else {
      this.#log('warn', 'relay.unackable', 'a stored envelope without a readable id; the relay will redeliver it');
      if (conn.storedRemaining === 0) this.#flushAcks();
    }
  }

  #flushAcks(): void {
    this.#clearTimer(this.#ackTimer);
    this.#ackTimer = undefined;
    while (this.#pendingAcks.length > 0) {
      const ids = this.#pendingAcks.splice(0, MAX_ACK_IDS);
      this.#log('debug', 'relay.acked', `${ids.length} stored envelopes`);
      this.#acksOut.push(ackFrame(ids));
    }
    this.#flush();
  }

  /** Writes acks, then queued envelope frames, while the connection is live. */
  #flush(): void {
    const conn = this.#conn;
    if (conn === undefined || conn.phase !== 'live') return;
    while (this.#acksOut.length > 0) {
      if (!this.#write(conn, this.#acksOut[0]!)) return;
      this.#acksOut.shift();
    }
    while (this.#queue.length > 0) {
      if (!this.#write(conn, this.#queue[0]!)) return;
      this.#queuedBytes -= utf8Length(this.#queue.shift()!);
    }
    if (this.#queue.length === 0) this.#queuedBytes = 0;
    this.#checkDrainWaiters();
  }

  // ---- the end of a connection ----

  #ended(conn: Connection, ending: Ending): void {
    if (conn.phase === 'done') return;
    const wasLive = conn.phase === 'live';
    conn.phase = 'done';
    conn.ws.onopen = null;
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    conn.ws.onerror = null;
    if (this.#conn === conn) this.#conn = undefined;
    this.#clearTimer(this.#authTimer);
    if (this.#heartbeatTimer !== undefined) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    this.#checkDrainWaiters();
    if (this.#closing) {
      this.#log('info', 'relay.closed', conn.url);
      const waiters = this.#closeWaiters;
      this.#closeWaiters = [];
      for (const resolve of waiters) resolve();
      return;
    }
    if (wasLive) this.#log('warn', 'relay.disconnected', `${conn.url}: ${ending.reason}`);
    if (ending.giveUp !== undefined) {
      this.#giveUp(ending.giveUp, ending.reason, CLOSE_CODES.normal);
      return;
    }
    if (ending.closeCode === CLOSE_CODES.replaced) {
      this.#giveUp('unreachable', 'replaced: another process connected as this agent (close 4009); not reconnecting', 4009);
      return;
    }
    if (ending.closeCode === CLOSE_CODES.revoked) {
      this.#giveUp('revoked', "revoked: the relay refuses this agent's key (close 4003); not reconnecting", 4003);
      return;
    }
    this.#retry(ending, conn.url);
  }

  #retry(ending: Ending, url: string): void {
    // Fail over: the next URL after any close or failed dial, wrapping around.
    this.#urlIndex += 1;
    const delay = reconnectDelay(this.#options.reconnectInitialMs, this.#options.reconnectMaxMs, this.#attempt, this.#random());
    if (this.#attempt < 64) this.#attempt += 1;
    this.#log('warn', 'relay.retrying', `${url}: ${ending.reason}; retrying in ${delay} ms`);
    this.#status({
      state: 'offline',
      url,
      reason: ending.reason,
      ...(ending.closeCode !== undefined ? { closeCode: ending.closeCode } : {}),
      retryInMs: delay,
    });
    this.#backoffTimer = this.#after(delay, () => {
      this.#backoffTimer = undefined;
      this.#dial();
    });
  }

  #giveUp(code: MeshErrorCode, reason: string, closeCode: number): void {
    this.#gaveUp = { code, reason, closeCode };
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#acksOut = [];
    this.#pendingAcks = [];
    this.#log('error', 'relay.gave_up', reason);
    this.#status({ state: 'closed', reason, closeCode, code });
    this.#checkDrainWaiters();
  }
}

/** An `undeliverable` code as a MeshError code (all six are known codes). */
export function undeliverableCode(code: string): MeshErrorCode {
  return isKnownErrorCode(code) ? code : 'unreachable';
}
