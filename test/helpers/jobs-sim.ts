/**
 * A deterministic discrete-event simulation of a mesh running jobs: the real Dispatcher (and its
 * Jobs) on an in-memory broker and a virtual clock, agents that take a true time per input and
 * run the shards they receive one at a time in order, and an app that publishes jobs and collects
 * their result messages. No timers, no sleeps: the clock jumps from one event to the next, and
 * the dispatcher's tick() is an event every `tickMs` of virtual time.
 */
import { Dispatcher, type BrokerPort } from '../../broker/dispatcher.js';
import type { JobsOptions } from '../../broker/jobs.js';
import { createLogger } from '../../agent/log.js';
import { decodeJobMessage, decodeShard, encodeShardResult, RETRYABLE, type ItemResult, type JobItem, type JobMessage, type JobResultItem } from '../../mesh/jobs.js';
import type { ModelSummary, NodeStatus } from '../../mesh/status.js';
import { parseShardResultTopic, parseShardTopic, topicMatches, topics, type ShardRef } from '../../mesh/topics.js';

export const MESH = 'home';
export const MODEL = 'digits';
export const SUMMARY: ModelSummary = {
  name: MODEL, version: '1', sha256: 'd161750000000000', inputs: [{ name: 'image', dtype: 'uint8', shape: [1, 28, 28] }],
  outputs: [{ name: 'logits', dtype: 'float32', shape: [1, 10] }],
};

// ---------------------------------------------------------------- clock

interface Event {
  t: number;
  seq: number;
  fn: () => void;
}

/** Events on a virtual clock, run in time order; ties in the order they were scheduled. */
export class Clock {
  now = 0;
  private readonly heap: Event[] = [];
  private seq = 0;

  at(t: number, fn: () => void): void {
    const h = this.heap;
    h.push({ t: Math.max(t, this.now), seq: this.seq++, fn });
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  after(ms: number, fn: () => void): void {
    this.at(this.now + ms, fn);
  }

  /** Runs the next event; false when there is none. */
  step(): boolean {
    const h = this.heap;
    const top = h[0];
    if (!top) return false;
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    this.now = top.t;
    top.fn();
    return true;
  }
}

const before = (a: Event, b: Event) => a.t < b.t || (a.t === b.t && a.seq < b.seq);

// ---------------------------------------------------------------- broker

/** An in-memory broker: delivery is synchronous, retained messages reach later subscribers. */
export class SimBus implements BrokerPort {
  private readonly subs: { filter: string; handler: (t: string, p: Buffer, r: boolean) => void }[] = [];
  private readonly retained = new Map<string, Buffer>();
  /** Every shard published, in order; and every shard result. */
  readonly shards: { t: number; node: string; ref: ShardRef; payload: Buffer }[] = [];
  readonly shardResults: { t: number; ref: { client: string; job: string; start: number; end: number }; payload: Buffer }[] = [];

  constructor(private readonly clock: Clock) {}

  async subscribe(filter: string, handler: (t: string, p: Buffer, r: boolean) => void) {
    const sub = { filter, handler };
    this.subs.push(sub);
    for (const [topic, payload] of this.retained) if (topicMatches(filter, topic)) handler(topic, payload, true);
    return async () => void this.subs.splice(this.subs.indexOf(sub), 1);
  }

  async publish(topic: string, payload: Buffer, retain = false) {
    if (retain) this.retained.set(topic, payload);
    const shard = parseShardTopic(topic);
    if (shard) this.shards.push({ t: this.clock.now, node: shard.node, ref: shard, payload });
    const result = parseShardResultTopic(topic);
    if (result) this.shardResults.push({ t: this.clock.now, ref: result, payload });
    for (const s of [...this.subs]) if (topicMatches(s.filter, topic)) s.handler(topic, payload, false);
  }
}

// ---------------------------------------------------------------- inputs

/** The item of input `i`: an "image" that names its index, padded to `pad` characters. */
export function itemOf(i: number, pad = 0): JobItem {
  return { image: Buffer.from(`#${i}:`.padEnd(Math.max(pad, 1), '.')).toString('base64') };
}

export function indexOf(item: JobItem): number {
  const m = /^#(\d+):/.exec(Buffer.from(String(item.image), 'base64').toString());
  return m ? Number(m[1]) : -1;
}

/** The right result for input `i`: class i % 10. */
export function goodResult(i: number, ms = 1): ItemResult {
  const logits = Array.from({ length: 10 }, (_, k) => (k === i % 10 ? 0.9 : 0.01));
  return {
    ok: true, model: MODEL, version: '1',
    outputs: { logits: { dtype: 'float32', shape: [1, 10], data: logits } },
    answers: [{ index: i % 10, score: 0.9 }],
    timings: { queue_ms: 0, pre_ms: 0, infer_ms: ms, post_ms: 0, total_ms: ms },
  };
}

// ---------------------------------------------------------------- agents

export interface AgentSpec {
  node: string;
  /** True time per input. */
  ms: number;
  slots?: number;
  /** Its result for input `i` (default: goodResult). */
  answer?: (i: number, agent: SimAgent) => ItemResult;
  /** Rewrites the whole result list of a shard (to send garbage). */
  tamper?: (results: ItemResult[], ref: ShardRef, agent: SimAgent) => unknown[];
  summary?: ModelSummary;
}

export class SimAgent {
  alive = true;
  /** Shards received (in order) and shards answered, with when. */
  readonly received: { t: number; ref: ShardRef }[] = [];
  readonly answered: { t: number; ref: ShardRef }[] = [];
  /** From `at` on, each input takes `factor` times as long. */
  slowdown?: { at: number; factor: number };
  /** Shards sent again that it already had (dropped, or answered again from its cache, as agent/worker.ts does). */
  duplicates = 0;
  private readonly queue: { ref: ShardRef; items: JobItem[] }[] = [];
  /** Every shard it took, by key: its result once answered. */
  private readonly seen = new Map<string, Buffer | undefined>();
  private busy = false;
  private connected = true;
  private seq = 1;
  readonly instance: string;

  constructor(private readonly sim: Sim, readonly spec: AgentSpec) {
    this.instance = `${spec.node}-i1`;
  }

  status(online = true): NodeStatus {
    return { v: 1, node: this.spec.node, instance: this.instance, started: 1, seq: this.seq, online, slots: this.spec.slots ?? 2, models: [this.spec.summary ?? SUMMARY] };
  }

  async start(): Promise<void> {
    await this.sim.bus.subscribe(topics.shardsFor(MESH, this.spec.node), (topic, payload) => {
      const ref = parseShardTopic(topic)!;
      // The shard reaches the agent after the network latency.
      this.sim.clock.after(this.sim.latencyMs, () => this.receive(ref, payload));
    });
    await this.sim.bus.publish(topics.nodeStatus(MESH, this.spec.node), Buffer.from(JSON.stringify(this.status())), true);
  }

  /** Dies now (nothing it holds is ever answered); its will is published `detectMs` later. */
  kill(detectMs: number): void {
    this.alive = false;
    this.queue.length = 0;
    this.sim.clock.after(detectMs, () => void this.sim.bus.publish(topics.nodeStatus(MESH, this.spec.node), Buffer.from(JSON.stringify(this.status(false))), true));
  }

  /** Loses its connection: shards sent and results finished until reconnect() are lost; it keeps working. */
  disconnect(): void {
    this.connected = false;
  }

  /** Connects again (its connection number goes up) and publishes its status. */
  reconnect(): void {
    this.connected = true;
    this.seq += 1;
    void this.sim.bus.publish(topics.nodeStatus(MESH, this.spec.node), Buffer.from(JSON.stringify(this.status())), true);
  }

  /** When `inputs` inputs started at `t` end, with the slowdown. */
  finishAt(t: number, inputs: number): number {
    const ms = this.spec.ms;
    const s = this.slowdown;
    if (!s || t + inputs * ms <= s.at) return t + inputs * ms;
    const before = Math.max(0, (s.at - t) / ms);
    return Math.max(t, s.at) + (inputs - before) * ms * s.factor;
  }

  private receive(ref: ShardRef, payload: Buffer): void {
    if (!this.alive || !this.connected) return;
    const key = `${ref.client}/${ref.job}/${ref.start}-${ref.end}`;
    if (this.seen.has(key)) {
      this.duplicates++;
      const cached = this.seen.get(key);
      if (cached) this.sim.clock.after(this.sim.latencyMs, () => void this.sim.bus.publish(topics.shardResult(MESH, ref), cached));
      return;
    }
    this.seen.set(key, undefined);
    this.received.push({ t: this.sim.clock.now, ref });
    const items = decodeShard(payload, { maxPayloadBytes: 64 << 20 });
    this.sim.checkShard(this.spec.node, ref, items);
    this.queue.push({ ref, items });
    this.next();
  }

  private next(): void {
    if (this.busy || !this.alive) return;
    const shard = this.queue.shift();
    if (!shard) return;
    this.busy = true;
    const { ref, items } = shard;
    this.sim.clock.at(this.finishAt(this.sim.clock.now, items.length), () => {
      this.busy = false;
      if (!this.alive) return;
      this.answered.push({ t: this.sim.clock.now, ref });
      const answer = this.spec.answer ?? ((i: number) => goodResult(i, this.spec.ms));
      const results = items.map((item) => answer(indexOf(item), this));
      const body = this.spec.tamper ? this.spec.tamper(results, ref, this) : results;
      const payload = encodeShardResult(this.spec.node, body as ItemResult[]);
      // As agent/worker.ts: a shard whose every input must be run again is not remembered (a copy sent again runs again).
      const key = `${ref.client}/${ref.job}/${ref.start}-${ref.end}`;
      if (results.every((r) => !r.ok && RETRYABLE.has(r.error.code))) this.seen.delete(key);
      else this.seen.set(key, payload);
      if (this.connected) this.sim.clock.after(this.sim.latencyMs, () => void this.sim.bus.publish(topics.shardResult(MESH, ref), payload));
      this.next();
    });
  }
}

// ---------------------------------------------------------------- app

export interface Received {
  t: number;
  msg: JobMessage;
}

/** An app: publishes jobs, keeps every result message of each, in arrival order. */
export class SimApp {
  readonly messages = new Map<string, Received[]>();
  /** How many messages job `id` had when it was last sent. */
  readonly sentAt = new Map<string, number>();

  constructor(private readonly sim: Sim, readonly client = 'app') {}

  async start(): Promise<void> {
    await this.sim.bus.subscribe(topics.jobResultsTo(MESH, this.client), (topic, payload) => {
      const id = topic.split('/').pop()!;
      const list = this.messages.get(id) ?? [];
      list.push({ t: this.sim.clock.now, msg: decodeJobMessage(payload) });
      this.messages.set(id, list);
    });
  }

  /** Publishes job `id` of `items` (remembered, so agents can check what they get). */
  send(id: string, items: JobItem[], extra: Record<string, unknown> = {}, model = MODEL): void {
    this.sim.jobItems.set(`${this.client}/${id}`, items);
    this.raw(id, Buffer.from(JSON.stringify({ ...extra, items })), model);
  }

  raw(id: string, payload: Buffer, model = MODEL): void {
    this.sentAt.set(id, this.of(id).length);
    void this.sim.bus.publish(topics.job(MESH, model, this.client, id), payload);
  }

  of(id: string): Received[] {
    return this.messages.get(id) ?? [];
  }

  /** Every result of job `id`, in the order its messages brought them (messages from `since` on). */
  results(id: string, since = 0): JobResultItem[] {
    return this.of(id).slice(since).flatMap((r) => (r.msg.ok ? r.msg.results : []));
  }

  /** When a complete message of job `id` came (among its messages from `since` on). */
  completedAt(id: string, since = 0): number | undefined {
    return this.of(id).slice(since).find((r) => r.msg.ok && r.msg.complete)?.t;
  }

  error(id: string, since = 0): { code: string; message: string } | undefined {
    const r = this.of(id).slice(since).find((x) => !x.msg.ok)?.msg;
    return r && !r.ok ? r.error : undefined;
  }
}

// ---------------------------------------------------------------- the mesh

export interface SimOptions {
  agents: AgentSpec[];
  jobs?: Partial<JobsOptions>;
  /** One way, broker <-> agent. */
  latencyMs?: number;
  tickMs?: number;
}

export class Sim {
  readonly clock = new Clock();
  readonly bus = new SimBus(this.clock);
  readonly agents = new Map<string, SimAgent>();
  readonly app: SimApp;
  dispatcher: Dispatcher;
  readonly latencyMs: number;
  /** The items of every job sent, by client/id; and what went wrong in the shards agents got. */
  readonly jobItems = new Map<string, JobItem[]>();
  readonly violations: string[] = [];

  private constructor(readonly options: SimOptions) {
    this.latencyMs = options.latencyMs ?? 1;
    this.app = new SimApp(this);
    this.dispatcher = this.newDispatcher();
  }

  private newDispatcher(): Dispatcher {
    const { jobs } = this.options;
    return new Dispatcher(this.bus, { mesh: MESH, node: 'broker', log: createLogger('silent'), now: () => this.clock.now, tickMs: 0, ...(jobs ? { jobs } : {}) });
  }

  /** The broker fails over: its dispatcher (and every job's state) is gone; a new one starts. */
  async failover(): Promise<void> {
    await this.dispatcher.stop();
    this.dispatcher = this.newDispatcher();
    await this.dispatcher.start();
  }

  static async create(options: SimOptions): Promise<Sim> {
    const sim = new Sim(options);
    await sim.dispatcher.start();
    await sim.app.start();
    for (const spec of options.agents) {
      const agent = new SimAgent(sim, spec);
      sim.agents.set(spec.node, agent);
      await agent.start();
    }
    const tickMs = options.tickMs ?? 100;
    const tick = () => {
      sim.dispatcher.tick();
      sim.clock.after(tickMs, tick);
    };
    sim.clock.after(tickMs, tick);
    return sim;
  }

  agent(node: string): SimAgent {
    return this.agents.get(node)!;
  }

  /** Runs events until `done()`; throws past `limitMs` of virtual time (the job is stuck). */
  run(done: () => boolean, limitMs = 120_000): void {
    const end = this.clock.now + limitMs;
    while (!done()) {
      if (this.clock.now > end || !this.clock.step()) throw new Error(`simulation stuck at ${this.clock.now} ms`);
    }
  }

  /**
   * Runs until job `id` is complete or refused (by a message from `since` on: by default, since the
   * last time it was sent); returns the virtual time that took.
   */
  runJob(id: string, limitMs?: number, since = this.app.sentAt.get(id) ?? 0): number {
    const t0 = this.clock.now;
    this.run(() => this.app.completedAt(id, since) !== undefined || this.app.error(id, since) !== undefined, limitMs);
    return this.clock.now - t0;
  }

  /** A shard's items must be exactly the job's items of its range (with the job's options merged in). */
  checkShard(node: string, ref: ShardRef, items: JobItem[]): void {
    const job = this.jobItems.get(`${ref.client}/${ref.job}`);
    const what = `shard ${ref.job}/${ref.start}-${ref.end} on ${node}`;
    if (!job) return void this.violations.push(`${what}: unknown job`);
    if (items.length !== ref.end - ref.start) return void this.violations.push(`${what}: ${items.length} items`);
    items.forEach((item, k) => {
      if (item.image !== job[ref.start + k]?.image) this.violations.push(`${what}: item ${k} is not input ${ref.start + k}`);
    });
  }
}
