/**
 * Jobs in the dispatcher: one message carrying many inputs, run across every agent that serves
 * the model, each input's result streamed back to the app exactly once and in input order.
 *
 * Shards are cut lazily (planner.ts) as agents free slots, sized by each agent's measured speed.
 * Every copy of a shard sent to an agent has a deadline; a late one, or a straggler at the tail
 * that an idle agent would beat, is run again elsewhere (hedged) and the first valid result wins.
 * A dead agent's shards go back to the pending inputs. Results are checked before they are
 * believed (jobs.ts in mesh/): a board that returns garbage is not trusted again for a while and
 * its shard is run elsewhere. Results are keyed by input index, so a late result from an earlier
 * copy, or from before a broker failover, counts as well as any.
 *
 * Job state lives only here: after a broker failover the app sends its job again with `from` (the
 * first result it lacks) and the new broker's dispatcher runs the rest.
 */
import { KizunaError } from '../mesh/errors.js';
import {
  checkShardResult, decodeJob, encodeJobError, encodeJobResults, encodeShard, itemBytes, RETRYABLE,
  type JobItem, type JobOptions, type JobProgress, type JobResultItem,
} from '../mesh/jobs.js';
import { isWarm, type ModelSummary, type NodeStatus } from '../mesh/status.js';
import { parseJobTopic, parseShardResultTopic, topics, type RequestTopic } from '../mesh/topics.js';
import type { Logger } from '../agent/log.js';
import type { BrokerPort } from './dispatcher.js';
import { Ledger, Ranges, fitting, pickHedge, shardSize, type Placed, type SizeOptions } from './planner.js';

/** What the job runner needs of the dispatcher: who serves a model, their free slots and speed. */
export interface Capacity {
  /** Online agents serving `model` that take new work. */
  serving(model: string): NodeStatus[];
  /** Slots `node` grants that no task or shard holds. */
  free(node: string): number;
  msPerInput(node: string, model: string): number | undefined;
  /** `node` worked on `inputs` inputs since `sinceMs`; `finished` false: still not done (a late shard). */
  measured(node: string, model: string, inputs: number, sinceMs: number, finished: boolean): void;
  /** Why nobody takes `model` now. */
  noAgent(model: string): KizunaError;
}

export interface JobsOptions {
  mesh: string;
  node: string;
  log: Logger;
  now: () => number;
  sizing?: Partial<SizeOptions>;
  maxJobBytes?: number;
  maxJobItems?: number;
  /** Largest shard payload (agents refuse payloads over their maxPayloadBytes, 8 MiB by default). */
  maxShardBytes?: number;
  /** Jobs running at once; more are refused with KZ_ERR_OVERLOADED. */
  maxJobs?: number;
  /** Payload bytes of all running jobs together (the broker's board holds them); beyond, KZ_ERR_OVERLOADED. */
  maxRunningBytes?: number;
  /** A shard copy is late after its expected time x slack (at least floorMs; unknownMs for an unmeasured agent). */
  slack?: number;
  floorMs?: number;
  unknownMs?: number;
  /** Added to the deadline of a copy sent to a board that must load the model first (default 5 s). */
  coldMs?: number;
  /** An idle agent copies a straggler when it would finish at least this fraction of its remaining time sooner. */
  hedgeMargin?: number;
  /** A progress message at least this often while a job runs. */
  heartbeatMs?: number;
  /** Runs of one input that end in a retryable error before that error is the answer. */
  maxAttempts?: number;
  /** How long an agent that returned garbage gets no shards. */
  distrustMs?: number;
}

interface Copy {
  node: string;
  instance: string;
  seq: number;
  sentAt: number;
  deadlineAt: number;
  late: boolean;
  /** The board had to load the model: its time is not its speed. */
  cold: boolean;
}

interface Flight {
  start: number;
  end: number;
  copies: Copy[];
  /** Every input of it has a result; copies still listed are running for nothing. */
  done: boolean;
}

interface JobState {
  key: string;
  req: RequestTopic;
  items: JobItem[];
  /** bytes[i]: the size of items 0..i-1 on the wire, so shards can be cut to a byte budget. */
  bytes: Float64Array;
  /** Bytes a shard's items may take: the shard limit less the envelope and the job's options. */
  shardBudget: number;
  payloadBytes: number;
  options: JobOptions;
  from: number;
  total: number;
  ledger: Ledger<JobResultItem>;
  pending: Ranges;
  flights: Map<string, Flight>;
  /** running[i]: shards not done that hold input i (pending cuts skip these). */
  running: Uint8Array;
  attempts: Uint8Array;
  /** Boards that answered an input with a retryable error: it runs elsewhere next, when it can. */
  refusedBy: Map<number, string[]>;
  summary?: ModelSummary;
  startedAt: number;
  lastSentAt: number;
  failed: number;
  byAgent: Record<string, number>;
}

/** A board as the pump sees it while placing shards. */
interface Board {
  status: NodeStatus;
  /** It has the model in memory (placement): cold boards take shards only when no warm one has a free slot. */
  warm: boolean;
  /** Measured ms per input of this model (undefined: never measured). */
  ms: number | undefined;
  /** Inputs per ms, for shares (unmeasured: the slowest measured board's). */
  rate: number;
  free: number;
  copies: number;
  /** When the work already queued on it should end. */
  end: number;
}

/**
 * The board that is free soonest, among those that have the model in memory first (a cold board
 * would load it first); an unmeasured one first, but only with nothing running (one probe shard
 * at a time). Ties: faster, then node id.
 */
function pickBoard(boards: readonly Board[], exclude: readonly string[]): Board | undefined {
  let best: Board | undefined;
  let bestEnd = Number.POSITIVE_INFINITY;
  for (const b of boards) {
    if (b.free < 1 || exclude.includes(b.status.node)) continue;
    if (b.ms === undefined && b.copies > 0) continue;
    const end = b.ms === undefined ? Number.NEGATIVE_INFINITY : b.end;
    const better = !best || (b.warm !== best.warm ? b.warm : end < bestEnd
      || (end === bestEnd && ((b.ms ?? 0) < (best.ms ?? 0) || ((b.ms ?? 0) === (best.ms ?? 0) && b.status.node < best.status.node))));
    if (better) (best = b), (bestEnd = end);
  }
  return best;
}

export interface JobStats {
  jobs: number;
  shards: number;
  hedged: number;
  late: number;
  requeued: number;
  garbage: number;
}

const SIZING: SizeOptions = { targetMs: 500, minMs: 20, maxShard: 256, probe: 2 };
/** Results per job message, so one message stays small. */
const CHUNK = 256;

export class Jobs {
  readonly stats: JobStats = { jobs: 0, shards: 0, hedged: 0, late: 0, requeued: 0, garbage: 0 };
  private readonly jobs = new Map<string, JobState>();
  /** Jobs finished recently, by key: their size, so a late resend of one is answered. */
  private readonly finished = new Map<string, number>();
  private readonly distrusted = new Map<string, number>();
  private readonly sizing: SizeOptions;
  /** When each app last got a shard (a counter), for turns between apps; forgotten with their jobs. */
  private readonly servedAt = new Map<string, number>();
  private serveCount = 0;
  /** When each agent last returned a shard: its next shard started then at the latest. */
  private readonly lastResultAt = new Map<string, number>();

  constructor(
    private readonly broker: BrokerPort,
    private readonly capacity: Capacity,
    private readonly o: JobsOptions,
  ) {
    this.sizing = { ...SIZING, ...o.sizing };
  }

  get running(): number {
    return this.jobs.size;
  }

  /** Shard copies outstanding on `node` (they hold its slots). */
  copiesAt(node: string): number {
    let n = 0;
    for (const job of this.jobs.values()) for (const f of job.flights.values()) for (const c of f.copies) if (c.node === node) n++;
    return n;
  }

  // ---------------------------------------------------------------- messages

  onJob(topic: string, payload: Buffer): void {
    const parsed = parseJobTopic(topic);
    if (!parsed.ok) {
      if (parsed.replyTo) this.fail(parsed.replyTo, parsed.error);
      else this.o.log.warn(`dropped a job with no usable reply topic: ${parsed.error.message}`);
      return;
    }
    const req = parsed.topic;
    const key = `${req.client}/${req.id}`;
    let job: ReturnType<typeof decodeJob>;
    try {
      job = decodeJob(payload, { maxPayloadBytes: this.o.maxJobBytes ?? 32 << 20, maxItems: this.o.maxJobItems ?? 100_000 });
    } catch (err) {
      return this.fail(req, err instanceof KizunaError ? err : new KizunaError('KZ_ERR_MALFORMED', String(err)));
    }
    const existing = this.jobs.get(key);
    if (existing && existing.total !== job.items.length) {
      // Another job under a running job's id: its results could never be told apart. Refused.
      return this.fail(req, new KizunaError('KZ_ERR_BAD_REQUEST', `job ${req.id} is running with ${existing.total} inputs; a different job needs a new id`));
    }
    if (existing) {
      // The app asks again (it reconnected, or heard nothing for a while). If it lost nothing, it
      // needs only to hear that the job runs; if it lost results, the job goes on from there.
      if (job.from >= existing.from + existing.ledger.emittedCount) return this.publish(existing, [], false);
      this.o.log.info(`job ${key}: the app lacks results from ${job.from}; running them again`);
    }
    const done = this.finished.get(key);
    if (!existing && done === job.items.length && job.from >= done) {
      return this.publishRaw(req, encodeJobResults(req.id, done, [], this.progressOf(undefined, done), true));
    }
    if (!this.capacity.serving(req.model).length) return this.fail(req, this.capacity.noAgent(req.model));
    if (!existing && this.jobs.size >= (this.o.maxJobs ?? 64)) {
      return this.fail(req, new KizunaError('KZ_ERR_OVERLOADED', `${this.jobs.size} jobs already run; send this one again later (same id)`));
    }
    const held = [...this.jobs.values()].reduce((n, j) => n + (j.key === key ? 0 : j.payloadBytes), 0);
    const maxHeld = this.o.maxRunningBytes ?? 128 << 20;
    if (this.jobs.size > 0 && held + payload.length > maxHeld) {
      return this.fail(req, new KizunaError('KZ_ERR_OVERLOADED', `running jobs already hold ${held} bytes here (limit ${maxHeld}); send this one again later (same id)`));
    }
    const now = this.o.now();
    const state: JobState = {
      key, req, items: job.items, bytes: prefixBytes(job.items), payloadBytes: payload.length,
      shardBudget: Math.max(1, (this.o.maxShardBytes ?? 4 << 20) - (encodeShard([], job.options).length - 1)), options: job.options, from: job.from, total: job.items.length,
      ledger: new Ledger(job.items.length - job.from), pending: new Ranges(job.from, job.items.length),
      // Copies already running keep their slots and their results still count.
      flights: existing?.flights ?? new Map(), running: new Uint8Array(job.items.length),
      attempts: new Uint8Array(job.items.length), refusedBy: new Map(),
      ...this.summaryOf(req.model), startedAt: now, lastSentAt: now, failed: 0, byAgent: {},
    };
    for (const f of state.flights.values()) if (!f.done) for (let i = f.start; i < f.end; i++) state.running[i]! += 1;
    this.jobs.delete(key);
    this.jobs.set(key, state);
    this.finished.delete(key);
    if (!existing) this.stats.jobs++;
    if (state.total === state.from) return this.complete(state);
    this.publish(state, [], false);
  }

  onShardResult(topic: string, payload: Buffer): void {
    const ref = parseShardResultTopic(topic);
    if (!ref) return;
    const job = this.jobs.get(`${ref.client}/${ref.job}`);
    if (!job || ref.end > job.total) return; // finished, or from an earlier life of this broker
    const flightKey = `${ref.start}-${ref.end}`;
    const flight = job.flights.get(flightKey);
    const check = checkShardResult(payload, { count: ref.end - ref.start, model: job.req.model, ...(job.summary ? { summary: job.summary } : {}) });
    if (!check.ok) {
      const blamed = flight?.copies.find((c) => c.node === check.agent) ?? (flight?.copies.length === 1 ? flight.copies[0] : undefined);
      this.stats.garbage++;
      this.o.log.warn(`job ${job.key}: refused the results of ${flightKey} from ${check.agent ?? 'an unknown agent'}: ${check.reason}`);
      if (blamed) this.distrust(blamed.node);
      return;
    }
    if (this.isDistrusted(check.agent)) return;
    const now = this.o.now();
    const copy = flight?.copies.find((c) => c.node === check.agent);
    const refusedAll = check.results.every((r) => !r.ok && RETRYABLE.has(r.error.code));
    if (copy) {
      // Its time from when it could start it: sent, or when it returned its previous shard. A
      // board that refused everything did no work: that is no measure of its speed.
      const since = Math.max(copy.sentAt, this.lastResultAt.get(copy.node) ?? 0);
      if (!refusedAll && !copy.cold) this.capacity.measured(copy.node, job.req.model, ref.end - ref.start, since, true);
      flight!.copies.splice(flight!.copies.indexOf(copy), 1);
    }
    if (!refusedAll) this.lastResultAt.set(check.agent, now);
    check.results.forEach((r, k) => {
      const index = ref.start + k;
      if (index < job.from) return;
      // A board that was busy or failing says nothing about the input: run it again (a few
      // times), on another board when there is one.
      if (!r.ok && RETRYABLE.has(r.error.code) && job.attempts[index]! + 1 < (this.o.maxAttempts ?? 3)) {
        job.attempts[index]! += 1;
        job.refusedBy.set(index, [...(job.refusedBy.get(index) ?? []), check.agent]);
        return;
      }
      job.refusedBy.delete(index);
      if (!job.ledger.accept(index - job.from, { ...r, index, agent: check.agent })) return;
      if (!r.ok) job.failed++;
      job.byAgent[check.agent] = (job.byAgent[check.agent] ?? 0) + 1;
    });
    if (flight) {
      flight.done = this.missing(job, flight) === 0;
      this.settle(job, flightKey, flight);
    }
    this.emit(job);
  }

  /** An agent left, restarted, or reconnected: its copies are dropped, or sent again. */
  onNodeChange(node: string, status: NodeStatus | undefined): void {
    for (const job of this.jobs.values()) {
      for (const flight of [...job.flights.values()]) {
        for (const copy of [...flight.copies]) {
          if (copy.node !== node) continue;
          if (status?.online && status.instance === copy.instance) {
            if (status.seq > copy.seq) {
              copy.seq = status.seq; // it reconnected: what was sent while it was away is lost
              this.sendCopy(job, flight, copy);
            }
          } else this.drop(job, flight, copy);
        }
      }
    }
  }

  /**
   * Late copies get a hedge; progress is sent to apps that heard nothing for a while; copies of
   * finished shards that never answered stop holding their agent's slots.
   */
  tick(): void {
    const now = this.o.now();
    for (const job of this.jobs.values()) {
      for (const [key, flight] of job.flights) {
        for (const copy of [...flight.copies]) {
          if (copy.late || now < copy.deadlineAt) continue;
          copy.late = true;
          if (flight.done) {
            flight.copies.splice(flight.copies.indexOf(copy), 1);
            continue;
          }
          this.stats.late++;
          this.o.log.info(`job ${job.key}: shard ${key} late on ${copy.node}; running it elsewhere too`);
          if (!copy.cold) this.capacity.measured(copy.node, job.req.model, flight.end - flight.start, copy.sentAt, false);
        }
        if (!flight.copies.length) this.settle(job, key, flight);
      }
      if (now - job.lastSentAt >= (this.o.heartbeatMs ?? 1000)) this.publish(job, [], false);
    }
    for (const [node, until] of this.distrusted) if (until <= now) this.distrusted.delete(node);
  }

  // ---------------------------------------------------------------- placing work

  /**
   * Gives free slots work: late shards first (a copy elsewhere), then new shards of the oldest
   * jobs, then, when nothing is pending anywhere, copies of the stragglers an idle agent would beat.
   * Works on one snapshot of the boards, updated as it places shards (this runs at every result).
   */
  pump(): void {
    if (!this.jobs.size) return;
    const now = this.o.now();
    const ends = this.expectedEnds(now);
    const boards = new Map<string, Board[]>();
    const boardsOf = (model: string): Board[] => {
      let list = boards.get(model);
      if (!list) boards.set(model, (list = this.boards(model, ends, now)));
      return list;
    };
    for (const job of this.jobs.values()) {
      const list = boardsOf(job.req.model);
      for (const flight of job.flights.values()) {
        if (flight.done || flight.copies.length >= 2 || !flight.copies.every((c) => c.late)) continue;
        const board = pickBoard(list, flight.copies.map((c) => c.node));
        if (board) this.place(job, flight, board, now, 'hedged');
      }
    }
    // New shards, one per app in turn (each app's oldest job first), so a second app's job does
    // not wait until a big job of the first one is all handed out.
    const excluded = new Map<JobState, string[]>();
    for (let round = 0; round < 100_000; round++) {
      let placed = false;
      for (const job of this.nextJobPerClient()) {
        const list = boardsOf(job.req.model);
        const skip = excluded.get(job) ?? [];
        excluded.set(job, skip);
        const rate = list.reduce((sum, b) => sum + b.rate, 0);
        for (let guard = 0; guard < list.length + 1; guard++) {
          const board = pickBoard(list, skip);
          if (!board) break;
          // Shards shrink as the work left for this model (in every job) runs out, not each job's
          // (a batch sends its next job before the current one ends).
          const size = shardSize(board.ms, rate > 0 ? board.rate / rate : 1, this.pendingOf(job.req.model), this.sizing);
          const range = this.cut(job, board.status.node, size, list);
          if (!range) {
            if (job.pending.isEmpty) break;
            skip.push(board.status.node); // it refused the next input: another board takes it
            continue;
          }
          const flight = { ...range, copies: [], done: false };
          job.flights.set(`${range.start}-${range.end}`, flight);
          for (let i = range.start; i < range.end; i++) job.running[i]! += 1;
          this.place(job, flight, board, now);
          this.servedAt.set(job.req.client, ++this.serveCount);
          placed = true;
          break;
        }
      }
      if (!placed) break;
    }
    if ([...this.jobs.values()].some((j) => !j.pending.isEmpty)) return;
    for (const job of this.jobs.values()) this.hedgeStragglers(job, boardsOf(job.req.model), ends, now);
  }

  /**
   * For each app with pending work, its oldest job that has some; the app served least recently
   * first (most pumps free one slot: without the turn, the first app would always take it).
   */
  private nextJobPerClient(): JobState[] {
    const first = new Map<string, JobState>();
    for (const job of this.jobs.values()) if (!job.pending.isEmpty && !first.has(job.req.client)) first.set(job.req.client, job);
    const turn = (client: string) => {
      const at = this.servedAt.get(client);
      return at === undefined ? -1 : at;
    };
    return [...first.values()].sort((a, b) => turn(a.req.client) - turn(b.req.client));
  }

  /** Idle measured boards copy the stragglers they would finish sooner. */
  private hedgeStragglers(job: JobState, boards: Board[], ends: Map<Copy, number>, now: number): void {
    const views = [...job.flights.values()]
      .filter((f) => !f.done && f.copies.length)
      .map((f) => ({
        flight: f,
        copies: f.copies.length,
        placed: f.copies.map((c): Placed => ({ node: c.node, size: f.end - f.start, expectedEndMs: ends.get(c) ?? now })),
      }));
    for (const board of boards) {
      if (!views.length) return;
      if (board.ms === undefined || board.free < 1 || board.end > now) continue;
      const pick = pickHedge(views, { node: board.status.node, ms: board.ms }, now, this.o.hedgeMargin ?? 0.25);
      if (!pick) continue;
      const copy = this.place(job, pick.flight, board, now, 'hedged');
      pick.copies++;
      pick.placed.push({ node: copy.node, size: pick.flight.end - pick.flight.start, expectedEndMs: board.end });
    }
  }

  /** Sends one copy of `flight` to `board`, and counts it in the board's snapshot. */
  private place(job: JobState, flight: Flight, board: Board, now: number, why?: 'hedged'): Copy {
    const size = flight.end - flight.start;
    const startAt = Math.max(now, board.end);
    const slack = this.o.slack ?? 3;
    const ms = board.ms;
    const deadlineAt = ms === undefined
      ? now + (this.o.unknownMs ?? 30_000)
      : startAt + size * ms + Math.max(this.o.floorMs ?? 1000, size * ms * (slack - 1)) + (board.warm ? 0 : this.o.coldMs ?? 5000);
    const { node, instance, seq } = board.status;
    const copy: Copy = { node, instance, seq, sentAt: now, deadlineAt, late: false, cold: !board.warm };
    flight.copies.push(copy);
    board.free--;
    board.copies++;
    board.end = ms === undefined ? Number.POSITIVE_INFINITY : startAt + size * ms;
    this.stats.shards++;
    if (why === 'hedged') this.stats.hedged++;
    this.sendCopy(job, flight, copy);
    return copy;
  }

  private sendCopy(job: JobState, flight: Flight, copy: Copy): void {
    const { model, client, id } = job.req;
    const topic = topics.shard(this.o.mesh, copy.node, { model, client, job: id, start: flight.start, end: flight.end });
    const payload = encodeShard(job.items.slice(flight.start, flight.end), job.options);
    this.broker.publish(topic, payload, false).catch((err: Error) => this.o.log.warn(`shard for ${copy.node} not published: ${err.message}`));
  }

  /** The trusted boards serving `model`, with their speed, free slots and when their queued work ends. */
  private boards(model: string, ends: Map<Copy, number>, now: number): Board[] {
    const endOf = new Map<string, number>();
    const copiesOf = new Map<string, number>();
    for (const [copy, t] of ends) {
      endOf.set(copy.node, Math.max(endOf.get(copy.node) ?? now, t));
      copiesOf.set(copy.node, (copiesOf.get(copy.node) ?? 0) + 1);
    }
    const list = this.capacity
      .serving(model)
      .filter((s) => !this.isDistrusted(s.node))
      .map((status) => {
        const ms = this.capacity.msPerInput(status.node, model);
        return { status, warm: isWarm(status, model), ms, rate: ms ? 1 / ms : 0, free: this.capacity.free(status.node), copies: copiesOf.get(status.node) ?? 0, end: endOf.get(status.node) ?? now };
      });
    // An unmeasured board counts as the slowest measured one in the shares.
    const slowest = Math.min(...list.filter((b) => b.rate > 0).map((b) => b.rate));
    for (const b of list) if (!b.rate) b.rate = Number.isFinite(slowest) ? slowest : 1;
    return list;
  }

  /**
   * The next shard for `node`: from the lowest pending index, dropping inputs that already have a
   * result or run in another shard (after a resend or a failover), within the byte budget, and
   * stopping before an input this board refused while another board could take it. Undefined when
   * the next input is one it refused.
   */
  private cut(job: JobState, node: string, size: number, boards: readonly Board[]): { start: number; end: number } | undefined {
    const refused = (i: number) => {
      const by = job.refusedBy.get(i);
      return by !== undefined && by.includes(node) && boards.some((b) => !by.includes(b.status.node));
    };
    const skip = (i: number) => this.accepted(job, i) || job.running[i]! > 0;
    for (let guard = 0; guard < 10_000_000; guard++) {
      const first = job.pending.first();
      if (first === undefined) return undefined;
      if (skip(first)) {
        job.pending.take(1);
        continue;
      }
      if (refused(first)) return undefined;
      const fits = fitting(job.bytes, first, job.shardBudget);
      const taken = job.pending.take(Math.min(size, fits))!;
      let end = taken.start + 1;
      while (end < taken.end && !skip(end) && !refused(end)) end++;
      if (end < taken.end) job.pending.add(end, taken.end);
      return { start: taken.start, end };
    }
    return undefined;
  }

  /** A board that sent garbage: no shards for a while, and its copies everywhere run elsewhere. */
  private distrust(node: string): void {
    this.distrusted.set(node, this.o.now() + (this.o.distrustMs ?? 60_000));
    for (const job of this.jobs.values()) {
      for (const flight of [...job.flights.values()]) {
        for (const copy of [...flight.copies]) if (copy.node === node) this.drop(job, flight, copy);
      }
    }
  }

  private pendingOf(model: string): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.req.model === model) n += j.pending.size;
    return n;
  }

  /**
   * When each running copy should end: an agent runs its shards one after another, from when it
   * returned its previous one. An overdue copy is expected to take as long again from now.
   */
  private expectedEnds(now: number): Map<Copy, number> {
    const byNode = new Map<string, { copy: Copy; size: number; model: string }[]>();
    for (const job of this.jobs.values()) {
      for (const f of job.flights.values()) {
        for (const copy of f.copies) {
          const list = byNode.get(copy.node) ?? [];
          list.push({ copy, size: f.end - f.start, model: job.req.model });
          byNode.set(copy.node, list);
        }
      }
    }
    const ends = new Map<Copy, number>();
    for (const [node, list] of byNode) {
      list.sort((a, b) => a.copy.sentAt - b.copy.sentAt);
      let t = this.lastResultAt.get(node) ?? 0;
      for (const { copy, size, model } of list) {
        const ms = this.capacity.msPerInput(node, model) ?? (this.o.unknownMs ?? 30_000) / Math.max(1, size);
        t = Math.max(t, copy.sentAt) + size * ms;
        if (t < now) t = now + size * ms;
        ends.set(copy, t);
      }
    }
    return ends;
  }

  // ---------------------------------------------------------------- bookkeeping

  private isDistrusted(node: string): boolean {
    const until = this.distrusted.get(node);
    return until !== undefined && until > this.o.now();
  }

  private accepted(job: JobState, index: number): boolean {
    return index < job.from || job.ledger.has(index - job.from);
  }

  private missing(job: JobState, flight: Flight): number {
    let n = 0;
    for (let i = flight.start; i < flight.end; i++) if (!this.accepted(job, i)) n++;
    return n;
  }

  /** A copy that will not answer: if it was the shard's last and the shard is not done, its inputs are pending again. */
  private drop(job: JobState, flight: Flight, copy: Copy): void {
    const i = flight.copies.indexOf(copy);
    if (i >= 0) flight.copies.splice(i, 1);
    if (!flight.copies.length) this.settle(job, `${flight.start}-${flight.end}`, flight);
  }

  /** Removes a flight with no copies left; the inputs of it that have no result go back to pending. */
  private settle(job: JobState, key: string, flight: Flight): void {
    if (flight.copies.length) return;
    if (job.flights.get(key) !== flight) return;
    job.flights.delete(key);
    if (!flight.done) for (let i = flight.start; i < flight.end; i++) job.running[i] = Math.max(0, job.running[i]! - 1);
    if (flight.done) return;
    let run: number | undefined;
    for (let i = flight.start; i <= flight.end; i++) {
      const missing = i < flight.end && !this.accepted(job, i);
      if (missing && run === undefined) run = i;
      if (!missing && run !== undefined) {
        job.pending.add(run, i);
        this.stats.requeued += i - run;
        run = undefined;
      }
    }
  }

  private summaryOf(model: string): { summary?: ModelSummary } {
    // The version most agents serve is the reference results are checked against.
    const count = new Map<string, { n: number; summary: ModelSummary }>();
    for (const s of this.capacity.serving(model)) {
      const m = s.models?.find((x) => x.name === model);
      if (!m) continue;
      const c = count.get(m.sha256) ?? { n: 0, summary: m };
      c.n++;
      count.set(m.sha256, c);
    }
    const best = [...count.values()].sort((a, b) => b.n - a.n)[0];
    return best ? { summary: best.summary } : {};
  }

  private progressOf(job: JobState | undefined, total: number): JobProgress {
    if (!job) return { done: total, total, failed: 0, rate: 0, eta_s: 0, by_agent: {} };
    const done = job.from + job.ledger.done;
    const seconds = Math.max(0.001, (this.o.now() - job.startedAt) / 1000);
    const rate = job.ledger.done / seconds;
    return {
      done, total, failed: job.failed, rate: Math.round(rate * 100) / 100,
      eta_s: rate > 0 ? Math.round(((total - done) / rate) * 100) / 100 : -1, by_agent: { ...job.byAgent },
    };
  }

  /** Streams the results now in order; completes the job when all are out. */
  private emit(job: JobState): void {
    const ready = job.ledger.nextInOrder().map((x) => x.result);
    if (job.ledger.isComplete) {
      this.publish(job, ready, true);
      return this.complete(job);
    }
    if (ready.length) this.publish(job, ready, false);
  }

  private complete(job: JobState): void {
    if (job.total === job.from) this.publish(job, [], true);
    this.jobs.delete(job.key);
    if (![...this.jobs.values()].some((j) => j.req.client === job.req.client)) this.servedAt.delete(job.req.client);
    this.finished.set(job.key, job.total);
    while (this.finished.size > 1000) this.finished.delete(this.finished.keys().next().value!);
  }

  private publish(job: JobState, results: JobResultItem[], complete: boolean): void {
    job.lastSentAt = this.o.now();
    const progress = this.progressOf(job, job.total);
    let from = results[0]?.index ?? job.from + job.ledger.emittedCount;
    for (let i = 0; i < results.length || i === 0; i += CHUNK) {
      const chunk = results.slice(i, i + CHUNK);
      const last = i + CHUNK >= results.length;
      this.publishRaw(job.req, encodeJobResults(job.req.id, from, chunk, progress, complete && last));
      from += chunk.length;
    }
  }

  private publishRaw(to: { mesh: string; client: string; id: string }, payload: Buffer): void {
    this.broker.publish(topics.jobResults(to.mesh, to.client, to.id), payload, false).catch(() => undefined);
  }

  private fail(to: { mesh: string; client: string; id: string }, err: KizunaError): void {
    this.publishRaw(to, encodeJobError(to.id, this.o.node, err));
  }
}

function prefixBytes(items: readonly JobItem[]): Float64Array {
  const out = new Float64Array(items.length + 1);
  items.forEach((item, i) => (out[i + 1] = out[i]! + itemBytes(item) + 1));
  return out;
}
