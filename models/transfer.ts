/**
 * The chunk protocol's two ends, without MQTT (the caller moves the messages):
 *
 *  - Fetch: one model file coming to this board. It keeps a window of chunks in flight, asked of
 *    the holders in turn; checks every chunk against its hash before it is written (a bad chunk
 *    is refused and asked again of another holder when there is one; a holder that sends bad
 *    chunks twice is avoided for a while); asks again what a holder has not sent in time; and
 *    hands the file over (PartialBlob.finish: the whole sha256 checked) once every chunk is in.
 *    Chunks already on disk (an interrupted transfer) are not asked again.
 *  - ChunkServer: the holder's side. It answers requests a few chunks at a time, checks each
 *    chunk it reads against the catalogue's hash before sending it (a board never passes on bytes
 *    that do not match), and answers "not here" (an empty chunk) for what it does not hold.
 *
 * Time is injected (Timers), so tests can drive the timeouts.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { asKizunaError, type KizunaError } from '../mesh/errors.js';
import { decodeChunkRequest, MAX_CHUNKS, MAX_REQUEST_CHUNKS } from '../mesh/catalog.js';
import type { ChunkPlan, PartialBlob } from './cas.js';

export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface FetchOptions {
  /** Chunks asked for and not yet received, at most (default 16: 4 MiB at the default chunk size). */
  window?: number;
  /** Chunks per request (default 4). */
  batch?: number;
  /** A chunk not received this long after it was asked for is asked again (default 5000 ms). */
  timeoutMs?: number;
  /** Bad chunks after which a holder is avoided (default 2). */
  strikes?: number;
  /** How long an avoided holder is not asked (default 60 s). */
  avoidMs?: number;
  timers?: Timers;
}

/** What a fetch needs of the mesh. */
export interface FetchPort {
  /** The boards (and apps) that hold the file now, this board excluded. */
  holders(): readonly string[];
  /** Sends a request for `chunks` to `holder`. */
  request(holder: string, chunks: number[]): void;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export function chunkBytes(plan: Pick<ChunkPlan, 'size' | 'chunkSize'>, index: number): number {
  return Math.min(plan.chunkSize, plan.size - index * plan.chunkSize);
}

/**
 * Events: 'progress' ({done, total, have, of}), 'bad-chunk' ({holder, index, why}),
 * 'avoid' ({holder, why}), 'stalled' (no holder to ask), 'done', 'failed' (KizunaError).
 */
export class Fetch extends EventEmitter {
  private readonly o: Required<Omit<FetchOptions, 'timers'>>;
  private readonly timers: Timers;
  private readonly inflight = new Map<number, { holder: string; deadline: number }>();
  private readonly writing = new Set<number>();
  /**
   * Per chunk, the holders it was asked of without success (bad, late, "not here"), and until
   * when it may not be asked of them again: another holder is preferred, and a holder that lacks
   * a chunk is not asked for it again at once (no busy loop when it is the only one).
   */
  private readonly notFrom = new Map<number, Map<string, number>>();
  /** When a chunk blocked for every holder may be asked again. */
  private wakeAt = Infinity;
  private readonly badChunks = new Map<string, number>();
  private readonly avoidUntil = new Map<string, number>();
  /** Holders that were late or said "not here": asked last for a while. */
  private readonly laterUntil = new Map<string, number>();
  private turn = 0;
  private timer: unknown;
  private stalled = false;
  private ended = false;
  /** Chunks received and written by this fetch (not those found on disk). */
  received = 0;

  constructor(
    readonly partial: PartialBlob,
    private readonly port: FetchPort,
    options: FetchOptions = {},
  ) {
    super();
    this.timers = options.timers ?? realTimers;
    this.o = { window: 16, batch: 4, timeoutMs: 5000, strikes: 2, avoidMs: 60_000, ...options };
  }

  get plan(): ChunkPlan {
    return this.partial.plan;
  }

  /** Starts asking (or finishes at once when every chunk is already on disk). */
  start(): void {
    if (this.partial.complete) return void this.finish();
    this.pump();
  }

  /** The holders changed: chunks asked of one that is gone are asked elsewhere now. */
  holdersChanged(): void {
    if (this.ended) return;
    const holders = new Set(this.port.holders());
    for (const [i, f] of this.inflight) if (!holders.has(f.holder)) this.inflight.delete(i);
    this.pump();
  }

  /** A chunk arrived from `holder` (an empty one: the holder does not have it). */
  onChunk(holder: string, index: number, bytes: Uint8Array): void {
    if (this.ended || index < 0 || index >= this.plan.chunks.length) return;
    const asked = this.inflight.get(index);
    if (this.partial.have.has(index) || this.writing.has(index)) return;
    if (!asked || asked.holder !== holder) {
      // Late (asked again elsewhere since) or never asked: taken if it is right, never blamed.
      if (bytes.length === chunkBytes(this.plan, index) && sha256(bytes) === this.plan.chunks[index]) {
        this.inflight.delete(index);
        this.write(index, bytes);
      }
      return;
    }
    this.inflight.delete(index);
    if (bytes.length === 0) {
      this.laterUntil.set(holder, this.timers.now() + this.o.timeoutMs);
      this.block(index, holder, this.timers.now() + this.o.timeoutMs);
      return this.pump();
    }
    const why = bytes.length !== chunkBytes(this.plan, index) ? `${bytes.length} bytes, not ${chunkBytes(this.plan, index)}` : sha256(bytes) !== this.plan.chunks[index] ? 'sha256 mismatch' : undefined;
    if (why) {
      this.block(index, holder, this.timers.now() + this.o.timeoutMs);
      this.emit('bad-chunk', { holder, index, why });
      const strikes = (this.badChunks.get(holder) ?? 0) + 1;
      this.badChunks.set(holder, strikes);
      if (strikes >= this.o.strikes) {
        this.badChunks.delete(holder);
        this.avoidUntil.set(holder, this.timers.now() + this.o.avoidMs);
        this.emit('avoid', { holder, why: `${strikes} bad chunks` });
      }
      return this.pump();
    }
    this.laterUntil.delete(holder);
    this.write(index, bytes);
    this.pump();
  }

  private write(index: number, bytes: Uint8Array): void {
    this.writing.add(index);
    this.partial.write(index, bytes).then(
      () => {
        this.writing.delete(index);
        this.received++;
        const p = this.partial;
        this.emit('progress', { done: p.bytesDone, total: this.plan.size, have: p.have.size, of: this.plan.chunks.length });
        if (p.complete) void this.finish();
        else this.pump();
      },
      (err: unknown) => this.fail(asKizunaError(err)),
    );
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.disarm();
    this.partial.finish().then(
      () => this.emit('done'),
      (err: unknown) => this.emit('failed', asKizunaError(err)),
    );
  }

  private fail(err: KizunaError): void {
    if (this.ended) return;
    this.ended = true;
    this.disarm();
    void this.partial.close().finally(() => this.emit('failed', err));
  }

  /** Stops, keeping the chunks on disk for a later resume. */
  async stop(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      this.disarm();
      await this.partial.close();
    }
  }

  /** Stops and deletes the chunks on disk. */
  async cancel(): Promise<void> {
    this.ended = true;
    this.disarm();
    await this.partial.discard();
  }

  private block(index: number, holder: string, until: number): void {
    const m = this.notFrom.get(index) ?? new Map<string, number>();
    m.set(holder, until);
    this.notFrom.set(index, m);
  }

  /** Holders to ask now, the ones that were late or lacked a chunk last. */
  private usable(now: number): string[] {
    const ok = this.port.holders().filter((h) => (this.avoidUntil.get(h) ?? 0) <= now);
    const later = (h: string) => ((this.laterUntil.get(h) ?? 0) > now ? 1 : 0);
    return [...ok].sort((a, b) => later(a) - later(b));
  }

  private pump(): void {
    if (this.ended) return;
    const now = this.timers.now();
    const free = this.o.window - this.inflight.size;
    const want = free > 0 ? this.partial.missing().filter((i) => !this.inflight.has(i) && !this.writing.has(i)).slice(0, free) : [];
    if (want.length) {
      const holders = this.usable(now);
      if (!holders.length) {
        if (!this.inflight.size && !this.writing.size && !this.stalled) {
          this.stalled = true;
          this.emit('stalled');
        }
      } else {
        this.stalled = false;
        const batches = new Map<string, number[]>();
        for (const i of want) {
          const tried = this.notFrom.get(i);
          const open = holders.filter((h) => (tried?.get(h) ?? 0) <= now);
          if (!open.length) {
            // Every holder lacked it, or sent it bad, a moment ago: wait a little.
            this.wakeAt = Math.min(this.wakeAt, ...holders.map((h) => tried?.get(h) ?? now));
            continue;
          }
          const fresh = open.filter((h) => !tried?.has(h));
          const from = fresh.length ? fresh : open;
          const prompt = from.filter((h) => (this.laterUntil.get(h) ?? 0) <= now);
          const pool = prompt.length ? prompt : from;
          // A new holder for each batch, in turn: the load spreads over every holder.
          const holder = pool[Math.floor(this.turn / this.o.batch) % pool.length]!;
          this.turn++;
          const list = batches.get(holder) ?? [];
          list.push(i);
          batches.set(holder, list);
          this.inflight.set(i, { holder, deadline: now + this.o.timeoutMs });
        }
        for (const [holder, chunks] of batches) {
          for (let k = 0; k < chunks.length; k += MAX_REQUEST_CHUNKS) this.port.request(holder, chunks.slice(k, k + MAX_REQUEST_CHUNKS));
        }
      }
    }
    this.arm();
  }

  private arm(): void {
    this.disarm();
    const next = Math.min(this.wakeAt, ...[...this.inflight.values()].map((f) => f.deadline));
    if (this.ended || next === Infinity) return;
    this.timer = this.timers.setTimeout(() => this.expire(), Math.max(0, next - this.timers.now()));
  }

  private disarm(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private expire(): void {
    this.timer = undefined;
    if (this.ended) return;
    const now = this.timers.now();
    this.wakeAt = Infinity;
    for (const [i, f] of this.inflight) {
      if (f.deadline > now) continue;
      this.inflight.delete(i);
      this.laterUntil.set(f.holder, now + this.o.timeoutMs);
      // It has waited a full timeout already: asked again at once, of another holder if there is one.
      this.block(i, f.holder, now);
    }
    this.pump();
  }
}

/** Where a holder reads a file it serves: its chunk plan (from the catalogue) and its bytes. */
export interface ChunkSource {
  plan: ChunkPlan;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface ServerOptions {
  /** Chunks read and sent at once (default 4). */
  concurrency?: number;
  /** Chunks waiting to be sent, at most; requests beyond are dropped (the requester asks again). */
  maxQueue?: number;
}

/**
 * Events: 'served' ({requester, sha256, index, bytes}), 'corrupt' ({sha256, index}): the file no
 * longer matches its plan (the owner should quarantine it), 'refused' ({requester, why}).
 */
export class ChunkServer extends EventEmitter {
  private readonly queue: { requester: string; sha256: string; index: number }[] = [];
  private readonly queued = new Set<string>();
  private active = 0;
  private stopped = false;
  private readonly concurrency: number;
  private readonly maxQueue: number;

  constructor(
    private readonly lookup: (sha256: string) => ChunkSource | undefined,
    private readonly send: (requester: string, sha256: string, index: number, bytes: Buffer) => Promise<void>,
    options: ServerOptions = {},
  ) {
    super();
    this.concurrency = options.concurrency ?? 4;
    this.maxQueue = options.maxQueue ?? 1024;
  }

  /** A request from `requester` for chunks of `sha256` (the payload of a blobreq message). */
  request(requester: string, sha256: string, payload: Uint8Array): void {
    if (this.stopped) return;
    const source = this.lookup(sha256);
    let chunks: number[];
    try {
      chunks = decodeChunkRequest(payload, source?.plan.chunks.length ?? MAX_CHUNKS);
    } catch (err) {
      this.emit('refused', { requester, why: (err as Error).message });
      return;
    }
    for (const index of chunks) {
      const key = `${requester}/${sha256}/${index}`;
      if (this.queued.has(key)) continue;
      if (this.queue.length >= this.maxQueue) {
        this.emit('refused', { requester, why: `queue full (${this.maxQueue} chunks)` });
        break;
      }
      this.queued.add(key);
      this.queue.push({ requester, sha256, index });
    }
    this.drain();
  }

  private drain(): void {
    while (!this.stopped && this.active < this.concurrency && this.queue.length) {
      const job = this.queue.shift()!;
      this.active++;
      void this.serve(job).finally(() => {
        this.queued.delete(`${job.requester}/${job.sha256}/${job.index}`);
        this.active--;
        this.drain();
      });
    }
  }

  private async serve(job: { requester: string; sha256: string; index: number }): Promise<void> {
    const { requester, sha256: sha, index } = job;
    const source = this.lookup(sha);
    let bytes: Buffer = Buffer.alloc(0);
    if (source && index < source.plan.chunks.length) {
      try {
        const read = await source.read(index * source.plan.chunkSize, chunkBytes(source.plan, index));
        if (read.length === chunkBytes(source.plan, index) && sha256(read) === source.plan.chunks[index]) bytes = read;
        else this.emit('corrupt', { sha256: sha, index });
      } catch {
        // Unreadable here (removed meanwhile): "not here".
      }
    }
    try {
      await this.send(requester, sha, index, bytes);
      if (bytes.length) this.emit('served', { requester, sha256: sha, index, bytes: bytes.length });
    } catch {
      // The connection went: the requester asks again.
    }
  }

  stop(): void {
    this.stopped = true;
    this.queue.length = 0;
    this.queued.clear();
  }
}
