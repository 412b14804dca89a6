/**
 * Residency: the sessions of one board's models, loaded on demand within a memory budget and
 * unloaded least recently used (the policy is models/placement.ts; this holds the state and does
 * the I/O). Every inference holds a lease on its session, so a session is never released while
 * an inference runs on it.
 *
 * A request for a model whose session is in memory is served at once. Others queue, first come
 * first served: each is a join of a load in progress, a load (after evicting idle models), or a
 * wait until the models it must displace are idle. While the first in line waits, later requests
 * for models it does not wait on go on; those for models it waits on queue behind it (else a
 * busy model would never become idle and the waiting one would never load). Sessions are created
 * one at a time, which also keeps each one's measured footprint its own.
 */
import { EventEmitter } from 'node:events';
import { KizunaError } from '../mesh/errors.js';
import type { ModelSession } from './engine.js';
import { decide, estimateBytes, fitsNow, footprint, overflow, unlimited, usedBytes, type Resident } from './placement.js';

/** A model that can be loaded: its key (unique per served model), name, file size and how to open it. */
export interface Candidate {
  key: string;
  name: string;
  fileBytes: number;
  /** Reads the model file, checked against its sha256. */
  read(): Promise<Buffer>;
  /**
   * Creates a checked session from the bytes; `forRequest`: a request waits for it (it may run it
   * once first, so that run's allocations are measured). `measurable` false: its RSS growth is not its own.
   */
  open(bytes: Buffer, forRequest: boolean): Promise<{ session: ModelSession; measurable: boolean }>;
}

export interface Lease {
  session: ModelSession;
  /** Milliseconds this request waited for its model to load (absent: it was in memory). */
  loadMs?: number;
  release(): void;
}

export interface ResidencyOptions {
  /** Bytes for sessions; 0: no limit (every model loads at start, as before placement). */
  budget: number;
  /** The process's resident set size in bytes (default process.memoryUsage.rss). */
  rss?: () => number;
  /** A request waiting for memory held by running inferences is refused (KZ_ERR_OVERLOADED) after this. */
  waitMs?: number;
  now?: () => number;
}

interface Slot extends Resident {
  key: string;
  model: string;
  session?: ModelSession;
  /** Settles when the session is created (or failed). */
  ready?: Promise<ModelSession>;
  /** No longer served: released once no inference holds it. */
  dropped?: boolean;
  /** Requests waiting for its load: their leases are taken the moment it ends. */
  joiners: Waiter[];
}

interface Waiter {
  c: Candidate;
  since: number;
  resolve(lease: Lease): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
}

const WAIT_MS = 30_000;

/**
 * Events: 'loaded' ({name, bytes, ms, measured}), 'evicted' ({name, bytes, why: 'lru' | 'dropped'}),
 * 'load-failed' ({name, error}), 'change' (what is resident changed).
 */
export class Residency extends EventEmitter {
  private readonly slots = new Map<string, Slot>();
  private readonly queue: Waiter[] = [];
  /** Keys the first waiter in line waits on: new requests for them queue behind it. */
  private blocked = new Set<string>();
  /** Footprints measured before, by key: a model loaded again is expected to take as much. */
  private readonly known = new Map<string, number>();
  private clock = 0;
  private loads: Promise<unknown> = Promise.resolve();
  private readonly rss: () => number;
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly o: ResidencyOptions) {
    super();
    this.rss = o.rss ?? (() => process.memoryUsage.rss());
    this.now = o.now ?? (() => performance.now());
  }

  get budget(): number {
    return this.o.budget;
  }

  /** Bytes the resident sessions take (measured, or estimated while loading). */
  get used(): number {
    return usedBytes([...this.slots.values()]);
  }

  isWarm(key: string): boolean {
    const s = this.slots.get(key);
    return s !== undefined && !s.loading && !s.dropped;
  }

  /** The resident models, least recently used first. */
  resident(): { key: string; name: string; bytes: number; inUse: number; loading: boolean }[] {
    return [...this.slots.values()]
      .sort((a, b) => a.lastUsed - b.lastUsed)
      .map((s) => ({ key: s.key, name: s.model, bytes: s.bytes, inUse: s.inUse, loading: Boolean(s.loading) }));
  }

  /**
   * Loads `c` at start (or when it arrives) if it fits beside what is resident without evicting
   * anything, or nothing is resident; else it stays cold. Load errors are thrown.
   */
  async preload(c: Candidate): Promise<boolean> {
    if (this.slots.has(c.key)) return true;
    if (!fitsNow(this.o.budget, [...this.slots.values()], this.expected(c))) return false;
    const slot = this.startLoad(c, false);
    await slot.ready;
    return true;
  }

  /** A lease on `c`'s session: at once when it is in memory, else once loaded. */
  acquire(c: Candidate): Promise<Lease> {
    if (this.closed) return Promise.reject(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'the model store is closed'));
    const slot = this.slots.get(c.key);
    if (slot?.session && !slot.dropped && !this.blocked.has(c.key)) return Promise.resolve(this.lease(slot));
    return new Promise<Lease>((resolve, reject) => {
      const w: Waiter = { c, since: this.now(), resolve, reject };
      const waitMs = this.o.waitMs ?? WAIT_MS;
      w.timer = setTimeout(() => {
        const i = this.queue.indexOf(w);
        if (i < 0) return;
        this.queue.splice(i, 1);
        reject(new KizunaError('KZ_ERR_OVERLOADED', `model ${c.name} waited ${waitMs} ms for memory that running inferences hold; retry with the same id`));
        this.pump();
      }, waitMs);
      this.queue.push(w);
      this.pump();
    });
  }

  /**
   * `key` is no longer served (unloaded, replaced): its session is released now, or when the
   * last inference on it ends. Requests waiting for it are refused.
   */
  drop(key: string): void {
    for (const w of this.queue.filter((x) => x.c.key === key)) {
      this.queue.splice(this.queue.indexOf(w), 1);
      clearTimeout(w.timer);
      w.reject(new KizunaError('KZ_ERR_UNKNOWN_MODEL', `model ${w.c.name} is no longer served here`));
    }
    this.known.delete(key);
    const slot = this.slots.get(key);
    if (slot) {
      slot.dropped = true;
      if (slot.inUse <= 0 && !slot.loading) this.unloadSlot(slot, 'dropped');
    }
    this.pump();
  }

  /** Releases every session (the store is closing); waiting requests are refused. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'the model store is closing'));
    }
    await Promise.allSettled([...this.slots.values()].map((s) => s.ready));
    const sessions = [...this.slots.values()].map((s) => s.session).filter((s): s is ModelSession => s !== undefined);
    this.slots.clear();
    await Promise.all(sessions.map((s) => s.release().catch(() => undefined)));
  }

  /** A listener that throws never breaks a load or an eviction. */
  private tell(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      process.emitWarning(`residency listener for ${event} failed: ${(err as Error).message}`);
    }
  }

  private expected(c: Candidate): number {
    return this.known.get(c.key) ?? estimateBytes(c.fileBytes);
  }

  private lease(slot: Slot, loadMs?: number): Lease {
    slot.inUse++;
    slot.lastUsed = ++this.clock;
    let released = false;
    return {
      session: slot.session!,
      ...(loadMs !== undefined ? { loadMs } : {}),
      release: () => {
        if (released) return;
        released = true;
        slot.inUse--;
        if (slot.inUse > 0) return;
        if (slot.dropped) this.unloadSlot(slot, 'dropped');
        this.rebalance();
        this.pump();
      },
    };
  }

  /** Serves the queue in order, as far as memory allows. */
  private pump(): void {
    while (this.queue.length && !this.closed) {
      const head = this.queue[0]!;
      const d = decide(this.o.budget, [...this.slots.values()], { name: head.c.key, bytes: this.expected(head.c) });
      if (d.kind === 'wait') {
        this.blocked = new Set(d.until);
        // Later requests for models that are in memory and not waited on are served meanwhile.
        for (const w of this.queue.slice(1)) {
          const s = this.slots.get(w.c.key);
          if (s?.session && !s.dropped && !this.blocked.has(w.c.key)) this.grant(w, s);
        }
        return;
      }
      this.queue.shift();
      if (d.kind === 'load') for (const key of d.evict) this.unloadSlot(this.slots.get(key)!, 'lru');
      const slot = d.kind === 'hit' ? this.slots.get(head.c.key)! : this.startLoad(head.c, true);
      this.grant(head, slot);
    }
    this.blocked = new Set();
  }

  /** Hands `w` a lease on `slot` now, or when its load ends. */
  private grant(w: Waiter, slot: Slot): void {
    const i = this.queue.indexOf(w);
    if (i >= 0) this.queue.splice(i, 1);
    clearTimeout(w.timer);
    if (slot.session && !slot.loading) w.resolve(this.lease(slot));
    else slot.joiners.push(w);
  }

  private startLoad(c: Candidate, forRequest: boolean): Slot {
    // `name` is the key for the policy: two versions of a model are two residents.
    const slot: Slot = { key: c.key, model: c.name, name: c.key, bytes: this.expected(c), lastUsed: ++this.clock, inUse: 0, loading: true, joiners: [] };
    this.slots.set(c.key, slot);
    this.tell('change');
    const load = this.loads.then(async () => {
      const t0 = this.now();
      const bytes = await c.read();
      // The file's bytes are garbage once the session is made: not part of its footprint.
      const before = this.rss();
      const { session, measurable } = await c.open(bytes, forRequest);
      const ms = this.now() - t0;
      const grown = this.rss() - before;
      return { session, ms, measured: measurable ? grown : undefined };
    });
    this.loads = load.catch(() => undefined);
    slot.ready = load.then(
      ({ session, ms, measured }) => {
        slot.session = session;
        slot.loading = false;
        slot.bytes = footprint(estimateBytes(c.fileBytes), measured);
        if (!slot.dropped) this.known.set(c.key, slot.bytes);
        // Its waiters hold it before anything can evict it.
        const now = this.now();
        for (const w of slot.joiners.splice(0)) w.resolve(this.lease(slot, now - w.since));
        this.tell('loaded', { name: c.name, bytes: slot.bytes, ms, measured });
        this.tell('change');
        if (slot.dropped && slot.inUse <= 0) this.unloadSlot(slot, 'dropped');
        this.rebalance();
        this.pump();
        return session;
      },
      (err: Error) => {
        this.slots.delete(c.key);
        for (const w of slot.joiners.splice(0)) w.reject(err);
        this.tell('load-failed', { name: c.name, error: err });
        this.tell('change');
        this.pump();
        throw err;
      },
    );
    // A load nobody waits on (a preload's caller may stop listening) must not go unhandled.
    slot.ready.catch(() => undefined);
    return slot;
  }

  /** A footprint measured above its estimate can pass the budget: idle models make room again. */
  private rebalance(): void {
    if (unlimited(this.o.budget)) return;
    for (const key of overflow(this.o.budget, [...this.slots.values()])) this.unloadSlot(this.slots.get(key)!, 'lru');
  }

  private unloadSlot(slot: Slot, why: 'lru' | 'dropped'): void {
    if (this.slots.get(slot.key) !== slot) return;
    this.slots.delete(slot.key);
    const session = slot.session;
    if (session) void session.release().catch(() => undefined);
    this.tell('evicted', { name: slot.model, bytes: slot.bytes, why });
    this.tell('change');
  }
}
