/**
 * The shard planner: pure functions (no I/O, no clock, no randomness) that the job runner
 * (jobs.ts) drives, so they can be tested and simulated alone.
 *
 * Shards are cut lazily, when an agent has a free slot, from the lowest pending index (results
 * stream back in order, so low indices first keeps the wait-for-gaps memory small). A shard is
 * sized to take about targetMs on the agent that gets it, and never more than half that agent's
 * share (by measured rate) of what is still pending: shards shrink geometrically toward the end
 * of a job, so a Pi 3 and a Pi 5 finish their last shards at about the same time. An agent never
 * measured gets a small probe shard first. Stragglers are re-run elsewhere (hedged) when an idle
 * agent would finish them sooner.
 */

/** Input indices not yet given to any agent: sorted, disjoint, half-open [start, end) ranges. */
export class Ranges {
  private list: [number, number][] = [];

  constructor(start = 0, end = 0) {
    if (end > start) this.list.push([start, end]);
  }

  get size(): number {
    return this.list.reduce((n, [s, e]) => n + e - s, 0);
  }

  get isEmpty(): boolean {
    return this.list.length === 0;
  }

  /** Gives back [start, end) (an agent died, a result was refused); merges with its neighbours. */
  add(start: number, end: number): void {
    if (!(end > start)) return;
    const merged: [number, number][] = [];
    let cur: [number, number] = [start, end];
    let placed = false;
    for (const r of this.list) {
      if (r[1] < cur[0]) merged.push(r);
      else if (r[0] > cur[1]) {
        if (!placed) merged.push(cur), (placed = true);
        merged.push(r);
      } else cur = [Math.min(cur[0], r[0]), Math.max(cur[1], r[1])];
    }
    if (!placed) merged.push(cur);
    this.list = merged;
  }

  /** The lowest pending index. */
  first(): number | undefined {
    return this.list[0]?.[0];
  }

  /** Takes up to `max` indices from the lowest pending range (never across a gap). */
  take(max: number): { start: number; end: number } | undefined {
    const first = this.list[0];
    if (!first || max < 1) return undefined;
    const end = Math.min(first[1], first[0] + Math.floor(max));
    const out = { start: first[0], end };
    if (end === first[1]) this.list.shift();
    else first[0] = end;
    return out;
  }
}

export interface SizeOptions {
  /** How long a shard should take on the agent that gets it. */
  targetMs: number;
  /** Never a shard shorter than this (per-shard messaging would dominate). */
  minMs: number;
  maxShard: number;
  /** Size of the first shard of an agent never measured. */
  probe: number;
}

/**
 * How many inputs the next shard for one agent holds. `msPerInput` is the agent's measured time
 * (undefined: never measured); `share` its fraction of the mesh's summed rate for this model;
 * `pending` the inputs not yet given out.
 */
export function shardSize(msPerInput: number | undefined, share: number, pending: number, o: SizeOptions): number {
  if (pending <= 0) return 0;
  if (!(msPerInput !== undefined && msPerInput > 0 && Number.isFinite(msPerInput))) return Math.max(1, Math.min(pending, o.probe, o.maxShard));
  const target = Math.max(1, Math.round(o.targetMs / msPerInput));
  const floor = Math.max(1, Math.ceil(o.minMs / msPerInput));
  const tail = Math.ceil((pending * Math.min(1, Math.max(0, share))) / 2);
  return Math.max(1, Math.min(pending, o.maxShard, target, Math.max(floor, tail)));
}

/**
 * How many items from `start` fit in `maxBytes` (at least one), given `prefix`: prefix[i] is the
 * bytes of items 0..i-1.
 */
export function fitting(prefix: ArrayLike<number>, start: number, maxBytes: number): number {
  let lo = start + 1, hi = prefix.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (prefix[mid]! - prefix[start]! <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  return lo - start;
}

/** A shard on one agent, with when it should end (the agent runs what it was given in order). */
export interface Placed {
  node: string;
  size: number;
  expectedEndMs: number;
}

/**
 * The hedge worth making for an idle agent (its time per input `ms`), or undefined: the running
 * shard expected to end last, if the idle agent would finish a copy of it by at least `margin`
 * (a fraction) sooner. Shards already copied and shards on the idle agent itself are skipped.
 */
export function pickHedge<T extends { placed: Placed[]; copies: number }>(
  flights: readonly T[], idle: { node: string; ms: number }, nowMs: number, margin: number,
): T | undefined {
  let best: T | undefined, bestEnd = -Infinity;
  for (const f of flights) {
    if (f.copies >= 2 || f.placed.some((p) => p.node === idle.node)) continue;
    const end = Math.min(...f.placed.map((p) => p.expectedEndMs));
    if (end > bestEnd) (best = f), (bestEnd = end);
  }
  if (!best) return undefined;
  const size = best.placed[0]!.size;
  const mine = nowMs + size * idle.ms;
  return bestEnd - nowMs > 0 && mine < bestEnd - margin * (bestEnd - nowMs) ? best : undefined;
}

/**
 * First result per input index wins; later duplicates (hedges, retries after failover, re-runs of
 * a dead agent's shard) are refused. nextInOrder() hands out each result once, in index order,
 * and forgets it, so memory holds only results waiting behind a gap.
 */
export class Ledger<T = unknown> {
  private readonly got: Uint8Array;
  private readonly held = new Map<number, T>();
  private emitted = 0;
  private head = 0; // first index not accepted
  done = 0;

  constructor(readonly total: number) {
    this.got = new Uint8Array(total);
  }

  get isComplete(): boolean {
    return this.done === this.total;
  }

  accept(index: number, result: T): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.total) throw new RangeError(`index ${index} outside 0..${this.total - 1}`);
    if (this.got[index]) return false;
    this.got[index] = 1;
    this.held.set(index, result);
    this.done += 1;
    while (this.head < this.total && this.got[this.head]) this.head += 1;
    return true;
  }

  has(index: number): boolean {
    return this.got[index] === 1;
  }

  /** Results handed out by nextInOrder() so far (all of indices 0..emittedCount-1). */
  get emittedCount(): number {
    return this.emitted;
  }

  firstMissing(): number | undefined {
    return this.head < this.total ? this.head : undefined;
  }

  nextInOrder(): { index: number; result: T }[] {
    const out: { index: number; result: T }[] = [];
    for (; this.emitted < this.head; this.emitted++) {
      out.push({ index: this.emitted, result: this.held.get(this.emitted) as T });
      this.held.delete(this.emitted);
    }
    return out;
  }
}
