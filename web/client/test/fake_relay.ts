// A small relay for unit tests (Node, the `ws` package, loopback port 0): hello / challenge / auth /
// welcome with resume tokens, routing by `to`, a store for offline agents delivered first after the
// next welcome and deleted when acked, pong for ping. Knobs let tests misbehave (wrong relay_id,
// silence, close codes) and observe every frame. Not the real relay: interop tests use that.
import { randomBytes } from 'node:crypto';
import { type AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

import { encodeBase64url } from '../src/base64url.js';
import { type ChallengeFrame, parseClientFrame, verifyAuth } from '../src/frames.js';

export interface FakeRelayOptions {
  /** The relay_id sent in challenges (default: the URL clients dial). */
  relayId?: string;
  heartbeatMs?: number;
  /** false: ignore pings (a dead-looking relay). */
  answerPings?: boolean;
}

/** What `refuse` answers for an envelope the relay will not route: its `undeliverable` frame. */
export interface Refusal {
  code: string;
  retry_after_ms?: number;
}

interface Client {
  ws: WebSocket;
  agentId: string;
}

export class FakeRelay {
  readonly server: WebSocketServer;
  readonly url: string;
  readonly options: FakeRelayOptions;
  readonly clients = new Map<string, Client>();
  /** Stored envelopes per receiver, in order: [id, text]. */
  readonly stored = new Map<string, [string, string][]>();
  /** Every frame a client sent, per agent: for assertions. */
  readonly received: { from: string; text: string }[] = [];
  readonly tokens = new Map<string, string>();
  readonly events: string[] = [];
  /** Every hello: who, and the resume token it showed (if any). */
  readonly hellos: { agentId: string; resume: string | undefined }[] = [];
  /** Answers chosen envelopes with `undeliverable` instead of routing them (rate limits…). */
  refuse: ((from: string, envelope: Record<string, unknown>) => Refusal | undefined) | undefined;
  #listeners: (() => void)[] = [];

  private constructor(server: WebSocketServer, options: FakeRelayOptions) {
    this.server = server;
    this.options = options;
    const port = (server.address() as AddressInfo).port;
    this.url = `ws://127.0.0.1:${port}/relay/ws`;
    server.on('connection', (ws) => this.#accept(ws));
  }

  static async start(options: FakeRelayOptions = {}): Promise<FakeRelay> {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    return new FakeRelay(server, options);
  }

  /** Resolves when `predicate` holds (checked after every event), or rejects after `ms`. */
  waitFor(what: string, predicate: () => boolean, ms = 5000): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners = this.#listeners.filter((l) => l !== listener);
        reject(new Error(`timed out waiting for ${what}; events: ${this.events.slice(-20).join(' | ')}`));
      }, ms);
      const listener = () => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.#listeners = this.#listeners.filter((l) => l !== listener);
        resolve();
      };
      this.#listeners.push(listener);
    });
  }

  #event(text: string): void {
    this.events.push(text);
    for (const listener of [...this.#listeners]) listener();
  }

  #accept(ws: WebSocket): void {
    let agentId: string | undefined;
    let challenge: ChallengeFrame | undefined;
    let live = false;
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        ws.close(4000);
        return;
      }
      const text = data.toString('utf8');
      if (live && agentId !== undefined) this.received.push({ from: agentId, text });
      const object = JSON.parse(text) as Record<string, unknown>;
      if (!live) {
        const frame = parseClientFrame(text);
        if (frame.type === 'hello') {
          agentId = frame.agent_id;
          this.hellos.push({ agentId, resume: frame.resume });
          if (frame.resume !== undefined && this.tokens.get(frame.resume) === agentId) {
            this.tokens.delete(frame.resume);
            live = true;
            this.#welcome(ws, agentId, true);
            return;
          }
          challenge = { type: 'challenge', nonce: encodeBase64url(randomBytes(32)), relay_id: this.options.relayId ?? this.url };
          ws.send(JSON.stringify(challenge));
          this.#event(`challenge ${agentId}`);
          return;
        }
        if (frame.type === 'auth' && agentId !== undefined && challenge !== undefined) {
          if (!verifyAuth(agentId, challenge, frame)) {
            ws.send(JSON.stringify({ type: 'error', code: 'auth_failed', message: 'bad signature' }));
            ws.close(4001);
            return;
          }
          live = true;
          this.#welcome(ws, agentId, false);
          return;
        }
        ws.close(4000);
        return;
      }
      if (object['type'] === 'ping') {
        this.#event(`ping ${agentId}`);
        if (this.options.answerPings !== false) ws.send('{"type":"pong"}');
        return;
      }
      if (object['type'] === 'ack') {
        const ids = object['ids'] as string[];
        const list = this.stored.get(agentId!) ?? [];
        this.stored.set(agentId!, list.filter(([id]) => !ids.includes(id)));
        this.#event(`ack ${agentId} ${ids.length}`);
        return;
      }
      const to = object['to'] as string;
      const id = object['id'] as string;
      const refusal = this.refuse?.(agentId!, object);
      if (refusal !== undefined) {
        ws.send(JSON.stringify({ type: 'undeliverable', id, ...refusal }));
        this.#event(`refused ${object['msg_type']} ${id} ${refusal.code}`);
        return;
      }
      const target = this.clients.get(to);
      if (target !== undefined) {
        target.ws.send(text);
        this.#event(`routed ${object['msg_type']} ${id}`);
      } else {
        const list = this.stored.get(to) ?? [];
        list.push([id, text]);
        this.stored.set(to, list);
        ws.send(JSON.stringify({ type: 'queued', id }));
        this.#event(`stored ${object['msg_type']} ${id}`);
      }
    });
    ws.on('close', (code) => {
      if (agentId !== undefined && this.clients.get(agentId)?.ws === ws) this.clients.delete(agentId);
      this.#event(`closed ${agentId} ${code}`);
    });
  }

  #welcome(ws: WebSocket, agentId: string, resumed: boolean): void {
    const previous = this.clients.get(agentId);
    this.clients.set(agentId, { ws, agentId });
    if (previous !== undefined) previous.ws.close(4009);
    const token = encodeBase64url(randomBytes(32));
    this.tokens.set(token, agentId);
    const stored = this.stored.get(agentId) ?? [];
    ws.send(
      JSON.stringify({ type: 'welcome', v: 1, session_token: token, heartbeat_ms: this.options.heartbeatMs ?? 30_000, buffered: stored.length }),
    );
    for (const [, text] of stored) ws.send(text);
    this.#event(`welcome ${agentId}${resumed ? ' resumed' : ''}`);
  }

  /** Closes the live connection of `agentId` with `code`. */
  kick(agentId: string, code: number): void {
    this.clients.get(agentId)?.ws.close(code);
  }

  /** Drops the TCP connection of `agentId` without a close handshake. */
  cut(agentId: string): void {
    this.clients.get(agentId)?.ws.terminate();
  }

  async stop(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
