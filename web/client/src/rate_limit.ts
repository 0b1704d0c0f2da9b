// Token buckets for work a peer can make this agent do before anything is authenticated or paid
// for (docs/protocol.md "TypeScript client and web UI"): answering a handshake step 1 (a signature
// check, four X25519 operations and a signature: ~15 ms of a browser's main thread) and answering
// `no_session` (a signature). Checked before any crypto; what they refuse is dropped and counted.
// Pure: time is passed in.

/** Rates of one kind of work: per peer and over all peers together. */
export interface RateLimit {
  perPeerPerSecond: number;
  perPeerBurst: number;
  globalPerSecond: number;
  globalBurst: number;
}

/** Peers whose bucket is remembered; past it the least recently added is forgotten (it refills). */
const MAX_TRACKED_PEERS = 4096;

class TokenBucket {
  #tokens: number;
  #lastMs: number | undefined;

  constructor(
    readonly perSecond: number,
    readonly burst: number,
  ) {
    this.#tokens = burst;
  }

  #refill(nowMs: number): void {
    if (this.#lastMs !== undefined && nowMs > this.#lastMs) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((nowMs - this.#lastMs) * this.perSecond) / 1000);
    }
    if (this.#lastMs === undefined || nowMs > this.#lastMs) this.#lastMs = nowMs;
  }

  has(nowMs: number): boolean {
    this.#refill(nowMs);
    return this.#tokens >= 1;
  }

  take(): void {
    this.#tokens -= 1;
  }

  /** Full again (nothing to remember). */
  full(nowMs: number): boolean {
    this.#refill(nowMs);
    return this.#tokens >= this.burst;
  }
}

function positive(value: number, fallback: number): number {
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

export class RateLimiter {
  readonly limit: RateLimit;
  readonly #global: TokenBucket;
  readonly #perPeer = new Map<string, TokenBucket>();

  constructor(limit: RateLimit, defaults: RateLimit) {
    this.limit = {
      perPeerPerSecond: positive(limit.perPeerPerSecond, defaults.perPeerPerSecond),
      perPeerBurst: Math.max(1, positive(limit.perPeerBurst, defaults.perPeerBurst)),
      globalPerSecond: positive(limit.globalPerSecond, defaults.globalPerSecond),
      globalBurst: Math.max(1, positive(limit.globalBurst, defaults.globalBurst)),
    };
    this.#global = new TokenBucket(this.limit.globalPerSecond, this.limit.globalBurst);
  }

  /** Takes a token from the peer's bucket and the global one if both have one; false otherwise. */
  allow(peer: string, nowMs: number): boolean {
    let bucket = this.#perPeer.get(peer);
    if (bucket === undefined) {
      if (this.#perPeer.size >= MAX_TRACKED_PEERS) this.#forgetSome(nowMs);
      bucket = new TokenBucket(this.limit.perPeerPerSecond, this.limit.perPeerBurst);
      this.#perPeer.set(peer, bucket);
    }
    if (!bucket.has(nowMs) || !this.#global.has(nowMs)) return false;
    bucket.take();
    this.#global.take();
    return true;
  }

  #forgetSome(nowMs: number): void {
    // Full buckets first (forgetting them loses nothing); else the oldest entry.
    for (const [peer, bucket] of this.#perPeer) {
      if (bucket.full(nowMs)) this.#perPeer.delete(peer);
    }
    if (this.#perPeer.size >= MAX_TRACKED_PEERS) {
      const oldest = this.#perPeer.keys().next().value;
      if (oldest !== undefined) this.#perPeer.delete(oldest);
    }
  }
}
