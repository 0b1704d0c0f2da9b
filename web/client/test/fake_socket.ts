// A scripted WebSocket for RelayLink / MeshClient units that need exact control: when it opens,
// what the relay answers, how much it holds unsent (bufferedAmount), when a close completes. No
// network, no timers of its own (works under vi.useFakeTimers()).
import { randomBytes } from 'node:crypto';

import { encodeBase64url } from '../src/base64url.js';
import type { WebSocketConstructor, WebSocketLike } from '../src/relay_link.js';

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  bufferedAmount = 0;
  readonly sent: string[] = [];
  closedWith: number | undefined;
  /** false: close() waits for finishClose() (a peer that is slow to answer the close handshake). */
  closePromptly = true;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(data);
  }

  close(code?: number): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = code ?? 1005;
    this.readyState = 2;
    if (this.closePromptly) queueMicrotask(() => this.finishClose());
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  deliver(text: string): void {
    this.onmessage?.({ data: text });
  }

  finishClose(code = this.closedWith ?? 1006, reason = ''): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The frames sent so far, parsed. */
  frames(): Record<string, unknown>[] {
    return this.sent.map((text) => JSON.parse(text) as Record<string, unknown>);
  }

  /** Opens and authenticates as a relay would: challenge, then welcome. Returns the hello sent. */
  authenticate(welcome: { token?: string; buffered?: number; heartbeatMs?: number } = {}): Record<string, unknown> {
    this.open();
    const hello = this.frames().at(-1)!;
    if (hello['type'] !== 'hello') throw new Error(`expected hello, got ${JSON.stringify(hello)}`);
    if (hello['resume'] === undefined) {
      this.deliver(JSON.stringify({ type: 'challenge', nonce: encodeBase64url(randomBytes(32)), relay_id: this.url }));
      const auth = this.frames().at(-1)!;
      if (auth['type'] !== 'auth') throw new Error(`expected auth, got ${JSON.stringify(auth)}`);
    }
    this.deliver(
      JSON.stringify({
        type: 'welcome',
        v: 1,
        session_token: welcome.token ?? encodeBase64url(randomBytes(32)),
        heartbeat_ms: welcome.heartbeatMs ?? 30_000,
        buffered: welcome.buffered ?? 0,
      }),
    );
    return hello;
  }
}

/** A WebSocket constructor whose instances are kept in `sockets`, in order of creation. */
export function fakeSockets(): { WebSocket: WebSocketConstructor; sockets: FakeSocket[] } {
  const sockets: FakeSocket[] = [];
  class Socket extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return { WebSocket: Socket as unknown as WebSocketConstructor, sockets };
}
