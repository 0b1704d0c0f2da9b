// The public API: MeshClient (requests and streams to other agents) and MeshAgent (that, plus
// serving capabilities), the I/O shell around the sans-IO Endpoint and the RelayLink. Everything runs
// on the JavaScript event loop: the engine is touched only from here, and timers drive its deadlines.
//
//   const agent = new MeshAgent(identity, { relayUrl: 'ws://127.0.0.1:8080/relay/ws', isAllowed });
//   agent.handle('chat', async (call) => ({ reply: '…' }));
//   agent.handleStream('count', async function* (call) { yield 1; yield 2; });
//   const body = await agent.request(target, 'echo', { text: 'hi' }, { timeoutMs: 10_000, signal });
//   for await (const chunk of agent.stream(target, 'count', {})) { … }
//   await agent.close();
//
// Semantics are the C++ SDK's (meshd-sdk.md, docs/protocol.md "SDK"): the deadline (default 30 s)
// covers the handshake and the reply and is sent as timeout_ms; aborting the signal sends `cancel`
// and rejects with `cancelled`; incoming requests are checked in the order revoked → ACL (default:
// deny all) → unknown_capability → unary/stream mismatch, then the handler runs with an AbortSignal
// that fires when the caller cancels, the deadline passes or the agent closes.
import type { EndpointOptions, EndpointEvent, IncomingRequestEvent, RequestHandle } from './endpoint.js';
import { Endpoint } from './endpoint.js';
import { MeshError, type MeshErrorCode, isKnownErrorCode } from './errors.js';
import type { Identity } from './identity.js';
import type { JsonValue } from './ijson.js';
import { type LinkStatus, RelayLink, type WebSocketConstructor, undeliverableCode } from './relay_link.js';

export type { LinkStatus, WebSocketConstructor } from './relay_link.js';

export interface MeshClientOptions {
  /** The relay's WebSocket URL, e.g. ws://127.0.0.1:8080/relay/ws (or relayUrls for fail-over). */
  relayUrl?: string;
  /** Relay URLs tried in order, the next one after any close or failed dial. */
  relayUrls?: readonly string[];
  /** The relay_id the challenge must carry when it differs from the URL dialled. */
  expectedRelayId?: string;
  /** The WebSocket class (default globalThis.WebSocket; in Node 20 pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Relay connection status: 'connecting' | 'online' | 'offline' | 'closed' (with the reason). */
  onStatus?: (status: LinkStatus) => void;
  /** Peers exchanged with in plaintext (configured on both ends, protocol §5); never chosen at run time. */
  plaintextPeers?: readonly string[];
  /** Requests without timeoutMs wait this long (default 30 s); sent to the peer as timeout_ms. */
  defaultTimeoutMs?: number;
  connectTimeoutMs?: number;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Frames held while the relay connection is down (default 4096) ... */
  maxQueuedFrames?: number;
  /** ... and their bytes (default 8 MiB). */
  maxQueuedBytes?: number;
  /** Bytes of stream chunks waiting for a reader, per stream (default 8 MiB; also at most 1,024 chunks). */
  maxBufferedStreamBytes?: number;
  /** Engine limits (sessions, freshness, sizes) for tests and tuning. */
  endpoint?: Omit<EndpointOptions, 'plaintextPeers' | 'defaultTimeoutMs'>;
  /** Log lines (no secrets, no payloads). */
  onLog?: (level: 'debug' | 'info' | 'warn' | 'error', event: string, detail: string) => void;
}

export interface MeshAgentOptions extends MeshClientOptions {
  /** The ACL: may `from` call `capability` on this agent? Default: deny everything. */
  isAllowed?: (from: string, capability: string) => boolean | Promise<boolean>;
  /** Callers refused with `revoked` (e.g. the registry's revocation feed). Default: none. */
  isRevoked?: (from: string) => boolean | Promise<boolean>;
}

export interface RequestOptions {
  /** Covers the handshake and the reply; sent to the peer as timeout_ms. */
  timeoutMs?: number;
  /** Aborting sends `cancel` to the peer (its handler stops) and rejects with `cancelled`. */
  signal?: AbortSignal;
}

/** A request this agent serves. */
export interface IncomingCall {
  /** The request envelope's id (stable across a stored envelope's redelivery). */
  id: string;
  /** The caller's agent ID (authenticated by the Noise handshake or the envelope signature). */
  from: string;
  capability: string;
  body: JsonValue;
  stream: boolean;
  /** False only for peers configured in plaintextPeers. */
  encrypted: boolean;
  /** Unix ms when the caller stops waiting (receipt + its timeout_ms). */
  deadlineMs: number | undefined;
  /** Fires when the caller cancels, the deadline passes or the agent closes; its reason is a MeshError. */
  signal: AbortSignal;
}

/** Returns the response body; a thrown MeshError is sent as that §4 error, anything else as `internal`. */
export type Handler = (call: IncomingCall) => JsonValue | Promise<JsonValue>;
/** Yields the chunks; returning ends the stream, a thrown error is sent instead of the end. */
export type StreamHandler = (call: IncomingCall) => AsyncIterable<JsonValue> | Iterable<JsonValue>;

/** Without traffic the engine still ticks once a second: session lifetimes and the replay memory. */
const IDLE_TICK_MS = 1000;
/** Stream chunks waiting for a reader; past it the stream fails with internal and is cancelled. */
const MAX_BUFFERED_CHUNKS = 1024;
/** ... and their bytes (default of maxBufferedStreamBytes). */
const MAX_BUFFERED_STREAM_BYTES = 8 * 1024 * 1024;
/** A stream handler waits while more frames than this wait for the relay connection ... */
const HANDLER_BACKPRESSURE_FRAMES = 256;
/** ... or while the socket holds more than this unsent (then until ≤ 256 KiB, the link's default). */
const HANDLER_BACKPRESSURE_BYTES = 1024 * 1024;

function closedError(): MeshError {
  return new MeshError('cancelled', 'the client is closed');
}

/** A throw from the engine where a request is made: a rejection, never a synchronous throw. */
function asRequestError(error: unknown): MeshError {
  if (error instanceof MeshError) return error;
  return new MeshError('internal', error instanceof Error ? error.message : String(error));
}

/** `promise`, or earlier when `signal` aborts. */
function untilAborted(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener('abort', done);
      resolve();
    };
    signal.addEventListener('abort', done, { once: true });
    void promise.then(done);
  });
}

function asMeshError(error: unknown): MeshError {
  if (error instanceof MeshError && isKnownErrorCode(error.code)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new MeshError('internal', `handler threw: ${message}`.slice(0, 1000));
}

interface UnaryCall {
  resolve: (body: JsonValue) => void;
  reject: (error: MeshError) => void;
  cleanup: () => void;
}

/** The state behind one stream(): chunks in seq order, bounded, then the end or an error. */
class StreamState {
  readonly chunks: { body: JsonValue; bytes: number }[] = [];
  bytes = 0;
  readonly maxBytes: number;
  ended = false;
  error: MeshError | undefined;
  waiter: { resolve: (r: IteratorResult<JsonValue>) => void; reject: (e: MeshError) => void } | undefined;
  cleanup: () => void = () => {};

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get finished(): boolean {
    return this.ended || this.error !== undefined;
  }

  /** false: the reader is too far behind (too many chunks or bytes waiting). */
  push(chunk: JsonValue, bytes: number): boolean {
    if (this.finished) return true;
    if (this.waiter !== undefined) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter.resolve({ value: chunk, done: false });
      return true;
    }
    if (this.chunks.length >= MAX_BUFFERED_CHUNKS || this.bytes + bytes > this.maxBytes) return false;
    this.chunks.push({ body: chunk, bytes });
    this.bytes += bytes;
    return true;
  }

  shift(): JsonValue {
    const next = this.chunks.shift()!;
    this.bytes -= next.bytes;
    return next.body;
  }

  finish(error?: MeshError): void {
    if (this.finished) return;
    if (error !== undefined) this.error = error;
    else this.ended = true;
    this.cleanup();
    if (this.waiter !== undefined && this.chunks.length === 0) {
      const waiter = this.waiter;
      this.waiter = undefined;
      if (error !== undefined) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
  }
}

/** The chunks of a stream request, in seq order. Breaking out of `for await` cancels it. */
export class MeshStream implements AsyncIterable<JsonValue> {
  readonly #state: StreamState;
  readonly #cancel: () => void;

  /** @internal */
  constructor(state: StreamState, cancel: () => void) {
    this.#state = state;
    this.#cancel = cancel;
  }

  /** The next chunk; done after stream_end; rejects with MeshError when the stream fails. */
  next(): Promise<IteratorResult<JsonValue>> {
    const state = this.#state;
    if (state.chunks.length > 0) return Promise.resolve({ value: state.shift(), done: false });
    if (state.error !== undefined) return Promise.reject(state.error);
    if (state.ended) return Promise.resolve({ value: undefined, done: true });
    if (state.waiter !== undefined) return Promise.reject(new MeshError('bad_request', 'next() is already waiting'));
    return new Promise((resolve, reject) => {
      state.waiter = { resolve, reject };
    });
  }

  /** Sends `cancel`; the stream ends with `cancelled`. */
  cancel(): void {
    if (!this.#state.finished) this.#cancel();
  }

  [Symbol.asyncIterator](): AsyncIterator<JsonValue> {
    return {
      next: () => this.next(),
      return: async () => {
        this.cancel();
        return { value: undefined, done: true };
      },
    };
  }
}

interface ServedCall {
  controller: AbortController;
  deadlineMs: number | undefined;
}

/** A connection to the mesh that makes requests (it serves nothing: every request is refused). */
export class MeshClient {
  readonly identity: Identity;
  protected readonly endpoint: Endpoint;
  protected readonly link: RelayLink;
  readonly #options: MeshClientOptions;
  readonly #unary = new Map<RequestHandle, UnaryCall>();
  readonly #streams = new Map<RequestHandle, StreamState>();
  protected readonly served = new Map<string, ServedCall>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #closing = false;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #status: LinkStatus;
  #statusWaiters: (() => void)[] = [];
  #pumping = false;
  /** Set once close() has failed everything: no timer is armed any more. */
  #stopped = false;

  constructor(identity: Identity, options: MeshClientOptions) {
    this.identity = identity;
    this.#options = options;
    const urls = options.relayUrls ?? (options.relayUrl !== undefined ? [options.relayUrl] : []);
    this.endpoint = new Endpoint(identity, {
      ...options.endpoint,
      plaintextPeers: options.plaintextPeers ?? [],
      ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    });
    this.#status = { state: 'connecting', url: urls[0] ?? '', attempt: 0 };
    this.link = new RelayLink({
      identity,
      urls,
      expectedRelayId: options.expectedRelayId,
      WebSocket: options.WebSocket,
      connectTimeoutMs: options.connectTimeoutMs,
      reconnectInitialMs: options.reconnectInitialMs,
      reconnectMaxMs: options.reconnectMaxMs,
      maxFrameBytes: options.endpoint?.maxEnvelopeBytes,
      maxQueuedFrames: options.maxQueuedFrames,
      maxQueuedBytes: options.maxQueuedBytes,
      onEnvelope: (frame) => {
        this.endpoint.receive(frame, Date.now());
        this.#pump();
      },
      onUndeliverable: (frame) => {
        this.#log('info', 'envelope.undeliverable', frame.code);
        if (frame.id === null) return;
        this.endpoint.undeliverable(frame.id, undeliverableCode(frame.code), frame.retry_after_ms, Date.now());
        this.#pump();
      },
      onQueued: (id) => this.#log('debug', 'envelope.queued', id),
      onStatus: (status) => this.#onStatus(status),
      onLog: options.onLog,
    });
    this.link.start();
    this.#armTimer();
  }

  /** This agent's ID. */
  get id(): string {
    return this.identity.agentId;
  }

  /** The relay connection's last status. */
  get status(): LinkStatus {
    return this.#status;
  }

  /** Resolves once the relay has welcomed this agent; rejects on timeout or when the link gave up. */
  waitOnline(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const check = (): boolean => {
        if (this.#status.state === 'online') {
          resolve();
          return true;
        }
        if (this.#status.state === 'closed') {
          reject(new MeshError(this.#status.code, this.#status.reason));
          return true;
        }
        return false;
      };
      if (check()) return;
      const waiter = () => {
        if (check()) {
          clearTimeout(timer);
          return;
        }
        this.#statusWaiters.push(waiter);
      };
      this.#statusWaiters.push(waiter);
      timer = setTimeout(() => {
        const index = this.#statusWaiters.indexOf(waiter);
        if (index >= 0) this.#statusWaiters.splice(index, 1);
        reject(new MeshError('timeout', `not connected to a relay within ${timeoutMs} ms`));
      }, timeoutMs);
    });
  }

  /** Sends a request; resolves with the response body, rejects with MeshError. */
  request(target: string, capability: string, body: JsonValue, options: RequestOptions = {}): Promise<JsonValue> {
    const refusal = this.#refusal();
    if (refusal !== undefined) return Promise.reject(refusal);
    const signal = options.signal;
    if (signal?.aborted === true) return Promise.reject(new MeshError('cancelled', 'the signal was already aborted'));
    return new Promise<JsonValue>((resolve, reject) => {
      let handle: RequestHandle;
      try {
        handle = this.endpoint.request(target, capability, body, { timeoutMs: options.timeoutMs }, Date.now());
      } catch (error) {
        reject(asRequestError(error));
        return;
      }
      const onAbort = () => {
        this.endpoint.cancel(handle, Date.now(), 'cancelled: the signal was aborted');
        this.#pump();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#unary.set(handle, {
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      });
      this.#pump();
    });
  }

  /** Sends a stream request; iterate the result with `for await`. */
  stream(target: string, capability: string, body: JsonValue, options: RequestOptions = {}): MeshStream {
    const state = new StreamState(this.#options.maxBufferedStreamBytes ?? MAX_BUFFERED_STREAM_BYTES);
    let handle: RequestHandle | undefined;
    const cancel = () => {
      if (handle === undefined) return;
      this.endpoint.cancel(handle, Date.now(), 'cancelled: the stream was cancelled');
      this.#pump();
    };
    const stream = new MeshStream(state, cancel);
    const refusal = this.#refusal();
    if (refusal !== undefined) {
      state.finish(refusal);
      return stream;
    }
    const signal = options.signal;
    if (signal?.aborted === true) {
      state.finish(new MeshError('cancelled', 'the signal was already aborted'));
      return stream;
    }
    // Never throws here: a refusal (bad target, body, timeout…) arrives as the stream's error.
    try {
      handle = this.endpoint.request(target, capability, body, { stream: true, timeoutMs: options.timeoutMs }, Date.now());
    } catch (error) {
      state.finish(asRequestError(error));
      return stream;
    }
    const onAbort = () => {
      if (handle === undefined) return;
      this.endpoint.cancel(handle, Date.now(), 'cancelled: the signal was aborted');
      this.#pump();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    state.cleanup = () => signal?.removeEventListener('abort', onAbort);
    this.#streams.set(handle, state);
    this.#pump();
    return stream;
  }

  /**
   * Stops new work (`cancelled`: "the client is closed"), waits up to graceMs (default 0) for
   * requests in flight both ways, then fails the rest with `cancelled`, aborts the handlers'
   * signals and closes the relay connection with 1000.
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    if (this.#closePromise !== undefined) return this.#closePromise;
    this.#closing = true;
    this.#closePromise = (async () => {
      const graceMs = options.graceMs ?? 0;
      if (graceMs > 0) {
        const until = Date.now() + graceMs;
        while (Date.now() < until && this.#unary.size + this.#streams.size + this.served.size > 0) {
          await new Promise((resolve) => setTimeout(resolve, Math.min(20, until - Date.now())));
        }
      }
      this.#failEverything(closedError());
      for (const [key, call] of this.served) {
        call.controller.abort(closedError());
        this.served.delete(key);
      }
      // Nothing is left to time out: no timer from here on (frames arriving while the link closes
      // still reach the engine, which answers them, but must not re-arm one).
      this.#stopped = true;
      this.#pump();
      this.#clearTimer();
      try {
        await this.link.close();
      } finally {
        this.#closed = true;
        this.#clearTimer();
      }
    })();
    return this.#closePromise;
  }

  // ---- internals ----

  protected get closing(): boolean {
    return this.#closing;
  }

  #refusal(): MeshError | undefined {
    if (this.#closing) return closedError();
    const gaveUp = this.link.gaveUp;
    if (gaveUp !== undefined) return new MeshError(gaveUp.code, gaveUp.reason);
    return undefined;
  }

  protected log(level: 'debug' | 'info' | 'warn' | 'error', event: string, detail: string): void {
    this.#log(level, event, detail);
  }

  #log(level: 'debug' | 'info' | 'warn' | 'error', event: string, detail: string): void {
    try {
      this.#options.onLog?.(level, event, detail);
    } catch {
      // ignore
    }
  }

  #onStatus(status: LinkStatus): void {
    this.#status = status;
    if (status.state === 'closed' && !this.#closing) {
      // 4009 (replaced) or 4003 (revoked): nothing will get through any more.
      this.#failEverything(new MeshError(status.code, status.reason));
      for (const [key, call] of this.served) {
        call.controller.abort(new MeshError(status.code, status.reason));
        this.served.delete(key);
      }
    }
    const waiters = this.#statusWaiters;
    this.#statusWaiters = [];
    for (const waiter of waiters) waiter();
    try {
      this.#options.onStatus?.(status);
    } catch (error) {
      this.#log('error', 'onStatus.threw', String(error));
    }
  }

  #failEverything(error: MeshError): void {
    for (const handle of [...this.#unary.keys(), ...this.#streams.keys()]) {
      this.#completeUnary(handle, error);
      this.#finishStream(handle, error);
    }
    // All at once: no new handshake is started for a request about to be cancelled.
    this.endpoint.cancelAll(Date.now(), error.message);
    this.endpoint.takeEvents(); // the cancellations just reported what we already know
  }

  #completeUnary(handle: RequestHandle, outcome: { body: JsonValue } | MeshError): void {
    const call = this.#unary.get(handle);
    if (call === undefined) return;
    this.#unary.delete(handle);
    call.cleanup();
    if (outcome instanceof MeshError) call.reject(outcome);
    else call.resolve(outcome.body);
  }

  #finishStream(handle: RequestHandle, error?: MeshError): void {
    const state = this.#streams.get(handle);
    if (state === undefined) return;
    this.#streams.delete(handle);
    state.finish(error);
  }

  /** Sends what the engine produced and handles its events; re-arms the timer. */
  protected pump(): void {
    this.#pump();
  }

  #pump(): void {
    if (this.#pumping) return; // re-entered from an event handler: the running loop picks it up
    this.#pumping = true;
    try {
      for (;;) {
        for (const frame of this.endpoint.takeOutgoing()) {
          if (!this.link.send(frame.frame)) {
            this.#log('warn', 'frame.dropped', "the relay connection's send queue is full or closed");
            // The request that sent it (if any) fails now rather than at its deadline.
            this.endpoint.undeliverable(frame.id, this.link.gaveUp?.code ?? 'unreachable', undefined, Date.now());
          }
        }
        const events = this.endpoint.takeEvents();
        if (events.length === 0) break;
        for (const event of events) this.#onEvent(event);
      }
    } finally {
      this.#pumping = false;
    }
    this.#armTimer();
  }

  #onEvent(event: EndpointEvent): void {
    switch (event.type) {
      case 'incoming':
        this.onIncoming(event);
        return;
      case 'peer_cancelled':
        this.onPeerCancelled(event.from, event.id);
        return;
      case 'serve_failed':
        this.onServeFailed(event.from, event.id, event.error);
        return;
      case 'response':
        this.#completeUnary(event.handle, { body: event.body });
        return;
      case 'chunk': {
        const state = this.#streams.get(event.handle);
        if (state !== undefined && !state.push(event.body, event.bytes)) {
          this.#finishStream(
            event.handle,
            new MeshError('internal', `more than ${MAX_BUFFERED_CHUNKS} stream chunks or ${state.maxBytes} bytes waiting for the reader`),
          );
          this.endpoint.cancel(event.handle, Date.now());
        }
        return;
      }
      case 'stream_end':
        this.#finishStream(event.handle);
        return;
      case 'failure':
        this.#completeUnary(event.handle, event.error);
        this.#finishStream(event.handle, event.error);
        return;
    }
  }

  /** An incoming request: a MeshClient serves nothing (its ACL denies everything, as the C++ SDK's). */
  protected onIncoming(request: IncomingRequestEvent): void {
    if (this.#closing) {
      this.refuse(request, 'unreachable', 'the agent is shutting down');
      return;
    }
    this.refuse(request, 'acl_denied', `no ACL rule allows ${request.from} to call '${request.capability}' on ${this.id}`);
  }

  protected onPeerCancelled(from: string, id: string): void {
    this.onServeFailed(from, id, new MeshError('cancelled', 'the caller cancelled the request'));
  }

  /** A request served can no longer be answered (cancelled, or its reply undeliverable): stop the handler. */
  protected onServeFailed(from: string, id: string, error: MeshError): void {
    const key = `${from} ${id}`;
    const call = this.served.get(key);
    if (call === undefined) return;
    this.served.delete(key);
    this.#log('info', 'request.serve_failed', `${error.code} serving ${from}`);
    call.controller.abort(error);
  }

  protected refuse(request: { from: string; id: string; capability: string }, code: MeshErrorCode, message: string, retryAfterMs?: number): void {
    this.#log('info', 'request.refused', `${code} from ${request.from} for ${request.capability}`);
    try {
      this.endpoint.respondError(request.from, request.id, code, message, Date.now(), retryAfterMs);
    } catch (error) {
      this.#log('debug', 'reply.dropped', String(error));
    }
    this.served.delete(`${request.from} ${request.id}`);
    this.#pump();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #armTimer(): void {
    if (this.#closed || this.#stopped) return;
    const now = Date.now();
    let next = now + IDLE_TICK_MS;
    const deadline = this.endpoint.nextDeadline();
    if (deadline !== undefined && deadline < next) next = deadline;
    if (this.#timer !== undefined && this.#timerAt <= next) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = next;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#onTick();
    }, Math.max(0, next - now));
  }

  #onTick(): void {
    if (this.#closed) return;
    const now = Date.now();
    this.endpoint.tick(now);
    // Served requests past their deadline: the caller stopped waiting, so the handler should stop.
    for (const [key, call] of this.served) {
      if (call.deadlineMs !== undefined && now >= call.deadlineMs) {
        this.served.delete(key);
        call.controller.abort(new MeshError('timeout', "the caller's timeout has passed"));
      }
    }
    this.#pump();
  }
}

/** A MeshClient that also serves capabilities. */
export class MeshAgent extends MeshClient {
  readonly #handlers = new Map<string, { unary?: Handler; stream?: StreamHandler }>();
  readonly #agentOptions: MeshAgentOptions;

  constructor(identity: Identity, options: MeshAgentOptions) {
    super(identity, options);
    this.#agentOptions = options;
  }

  /** Serves `capability` with a unary handler (replaces an earlier one). */
  handle(capability: string, handler: Handler): this {
    this.#handlers.set(capability, { ...this.#handlers.get(capability), unary: handler });
    return this;
  }

  /** Serves `capability` as a stream (replaces an earlier one). */
  handleStream(capability: string, handler: StreamHandler): this {
    this.#handlers.set(capability, { ...this.#handlers.get(capability), stream: handler });
    return this;
  }

  protected override onIncoming(request: IncomingRequestEvent): void {
    if (this.closing) {
      this.refuse(request, 'unreachable', 'the agent is shutting down');
      return;
    }
    const controller = new AbortController();
    this.served.set(`${request.from} ${request.id}`, { controller, deadlineMs: request.deadlineMs });
    void this.#dispatch(request, controller.signal);
  }

  async #dispatch(request: IncomingRequestEvent, signal: AbortSignal): Promise<void> {
    const { from, capability } = request;
    try {
      if (this.#agentOptions.isRevoked !== undefined && (await this.#agentOptions.isRevoked(from))) {
        this.refuse(request, 'revoked', "the caller's key is revoked");
        return;
      }
      const allowed = this.#agentOptions.isAllowed === undefined ? false : await this.#agentOptions.isAllowed(from, capability);
      if (allowed !== true) {
        this.refuse(request, 'acl_denied', `no ACL rule allows ${from} to call '${capability}' on ${this.id}`);
        return;
      }
    } catch (error) {
      this.refuse(request, 'internal', `the access check failed: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    if (signal.aborted) return;
    const handlers = this.#handlers.get(capability);
    if (handlers === undefined) {
      this.refuse(request, 'unknown_capability', `no handler for capability '${capability}'`);
      return;
    }
    if (request.stream && handlers.stream === undefined) {
      this.refuse(request, 'bad_request', `capability '${capability}' does not stream`);
      return;
    }
    if (!request.stream && handlers.unary === undefined) {
      this.refuse(request, 'bad_request', `capability '${capability}' only streams`);
      return;
    }
    const call: IncomingCall = {
      id: request.id,
      from,
      capability,
      body: request.body,
      stream: request.stream,
      encrypted: request.encrypted,
      deadlineMs: request.deadlineMs,
      signal,
    };
    if (request.stream) await this.#runStream(call, handlers.stream!);
    else await this.#runUnary(call, handlers.unary!);
  }

  #finished(call: IncomingCall): void {
    this.served.delete(`${call.from} ${call.id}`);
  }

  async #runUnary(call: IncomingCall, handler: Handler): Promise<void> {
    let outcome: { body: JsonValue } | MeshError;
    try {
      outcome = { body: await handler(call) };
    } catch (error) {
      outcome = asMeshError(error);
    }
    if (call.signal.aborted) return; // the caller stopped waiting: send nothing more
    try {
      if (outcome instanceof MeshError) {
        this.endpoint.respondError(call.from, call.id, outcome.code, outcome.message, Date.now(), outcome.retryAfterMs);
      } else {
        this.endpoint.respond(call.from, call.id, outcome.body === undefined ? null : outcome.body, Date.now());
      }
    } catch (error) {
      this.#replyFailed(call, error);
    }
    this.#finished(call);
    this.pump();
  }

  async #runStream(call: IncomingCall, handler: StreamHandler): Promise<void> {
    let failure: MeshError | undefined;
    try {
      const iterable = handler(call);
      for await (const chunk of iterable) {
        if (call.signal.aborted) break;
        try {
          this.endpoint.sendChunk(call.from, call.id, chunk, Date.now());
        } catch (error) {
          // cancelled, timed out, too large: the engine already told the caller what it needs to.
          this.#replyFailed(call, error);
          this.#finished(call);
          this.pump();
          return;
        }
        this.pump();
        if (this.link.queuedFrames >= HANDLER_BACKPRESSURE_FRAMES || this.link.bufferedAmount > HANDLER_BACKPRESSURE_BYTES) {
          // Paced by the relay connection: its queue, and the socket's own buffer while online.
          await untilAborted(this.link.whenDrained(HANDLER_BACKPRESSURE_FRAMES / 2), call.signal);
        }
      }
    } catch (error) {
      failure = asMeshError(error);
    }
    if (call.signal.aborted) return;
    try {
      if (failure !== undefined) {
        this.endpoint.respondError(call.from, call.id, failure.code, failure.message, Date.now(), failure.retryAfterMs);
      } else {
        this.endpoint.endStream(call.from, call.id, Date.now());
      }
    } catch (error) {
      this.#replyFailed(call, error);
    }
    this.#finished(call);
    this.pump();
  }

  /** A reply the engine refused: a value without JSON form becomes `internal` for the caller. */
  #replyFailed(call: IncomingCall, error: unknown): void {
    this.log('debug', 'reply.dropped', String(error));
    if (error instanceof MeshError && error.code === 'bad_request' && error.message.includes('not JSON')) {
      try {
        this.endpoint.respondError(call.from, call.id, 'internal', `the handler's result has no JSON form: ${error.message}`, Date.now());
      } catch {
        // the request is gone meanwhile
      }
    }
  }
}
