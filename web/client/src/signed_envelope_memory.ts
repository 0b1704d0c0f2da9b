// Bounded memory of signed-envelope IDs per sender (protocol §3: remembered ~12 min, duplicates
// dropped), the same policy as the C++ core's ReplayCache (docs/protocol.md "Replay cache"):
//   - an ID is kept while its envelope could still pass freshness (timestamp ≥ now − max_age_ms);
//   - memory is bounded per sender and in total; when a bound is hit the entry with the oldest
//     timestamp is evicted and a floor rises to its timestamp (per sender, or global): envelopes at
//     or below a floor are refused as `expired`, so an evicted ID can never be replayed, and a
//     flooding sender only loses its own older messages.
// Pure: time is passed in.
import { MeshError, badRequest } from './errors.js';

export interface SignedEnvelopeMemoryOptions {
  maxAgeMs?: number;
  maxPerSender?: number;
  maxTotal?: number;
}

interface Entry {
  timestamp: number;
  sender: string;
  id: string;
  live: boolean;
}

/** A binary min-heap of entries by timestamp, with lazy deletion of dead entries. */
class EntryHeap {
  private items: Entry[] = [];
  private dead = 0;

  get length(): number {
    return this.items.length - this.dead;
  }

  push(entry: Entry): void {
    const items = this.items;
    items.push(entry);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent]!.timestamp <= entry.timestamp) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = entry;
  }

  /** The live entry with the smallest timestamp. */
  peek(): Entry | undefined {
    while (this.items.length > 0 && !this.items[0]!.live) {
      this.popTop();
      this.dead--;
    }
    return this.items[0];
  }

  /** Records that an entry in the heap died elsewhere; compacts when mostly dead. */
  noteDead(): void {
    this.dead++;
    if (this.dead > 1024 && this.dead > this.items.length / 2) {
      const live = this.items.filter((entry) => entry.live);
      this.items = [];
      this.dead = 0;
      for (const entry of live) this.push(entry);
    }
  }

  private popTop(): void {
    const items = this.items;
    const last = items.pop()!;
    if (items.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child = right < items.length && items[right]!.timestamp < items[left]!.timestamp ? right : left;
      if (items[child]!.timestamp >= last.timestamp) break;
      items[i] = items[child]!;
      i = child;
    }
    items[i] = last;
  }
}

interface SenderState {
  ids: Map<string, Entry>;
  byTime: EntryHeap;
  floor: number;
}

export const DEFAULT_MAX_AGE_MS = 10 * 60 * 1000;
export const DEFAULT_MAX_FUTURE_MS = 2 * 60 * 1000;

export class SignedEnvelopeMemory {
  private readonly maxAgeMs: number;
  private readonly maxPerSender: number;
  private readonly maxTotal: number;
  private readonly byTime = new EntryHeap();
  private readonly senders = new Map<string, SenderState>();
  private globalFloor = Number.NEGATIVE_INFINITY;
  private total = 0;

  constructor(options: SignedEnvelopeMemoryOptions = {}) {
    this.maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
    // Signed envelopes are handshakes and plaintext debugging traffic: 65,536 IDs per sender cover
    // 12 minutes of a busy one; the total bounds memory (same bounds as the C++ core).
    this.maxPerSender = Math.max(1, options.maxPerSender ?? 65536);
    this.maxTotal = Math.max(1, options.maxTotal ?? 1_000_000);
  }

  get size(): number {
    return this.total;
  }

  /** True if (sender, id) is remembered (for callers that check before doing costly work). */
  has(sender: string, id: string): boolean {
    return this.senders.get(sender)?.ids.has(id) === true;
  }

  /** Drops entries too old to pass freshness any more; remember() calls it too. */
  expire(nowMs: number): void {
    const horizon = nowMs - this.maxAgeMs;
    for (let oldest = this.byTime.peek(); oldest !== undefined && oldest.timestamp < horizon; oldest = this.byTime.peek()) {
      this.evict(oldest, true);
    }
  }

  /**
   * Records (sender, id) seen with `timestamp`. Call only for envelopes whose signature verified,
   * so forged IDs cannot fill or poison the memory. Throws MeshError: `bad_request` for a repeated
   * ID (replay), `expired` for a timestamp at or below a floor.
   */
  remember(sender: string, id: string, timestamp: number, nowMs: number): void {
    this.expire(nowMs);
    if (timestamp <= this.globalFloor) throw underLoad();
    let state = this.senders.get(sender);
    if (state !== undefined && timestamp <= state.floor) throw senderWindow();
    if (state?.ids.has(id) === true) throw badRequest('envelope ID already seen from this sender (replay)');
    if (state !== undefined && state.ids.size >= this.maxPerSender) {
      const oldest = state.byTime.peek()!;
      state.floor = Math.max(state.floor, oldest.timestamp);
      this.evict(oldest, false); // keep the raised floor
      if (timestamp <= state.floor) throw senderWindow();
    }
    if (this.total >= this.maxTotal) {
      const oldest = this.byTime.peek()!;
      this.globalFloor = Math.max(this.globalFloor, oldest.timestamp);
      this.evict(oldest, true);
      if (timestamp <= this.globalFloor) throw underLoad();
    }
    state = this.senders.get(sender); // evict() may have removed it
    if (state === undefined) {
      state = { ids: new Map(), byTime: new EntryHeap(), floor: Number.NEGATIVE_INFINITY };
      this.senders.set(sender, state);
    }
    const entry: Entry = { timestamp, sender, id, live: true };
    state.ids.set(id, entry);
    state.byTime.push(entry);
    this.byTime.push(entry);
    this.total++;
  }

  private evict(entry: Entry, eraseEmptySender: boolean): void {
    entry.live = false;
    this.total--;
    this.byTime.noteDead();
    const state = this.senders.get(entry.sender);
    if (state === undefined) return;
    state.ids.delete(entry.id);
    state.byTime.noteDead();
    // A sender with no entries left has no floor worth keeping: its floor is at most its oldest
    // remaining entry's timestamp, so once those expired the floor is below the freshness horizon.
    if (eraseEmptySender && state.ids.size === 0) this.senders.delete(entry.sender);
  }
}

function underLoad(): MeshError {
  return new MeshError('expired', 'envelope is older than the replay window kept under load; resend a fresh one');
}

function senderWindow(): MeshError {
  return new MeshError('expired', "envelope is older than this sender's replay window; resend a fresh one");
}
