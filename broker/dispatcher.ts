/**
 * The dispatcher runs inside the elected broker's process (aedes has no shared subscriptions, so
 * someone must hand each request to exactly one agent). It reads every request, picks the online
 * agent serving the model that should answer soonest (its queue times its measured time per
 * request), within the slots the agent grants, and forwards the same payload on that agent's task
 * topic; the agent replies straight to the app. When every agent's slots are full, requests wait
 * here (bounded), so a slow board is never flooded. Outstanding tasks of an agent
 * that dies or restarts are handed to another agent, so each request still gets its answer.
 * Requests whose topic is bad, or whose model nobody serves, are answered here with an error.
 * Jobs (many inputs in one message) are split into shards here too (jobs.ts), in the slots that
 * single requests leave: a request waiting for a slot always goes first.
 */
import { KizunaError, type ErrorCode } from '../mesh/errors.js';
import { encodeError } from '../mesh/messages.js';
import { Roster } from '../mesh/roster.js';
import { isWarm } from '../mesh/status.js';
import { parseReplyTopic, parseRequestTopic, topics, type RequestTopic } from '../mesh/topics.js';
import type { Logger } from '../agent/log.js';
import { Jobs, type JobsOptions } from './jobs.js';
import { FairQueue } from './fair-queue.js';

/** What the dispatcher needs of a broker: in-process subscribe and publish. */
export interface BrokerPort {
  subscribe(topic: string, handler: (topic: string, payload: Buffer, retained: boolean) => void): Promise<() => Promise<void>>;
  publish(topic: string, payload: Buffer, retain: boolean): Promise<void>;
}

interface Task {
  req: RequestTopic;
  payload: Buffer;
  node: string;
  instance: string;
  /** The agent's connection number when the task was sent: a task sent while it was away is lost. */
  seq: number;
  sentAt?: number;
  /** The model was cold there when it was sent: its answer times a load too, not the board's speed. */
  cold?: boolean;
}

/** Outstanding tasks an agent takes when its status names no `slots`. */
const DEFAULT_SLOTS = 4;
/** Weight of the newest sample in the per-agent, per-model time estimate. */
const EWMA = 0.2;

export interface DispatcherStats {
  dispatched: number;
  redispatched: number;
  absorbed: number;
  /** Requests answered here with an error, by code. */
  refused: Partial<Record<ErrorCode, number>>;
}

export class Dispatcher {
  readonly roster = new Roster();
  readonly stats: DispatcherStats = { dispatched: 0, redispatched: 0, absorbed: 0, refused: {} };
  private readonly tasks = new Map<string, Task>();
  /** Which agent answered a recent id, so a retry reaches the agent that has its reply cached. */
  private readonly answeredBy = new Map<string, string>();
  private unsubscribers: (() => Promise<void>)[] = [];
  /** Requests waiting for a free slot: per client, oldest first, clients in turn. */
  private readonly waiting: FairQueue<{ client: string; id: string; model: string; req: RequestTopic; payload: Buffer }>;
  /** Measured ms per request, by agent and model; and when each agent last answered. */
  private readonly msPerInput = new Map<string, number>();
  private readonly lastAnswer = new Map<string, number>();
  private readonly now: () => number;
  readonly jobs: Jobs;
  private ticker?: NodeJS.Timeout;

  constructor(
    private readonly broker: BrokerPort,
    private readonly options: {
      mesh: string; node: string; log: Logger; memory?: number; now?: () => number;
      /** Requests waiting for a free agent, in all (default 10,000) and per client (default 1,000). */
      maxWaiting?: number; maxWaitingPerClient?: number;
      /** How often late shards and job progress are looked at (0: only when tick() is called, for tests). */
      tickMs?: number;
      jobs?: Partial<JobsOptions>;
    },
  ) {
    this.now = options.now ?? (() => performance.now());
    this.waiting = new FairQueue({ perClient: options.maxWaitingPerClient ?? 1000, total: options.maxWaiting ?? 10_000 });
    this.roster.on('change', (node: string) => this.onNodeChange(node));
    this.jobs = new Jobs(
      broker,
      {
        serving: (model) => this.roster.serving(model),
        free: (node) => (this.roster.get(node)?.slots ?? DEFAULT_SLOTS) - this.queuedAt(node),
        msPerInput: (node, model) => this.msPerInput.get(`${node}/${model}`),
        measured: (node, model, inputs, since, finished) => this.sample(node, model, inputs, since, finished),
        noAgent: (model) => this.noAgent(model),
      },
      { mesh: options.mesh, node: options.node, log: options.log, now: this.now, ...options.jobs },
    );
  }

  async start(): Promise<void> {
    const { mesh } = this.options;
    const on = async (topic: string, handler: (topic: string, payload: Buffer) => void) =>
      this.unsubscribers.push(await this.broker.subscribe(topic, (t, p) => this.guard(() => handler(t, p))));
    await on(topics.allNodeStatus(mesh), (t, p) => this.roster.accept(t, p));
    await on(topics.allReplies(mesh), (t) => this.onReply(t));
    await on(topics.allRequests(mesh), (t, p) => this.onRequest(t, p));
    await on(topics.allShardResults(mesh), (t, p) => {
      this.jobs.onShardResult(t, p);
      this.drain();
    });
    await on(topics.allJobs(mesh), (t, p) => {
      this.jobs.onJob(t, p);
      this.drain();
    });
    const tickMs = this.options.tickMs ?? 100;
    if (tickMs > 0) this.ticker = setInterval(() => this.tick(), tickMs).unref();
  }

  /** Late shards get hedged, apps hear how their jobs progress. */
  tick(): void {
    this.guard(() => {
      this.jobs.tick();
      this.drain();
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker);
    await Promise.all(this.unsubscribers.splice(0).map((u) => u()));
  }

  get outstanding(): number {
    return this.tasks.size;
  }

  /** A failing handler never takes the broker down. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.options.log.error(`dispatcher: ${(err as Error).stack ?? err}`);
    }
  }

  private onRequest(topic: string, payload: Buffer): void {
    const parsed = parseRequestTopic(topic);
    if (!parsed.ok) {
      if (parsed.replyTo) this.refuse(parsed.replyTo, parsed.error);
      else this.options.log.warn(`dropped a message with no usable reply topic: ${parsed.error.message}`);
      return;
    }
    const req = parsed.topic;
    const key = `${req.client}/${req.id}`;
    const running = this.tasks.get(key);
    if (running) {
      // A retry of a request still outstanding: send the task again (the agent absorbs it if it
      // has it, and gets it if it was lost while the agent reconnected).
      this.stats.absorbed++;
      this.assign(running);
      return;
    }
    const previous = this.answeredBy.get(key);
    // A retry goes back to the agent that answered it (its reply is cached there), unless it left.
    const before = previous ? this.roster.get(previous) : undefined;
    if (before?.online && !before.draining) return this.send({ req, payload, node: before.node, instance: before.instance, seq: before.seq });
    if (!this.roster.serving(req.model).length) return this.refuse(req, this.noAgent(req.model), req.model);
    if (this.waiting.has(req.client, req.id)) return; // already waiting
    if (!this.waiting.push({ client: req.client, id: req.id, model: req.model, req, payload })) {
      const perClient = this.options.maxWaitingPerClient ?? 1000;
      return this.refuse(req, new KizunaError('KZ_ERR_OVERLOADED', `too many requests wait for a free agent (${perClient} per client, ${this.options.maxWaiting ?? 10_000} in all); retry later with the same id`), req.model);
    }
    this.drain();
  }

  /** Hands waiting requests to agents with free slots: clients in turn, each one's oldest first. */
  private drain(): void {
    for (let guard = 0; this.waiting.size && guard < 1_000_000; guard++) {
      const picked = new Map<string, ReturnType<Dispatcher['pick']>>();
      const agentFor = (model: string) => {
        if (!picked.has(model)) picked.set(model, this.pick(model));
        return picked.get(model);
      };
      const w = this.waiting.take((model) => agentFor(model) !== undefined);
      if (!w) break; // every agent of every waiting model is full
      const agent = agentFor(w.model)!;
      this.send({ req: w.req, payload: w.payload, node: agent.node, instance: agent.instance, seq: agent.seq, cold: !isWarm(agent, w.model) });
    }
    // Slots no single request wants go to jobs.
    this.jobs.pump();
  }

  /** Waiting requests for a model nobody serves any more get their error now. */
  private refuseUnserved(): void {
    for (const w of this.waiting.removeWhere((x) => !this.roster.serving(x.model).length)) this.refuse(w.req, this.noAgent(w.model), w.model);
  }

  private send(task: Task): void {
    this.assign({ ...task, sentAt: this.now() });
    this.stats.dispatched++;
  }

  private queuedAt(node: string): number {
    let n = 0;
    for (const t of this.tasks.values()) if (t.node === node) n++;
    return n + this.jobs.copiesAt(node);
  }

  /**
   * The agent with a free slot that should answer soonest: one that has the model in memory
   * (warm) before one that must load it first (cold: placement), then (its outstanding tasks + 1)
   * times its measured time per request of this model. An agent never measured goes first among
   * its kind, once, so it gets measured. Ties: node id.
   */
  private pick(model: string) {
    let best: { status: ReturnType<Roster['serving']>[number]; cold: boolean; finish: number } | undefined;
    for (const status of this.roster.serving(model)) {
      const queued = this.queuedAt(status.node);
      if (queued >= (status.slots ?? DEFAULT_SLOTS)) continue;
      const cold = !isWarm(status, model);
      const ms = this.msPerInput.get(`${status.node}/${model}`);
      const finish = ms === undefined ? (queued === 0 ? -1 : Number.POSITIVE_INFINITY) : (queued + 1) * ms;
      const better = !best || (cold !== best.cold ? !cold : finish < best.finish || (finish === best.finish && status.node < best.status.node));
      if (better) best = { status, cold, finish };
    }
    return best?.status;
  }

  private assign(task: Task): void {
    this.tasks.set(`${task.req.client}/${task.req.id}`, task);
    this.broker.publish(topics.task(this.options.mesh, task.node, task.req), task.payload, false).catch((err: Error) => {
      this.options.log.warn(`task for ${task.node} not published: ${err.message}`);
    });
  }

  private onReply(topic: string): void {
    const r = parseReplyTopic(topic);
    if (!r) return;
    const key = `${r.client}/${r.id}`;
    const task = this.tasks.get(key);
    if (!task) return;
    this.tasks.delete(key);
    this.measure(task);
    this.answeredBy.set(key, task.node);
    const limit = this.options.memory ?? 10_000;
    while (this.answeredBy.size > limit) this.answeredBy.delete(this.answeredBy.keys().next().value!);
    this.drain();
  }

  /**
   * One more sample of an agent's time per request: from when the task was sent, or from its
   * previous answer if later (a busy agent answers back to back: the gap is its service time).
   */
  private measure(task: Task): void {
    if (task.sentAt === undefined || task.cold) return;
    this.sample(task.node, task.req.model, 1, Math.max(task.sentAt, this.lastAnswer.get(task.node) ?? 0), true);
  }

  /** `node` spent (now - since) on `inputs` inputs of `model` (still running when not `finished`: a lower bound). */
  private sample(node: string, model: string, inputs: number, since: number, finished: boolean): void {
    const now = this.now();
    if (finished) this.lastAnswer.set(node, now);
    const key = `${node}/${model}`;
    const sample = Math.max(0.01, (now - since) / Math.max(1, inputs));
    const old = this.msPerInput.get(key);
    if (!finished && old !== undefined && sample <= old) return;
    this.msPerInput.set(key, old === undefined ? sample : old + EWMA * (sample - old));
  }

  /** Measured ms per request of `model` on `node`, if any. */
  estimate(node: string, model: string): number | undefined {
    return this.msPerInput.get(`${node}/${model}`);
  }

  /**
   * An agent went offline or restarted: its unanswered tasks go to another agent. It reconnected:
   * the tasks sent while it was away are sent again.
   */
  private onNodeChange(node: string): void {
    const status = this.roster.get(node);
    this.jobs.onNodeChange(node, status);
    for (const [key, task] of this.tasks) {
      if (task.node !== node) continue;
      if (status?.online && status.instance === task.instance) {
        if (status.seq > task.seq) this.assign({ ...task, seq: status.seq });
        continue;
      }
      this.tasks.delete(key);
      const next = this.pick(task.req.model);
      if (!next) {
        // Every agent of the model is full: it waits, first in line; or nobody serves it any more.
        if (this.roster.serving(task.req.model).length) this.waiting.push({ client: task.req.client, id: task.req.id, model: task.req.model, req: task.req, payload: task.payload }, true);
        else this.refuse(task.req, this.noAgent(task.req.model), task.req.model);
        continue;
      }
      this.options.log.info(`task ${key} of ${node} handed to ${next.node}`);
      this.assign({ ...task, node: next.node, instance: next.instance, seq: next.seq, sentAt: this.now(), cold: !isWarm(next, task.req.model) });
      this.stats.redispatched++;
    }
    this.refuseUnserved();
    this.drain();
  }

  private noAgent(model: string): KizunaError {
    if (this.roster.serving(model, true).length) {
      return new KizunaError('KZ_ERR_SHUTTING_DOWN', `every agent serving ${model} is shutting down; retry with the same id`);
    }
    const models = [...new Set(this.roster.online().flatMap((s) => s.models?.map((m) => m.name) ?? []))].sort().join(', ') || 'none';
    return new KizunaError('KZ_ERR_UNKNOWN_MODEL', `no agent of mesh ${this.options.mesh} serves model ${model} (served: ${models})`);
  }

  private refuse(to: { mesh: string; client: string; id: string }, err: KizunaError, model?: string): void {
    this.stats.refused[err.code] = (this.stats.refused[err.code] ?? 0) + 1;
    const payload = encodeError(to.id, this.options.node, err, model);
    this.broker.publish(topics.reply(to.mesh, to.client, to.id), payload, false).catch(() => undefined);
  }
}
