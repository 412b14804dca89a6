/**
 * Shard planner for sharded inference jobs: N inputs of one model spread over the agents serving it.
 *
 * Pure functions (no I/O, no clock, no randomness), so the dispatcher that drives them can be
 * replayed and simulated in tests. Agents are heterogeneous: each has a measured rate (inputs/s,
 * undefined until its first shard finished) and credits (shards it may take now).
 *
 * Sizing (initialShards): base = typical rate x targetShardMs, where typical is the median rate
 * with each unknown agent counted as the slowest known one (so new boards cannot inflate shards),
 * or minShard when no rate is known. base is capped at ceil(total / agents) so every agent can get
 * work, and clamped to [minShard, maxShard]. The last ~20% of inputs is cut at half that size so the
 * tail finishes evenly. Each phase is cut into near-equal pieces and all sizes are sorted largest
 * first, so sizes never grow toward the end. Bounds hold whenever some cut can meet them: not when
 * total < minShard (one short shard), nor for some totals when maxShard < 2 x minShard.
 */

export type AgentRate = { node: string; rate?: number; credits: number };
export type Shard = { id: string; start: number; end: number };
export type Assignment = { shard: Shard; node: string; deadlineMs: number };

export interface SizeOptions { targetShardMs: number; minShard: number; maxShard: number }
export interface AssignOptions {
  slack: number;
  /** Shortest deadline given, so a tiny shard is not failed over for a GC pause. */
  floorMs?: number;
  /** Deadline for an agent never measured: its first shard may include model load. */
  unknownMs?: number;
}
export interface Running { shard: Shard; node: string; startedMs: number; expectedMs: number }

const TAIL_FRACTION = 0.2;
const DEFAULT_FLOOR_MS = 1000;
const DEFAULT_UNKNOWN_MS = 30_000;

const cmp = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);
/** A rate is usable only when positive and finite; anything else (NaN, 0) counts as unmeasured. */
const known = (r: number | undefined): r is number => r !== undefined && Number.isFinite(r) && r > 0;
const size = (s: Shard) => s.end - s.start;
export const shardOf = (start: number, end: number): Shard => ({ id: `s${start}-${end}`, start, end });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Near-equal piece sizes for `len` inputs, each <= maxSize when possible and >= minSize when possible. */
function even(len: number, maxSize: number, minSize: number): number[] {
  if (len <= 0) return [];
  return pieces(len, Math.max(1, Math.min(Math.ceil(len / maxSize), Math.floor(len / minSize))));
}

/** `k` sizes summing to `len`, differing by at most one, larger first. */
function pieces(len: number, k: number): number[] {
  const q = Math.floor(len / k), r = len % k;
  return Array.from({ length: k }, (_, i) => (i < r ? q + 1 : q));
}

export function initialShards(total: number, agents: AgentRate[], options: SizeOptions): Shard[] {
  const n = Math.max(0, Math.floor(total));
  const minShard = Math.max(1, Math.floor(options.minShard));
  const maxShard = Math.max(minShard, Math.floor(options.maxShard));
  const rates = agents.map((a) => a.rate).filter(known);
  let base = minShard;
  if (rates.length > 0) {
    const slowest = Math.min(...rates);
    const typical = median(agents.map((a) => (known(a.rate) ? a.rate : slowest)));
    base = Math.round((typical * options.targetShardMs) / 1000);
  }
  // Fewer shards than agents would leave boards idle however well they are placed.
  if (agents.length > 0) base = Math.min(base, Math.ceil(n / agents.length));
  base = Math.min(maxShard, Math.max(minShard, base));
  const half = Math.floor(base / 2);
  let tail = Math.ceil(n * TAIL_FRACTION);
  // A tail phase only when halving is allowed and both phases can hold a whole shard.
  if (half < minShard || tail < minShard || n - tail < minShard) tail = 0;
  const sizes = [...even(n - tail, base, minShard), ...even(tail, half, minShard)].sort((a, b) => b - a);
  const out: Shard[] = [];
  let at = 0;
  for (const s of sizes) out.push(shardOf(at, (at += s)));
  return out;
}

/**
 * Each pending shard, in order, goes to the agent with a credit that would finish it soonest
 * (queued ms + size / rate); ties by node id. At the tail (the best finish is past the balanced
 * end of all work), a shard stays pending when a measured agent with no credit left (but work
 * queued, so a credit will come back) would finish it sooner than any agent with a credit. An unmeasured agent takes one shard and only when nothing is queued on it, so a
 * slow new board cannot swallow a batch before we know its speed; its duration is estimated at the
 * slowest known rate. Returns a prefix of `pending`: the dispatcher calls again as credits free.
 */
export function assign(
  pending: Shard[], agents: AgentRate[], nowLoadMs: Record<string, number>, options: AssignOptions,
): Assignment[] {
  const floorMs = options.floorMs ?? DEFAULT_FLOOR_MS;
  const unknownMs = options.unknownMs ?? DEFAULT_UNKNOWN_MS;
  const rates = agents.map((a) => a.rate).filter(known);
  const slowest = rates.length ? Math.min(...rates) : undefined;
  const seen = new Set<string>();
  const state: { node: string; rate?: number; credits: number; load: number }[] = [];
  for (const a of [...agents].sort((x, y) => cmp(x.node, y.node))) {
    if (seen.has(a.node)) continue; // duplicate ids: first by order wins, deterministically
    seen.add(a.node);
    const load = nowLoadMs[a.node];
    const l = load !== undefined && Number.isFinite(load) && load > 0 ? load : 0;
    const credits = known(a.rate) ? Math.floor(a.credits) : l > 0 ? 0 : Math.min(1, Math.floor(a.credits));
    state.push({ node: a.node, ...(known(a.rate) ? { rate: a.rate } : {}), credits, load: l });
  }
  // When all queued and pending work would end if perfectly spread over measured agents: a shard
  // finishing before then is useful wherever it runs; only one finishing after it is worth holding.
  const speed = state.reduce((sum, s) => sum + (s.rate ?? 0), 0);
  const work = state.reduce((sum, s) => sum + (s.load * (s.rate ?? 0)) / 1000, 0) + pending.reduce((sum, s) => sum + size(s), 0);
  const horizonMs = speed > 0 ? (work / speed) * 1000 : Infinity;
  const out: Assignment[] = [];
  for (const shard of pending) {
    let best: (typeof state)[number] | undefined;
    let bestEnd = Infinity, bestMs = 0, busyEnd = Infinity;
    for (const s of state) {
      const r = s.rate ?? slowest;
      // With no rate known anywhere, durations are unknowable: compare queued work only.
      const ms = r ? (size(shard) / r) * 1000 : 0;
      if (s.credits >= 1) {
        if (s.load + ms < bestEnd) { best = s; bestEnd = s.load + ms; bestMs = ms; }
      } else if (s.rate && s.load > 0) busyEnd = Math.min(busyEnd, s.load + ms);
    }
    // Hold the shard for a busy measured agent that would still finish it sooner (a Pi 3 must not
    // take the last big shard from a Pi 5 that frees a slot in a second). An unmeasured agent is
    // never held back: measuring it is worth one shard.
    if (!best || (best.rate && bestEnd > horizonMs && busyEnd < bestEnd)) break;
    best.credits -= 1;
    best.load = bestEnd;
    const deadlineMs = best.rate
      ? Math.max(floorMs, bestMs * options.slack)
      : Math.max(unknownMs, bestMs * options.slack);
    out.push({ shard, node: best.node, deadlineMs });
  }
  return out;
}

/**
 * Work stealing at the tail: the idle agent takes the last queued (never a running) shard of the
 * agent with the most queued inputs; ties by node id. `queued` must hold only shards not started.
 * Rate-blind: the caller decides whether the thief would finish it sooner (or split() it first).
 */
export function stealFrom(queued: Map<string, Shard[]>, idleAgent: string): { shard: Shard; from: string } | undefined {
  let from: string | undefined, most = 0;
  for (const [node, shards] of queued) {
    if (node === idleAgent || shards.length === 0) continue;
    const load = shards.reduce((sum, s) => sum + size(s), 0);
    if (load > most || (load === most && from !== undefined && cmp(node, from) < 0)) { from = node; most = load; }
  }
  if (from === undefined) return undefined;
  const shards = queued.get(from)!;
  return { shard: shards[shards.length - 1]!, from };
}

/** Contiguous near-equal sub-shards, larger first; parts is clamped to [1, size]. */
export function split(shard: Shard, parts: number): Shard[] {
  const k = Math.max(1, Math.min(size(shard), Math.floor(parts) || 1));
  const out: Shard[] = [];
  let at = shard.start;
  for (const s of pieces(size(shard), k)) out.push(shardOf(at, (at += s)));
  return out;
}

/** A straggler is re-run elsewhere once it ran hedgeAfter x its expected time and someone is idle. */
export function shouldHedge(running: Running, nowMs: number, idleAgents: number, options: { hedgeAfter: number }): boolean {
  if (idleAgents < 1 || !(running.expectedMs > 0) || !Number.isFinite(running.expectedMs)) return false;
  return nowMs - running.startedMs >= options.hedgeAfter * running.expectedMs;
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
