/**
 * The worker: takes requests from the mesh's request topics, runs them and publishes exactly one
 * reply per request id (a retry of an answered id gets the cached reply; a retry of an id still
 * running is absorbed by the reply on its way). Bad input gets an error reply with its code and
 * never stops the worker.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { KizunaError, asKizunaError, type ErrorCode } from '../mesh/errors.js';
import { decodeRequest, decodeRequestObject, encodeError, encodeResult, type DecodedRequest } from '../mesh/messages.js';
import { tensorToJson } from '../mesh/codec.js';
import { decodeShard, encodeShardResult, RETRYABLE, type ItemResult } from '../mesh/jobs.js';
import { parseShardTopic, parseTaskTopic, topics, type RequestTopic, type ShardRef } from '../mesh/topics.js';
import type { Bus } from '../mesh/bus.js';
import type { ModelLease, ModelStore } from '../models/store.js';
import { answer, infer, prepare } from '../models/pipeline.js';
import type { Logger } from './log.js';
import { ReplyCache } from './reply-cache.js';
import { Semaphore } from './semaphore.js';

export interface WorkerOptions {
  mesh: string;
  node: string;
  concurrency: number;
  maxQueue: number;
  maxPayloadBytes: number;
  maxElements: number;
  maxImagePixels: number;
  maxBatch: number;
  replyCacheSize: number;
  replyCacheTtlMs: number;
  replyCacheBytes?: number;
  now?: () => number;
}

export interface WorkerStats {
  received: number;
  answered: number;
  errors: Partial<Record<ErrorCode, number>>;
  duplicates: number;
  /** Parts of jobs run here (their inputs count in received/answered too). */
  shards: number;
}

/** Errors a retry with the same id may not meet again, so their replies are not cached. */
const TRANSIENT: ReadonlySet<ErrorCode> = new Set(['KZ_ERR_OVERLOADED', 'KZ_ERR_SHUTTING_DOWN', 'KZ_ERR_INFERENCE', 'KZ_ERR_INTERNAL']);

/** Events: 'accepted' (key) when a request is taken, 'replied' (key, errorCode?) when its reply is sent. */
export class Worker extends EventEmitter {
  readonly stats: WorkerStats = { received: 0, answered: 0, errors: {}, duplicates: 0, shards: 0 };
  private readonly cache: ReplyCache;
  private readonly running = new Set<string>();
  private readonly inferSlots: Semaphore;
  /** Pre-processing of the next requests overlaps the inference of the current ones. */
  private readonly prepareSlots: Semaphore;
  private readonly publishes = new Set<Promise<void>>();
  /** Replies published but not yet acknowledged by the broker, by request key. */
  private readonly sending = new Set<string>();
  private draining = false;
  private idle?: () => void;
  private unlisten?: () => void;
  private readonly now: () => number;

  constructor(
    private readonly bus: Bus,
    private readonly store: ModelStore,
    private readonly options: WorkerOptions,
    private readonly log: Logger,
  ) {
    super();
    this.now = options.now ?? (() => performance.now());
    this.cache = new ReplyCache(options.replyCacheSize, options.replyCacheTtlMs, Date.now, options.replyCacheBytes);
    this.inferSlots = new Semaphore(options.concurrency);
    this.prepareSlots = new Semaphore(options.concurrency + 1);
  }

  async start(): Promise<void> {
    this.unlisten = this.bus.onMessage((topic, payload, retained) => {
      const req = parseTaskTopic(topic);
      const shard = req ? undefined : parseShardTopic(topic);
      const target = req ?? shard;
      if (!target || target.mesh !== this.options.mesh || target.node !== this.options.node) return;
      // A retained task would run again at every (re)subscription: serve tasks live only.
      if (retained) this.log.warn(`ignored a retained task on ${topic}`);
      else if (req) this.onTask(req, payload);
      else this.onShard(shard!, payload);
    });
    await this.bus.subscribe(this.taskTopic, 1);
    await this.bus.subscribe(this.shardTopic, 1);
  }

  private get shardTopic(): string {
    return topics.shardsFor(this.options.mesh, this.options.node);
  }

  /** The dispatcher hands this agent its requests on its own task topic. */
  private get taskTopic(): string {
    return topics.tasksFor(this.options.mesh, this.options.node);
  }

  /**
   * Stops taking requests and answers every accepted one. Requests that arrive meanwhile get
   * KZ_ERR_SHUTTING_DOWN (retry with the same id elsewhere) instead of vanishing.
   */
  async stop(): Promise<void> {
    this.draining = true;
    if (this.running.size) await new Promise<void>((resolve) => (this.idle = resolve));
    await Promise.allSettled([...this.publishes]);
    await this.bus.unsubscribe(this.taskTopic).catch(() => undefined);
    await this.bus.unsubscribe(this.shardTopic).catch(() => undefined);
    this.unlisten?.();
  }

  get inFlight(): number {
    return this.running.size;
  }

  private onTask(req: RequestTopic, payload: Buffer): void {
    this.stats.received++;
    const key = `${req.client}/${req.id}`;
    const cached = this.cache.get(key);
    if (cached || this.running.has(key)) {
      this.stats.duplicates++;
      // A reply still on its way (queued while the agent reconnects) answers the retry too.
      if (cached && !this.sending.has(key)) this.send(key, cached.topic, cached.payload);
      return;
    }
    if (this.draining) return this.fail(req, new KizunaError('KZ_ERR_SHUTTING_DOWN', 'agent is shutting down'));
    if (this.running.size >= this.options.maxQueue) {
      return this.fail(req, new KizunaError('KZ_ERR_OVERLOADED', `${this.running.size} requests are queued here; retry with the same id`));
    }
    this.running.add(key);
    this.emit('accepted', key);
    const receivedAt = this.now();
    this.handle(req, payload, receivedAt)
      .catch((err) => this.fail(req, asKizunaError(err)))
      .finally(() => {
        this.running.delete(key);
        if (this.running.size === 0) this.idle?.();
      });
  }

  private async handle(req: RequestTopic, payload: Buffer, receivedAt: number): Promise<void> {
    const decoded = decodeRequest(payload, this.options);
    const { model, outputs, answers, timings } = await this.execute(req.model, () => decoded, receivedAt);
    const result = {
      id: req.id,
      model: model.manifest.name,
      version: model.manifest.version,
      agent: this.options.node,
      ...(decoded.options.rawOutputs ? { outputs } : {}),
      ...(answers ? { answers } : {}),
      timings,
    };
    this.stats.answered++;
    this.reply(req, req.id, encodeResult(result, decoded.options.reply));
  }

  /**
   * One inference, timed step by step. `decode` runs once a prepare slot is free, so the inputs
   * of a big shard are not all decoded into memory at once.
   */
  private async execute(modelName: string, decode: () => DecodedRequest, receivedAt: number) {
    // The prepare slot is held until the inference ends: it bounds how many prepared inputs wait in memory.
    const run = await this.prepareSlots.run(async () => {
      const decoded = decode();
      // The lease keeps the model's session in memory until its inference ends; a cold model loads here.
      const lease = await this.modelFor(modelName, decoded.options.version);
      try {
        const started = this.now();
        const { model } = lease;
        const prepared = await prepare(model, decoded.body, this.options);
        const preparedAt = this.now();
        return await this.inferSlots.run(async () => {
          const inferStart = this.now();
          const outputs = await infer(model, prepared);
          return { decoded, model, sources: prepared.sources, started, preparedAt, inferStart, inferEnd: this.now(), outputs, loadMs: lease.loadMs };
        });
      } finally {
        lease.release();
      }
    });
    const answers = answer(run.model, run.outputs, { topK: run.decoded.options.topK, sources: run.sources });
    const done = this.now();
    const timings = {
      queue_ms: round(run.started - receivedAt + (run.inferStart - run.preparedAt)),
      pre_ms: round(run.preparedAt - run.started),
      infer_ms: round(run.inferEnd - run.inferStart),
      post_ms: round(done - run.inferEnd),
      total_ms: round(done - receivedAt),
      // Part of queue_ms: this request waited for its model to be loaded.
      ...(run.loadMs !== undefined ? { load_ms: round(run.loadMs) } : {}),
    };
    return { model: run.model, decoded: run.decoded, outputs: run.outputs, answers, timings };
  }

  /**
   * A part of a job: each item is a request of its own (its own errors), and the results go back
   * together to the dispatcher, which checks them and streams them to the app in order.
   */
  private onShard(ref: ShardRef & { mesh: string }, payload: Buffer): void {
    // The same shard sent again is absorbed; another job that reuses an id and a range (after the
    // first finished) has other inputs, hence another key.
    const digest = createHash('sha1').update(payload).digest('base64url').slice(0, 12);
    const key = `${ref.client}/${ref.job}/${ref.start}-${ref.end}/${digest}`;
    const topic = topics.shardResult(this.options.mesh, ref);
    const cached = this.cache.get(key);
    if (cached || this.running.has(key)) {
      this.stats.duplicates++;
      if (cached && !this.sending.has(key)) this.send(key, cached.topic, cached.payload);
      return;
    }
    const count = ref.end - ref.start;
    const failAll = (err: KizunaError) => {
      this.stats.errors[err.code] = (this.stats.errors[err.code] ?? 0) + count;
      this.send(key, topic, encodeShardResult(this.options.node, Array.from({ length: count }, () => itemError(err))));
    };
    if (this.draining) return failAll(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'agent is shutting down'));
    if (this.running.size >= this.options.maxQueue) return failAll(new KizunaError('KZ_ERR_OVERLOADED', `${this.running.size} requests are queued here`));
    this.stats.shards++;
    this.stats.received += count;
    this.running.add(key);
    this.emit('accepted', key);
    this.runShard(ref, payload, count)
      .then((results) => {
        const body = encodeShardResult(this.options.node, results);
        // A shard whose every input must be run again is not worth remembering.
        if (!results.every((r) => !r.ok && RETRYABLE.has(r.error.code))) this.cache.set(key, { topic, payload: body });
        this.send(key, topic, body);
        this.emit('replied', key);
      })
      .catch((err) => failAll(asKizunaError(err)))
      .finally(() => {
        this.running.delete(key);
        if (this.running.size === 0) this.idle?.();
      });
  }

  private async runShard(ref: ShardRef, payload: Buffer, count: number): Promise<ItemResult[]> {
    const receivedAt = this.now();
    const items = decodeShard(payload, this.options);
    if (items.length !== count) throw new KizunaError('KZ_ERR_BAD_REQUEST', `shard ${ref.start}-${ref.end} holds ${items.length} inputs`);
    return Promise.all(
      items.map(async (item): Promise<ItemResult> => {
        try {
          const r = await this.execute(ref.model, () => decodeRequestObject(item, this.options), receivedAt);
          this.stats.answered++;
          return {
            ok: true,
            model: r.model.manifest.name,
            version: r.model.manifest.version,
            ...(r.decoded.options.rawOutputs ? { outputs: Object.fromEntries(Object.entries(r.outputs).map(([n, t]) => [n, tensorToJson(t)])) } : {}),
            ...(r.answers ? { answers: r.answers } : {}),
            timings: r.timings,
          };
        } catch (err) {
          const e = asKizunaError(err);
          if (e.code === 'KZ_ERR_INTERNAL') this.log.error(`shard ${ref.client}/${ref.job}: ${e.stack ?? e.message}`);
          this.stats.errors[e.code] = (this.stats.errors[e.code] ?? 0) + 1;
          return itemError(e);
        }
      }),
    );
  }

  /** A lease on the model (loaded first when it is cold), or KZ_ERR_UNKNOWN_MODEL. */
  private async modelFor(name: string, version: string | undefined): Promise<ModelLease> {
    const lease = await this.store.acquire(name, version);
    if (lease) return lease;
    const loaded = this.store.list().map((m) => `${m.manifest.name}@${m.manifest.version}`).join(', ') || 'none';
    throw new KizunaError('KZ_ERR_UNKNOWN_MODEL', `no model ${version ? `${name}@${version}` : name} here (loaded: ${loaded})`);
  }

  private fail(req: Pick<RequestTopic, 'mesh' | 'client' | 'id'> & { model?: string }, err: KizunaError): void {
    if (err.code === 'KZ_ERR_INTERNAL') this.log.error(`request ${req.client}/${req.id}: ${err.stack ?? err.message}`);
    this.reply(req, req.id, encodeError(req.id, this.options.node, err, req.model), err.code);
  }

  private reply(to: { mesh: string; client: string; id: string }, id: string, payload: Buffer, errorCode?: ErrorCode): void {
    if (errorCode) this.stats.errors[errorCode] = (this.stats.errors[errorCode] ?? 0) + 1;
    const topic = topics.reply(to.mesh, to.client, id);
    const key = `${to.client}/${id}`;
    if (!errorCode || !TRANSIENT.has(errorCode)) this.cache.set(key, { topic, payload });
    this.send(key, topic, payload);
    this.emit('replied', key, errorCode);
  }

  private send(key: string, topic: string, payload: Buffer): void {
    this.sending.add(key);
    const p = this.bus
      .publish(topic, payload, { qos: 1 })
      .catch((err) => this.log.warn(`reply on ${topic} not sent: ${(err as Error).message}`))
      .finally(() => {
        this.publishes.delete(p);
        this.sending.delete(key);
      });
    this.publishes.add(p);
  }
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;
const itemError = (err: KizunaError): ItemResult => ({ ok: false, error: { code: err.code, message: err.message } });
