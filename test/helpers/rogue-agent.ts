/**
 * A rogue board for tests: a bare mqtt.js client (not a Kizuna agent) that joins a mesh by
 * publishing a retained online status for itself, advertising a real agent's model summary (copied
 * from that agent's retained status), and answers every shard given to it with garbage of one
 * kind. It never serves single requests (it does not read its task topic): use it only while no
 * single request is sent. stop() clears its retained status.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import type { ModelSummary, NodeStatus } from '../../mesh/status.js';
import { parseShardTopic, topics } from '../../mesh/topics.js';

/** What the rogue answers to a shard of `count` inputs. */
export const GARBAGE = {
  /** Scores that are NaN (JSON turns them into null). */
  'nan-scores': (count: number) => results(count, () => item({ answers: [{ label: '3', index: 3, score: Number.NaN }] })),
  /** Raw logits full of NaN, with plausible answers beside them. */
  'nan-logits': (count: number) => results(count, () => item({ outputs: { logits: floats([1, 10], Number.NaN) } })),
  /** One result fewer than the inputs, each plausible. */
  'wrong-count': (count: number) => results(count - 1, () => item({})),
  /** Logits of 9 classes where the model gives 10. */
  'wrong-shape': (count: number) => results(count, () => item({ outputs: { logits: floats([1, 9], 0.1) } })),
  /** Results of another model. */
  'wrong-model': (count: number) => results(count, () => ({ ...item({}), model: 'digits-int8' })),
  /** Not JSON at all. */
  'not-json': () => Buffer.from('{"v":1,"agent":"rogue","results":[NaN'),
  /**
   * Well-formed errors with a retryable code for every input, as a board whose inference always
   * fails would send: nothing in them is implausible, so only running the inputs elsewhere helps.
   */
  'always-failing': (count: number) =>
    results(count, () => ({ ok: false, error: { code: 'KZ_ERR_INFERENCE', message: 'rogue: inference failed' } })),
} satisfies Record<string, (count: number) => Buffer | unknown[]>;

export type Garbage = keyof typeof GARBAGE;

function item(extra: Record<string, unknown>): Record<string, unknown> {
  const top = [{ label: '3', index: 3, score: 0.9 }];
  return {
    ok: true, model: 'digits', version: '1.0.0', answers: [{ label: '3', index: 3, score: 0.9, top }],
    timings: { queue_ms: 0, pre_ms: 0, infer_ms: 0, post_ms: 0, total_ms: 0 }, ...extra,
  };
}

function floats(shape: number[], value: number): { dtype: 'float32'; shape: number[]; b64: string } {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value);
  return { dtype: 'float32', shape, b64: Buffer.from(data.buffer).toString('base64') };
}

function results(count: number, make: () => unknown): unknown[] {
  return Array.from({ length: Math.max(0, count) }, make);
}

export interface RogueOptions {
  url: string;
  mesh: string;
  node: string;
  model: string;
  garbage: Garbage;
  timeoutMs?: number;
}

export class RogueAgent {
  /** The shards given to it, in arrival order. */
  readonly shards: { start: number; end: number; job: string }[] = [];
  private waiters: (() => boolean)[] = [];

  private constructor(
    private readonly mqttClient: MqttClient,
    private readonly o: RogueOptions,
  ) {}

  /** Connects, copies a real agent's summary of `model`, publishes its own status and serves shards. */
  static async start(o: RogueOptions): Promise<RogueAgent> {
    const statusTopic = topics.nodeStatus(o.mesh, o.node);
    const client = await mqtt.connectAsync(o.url, { protocolVersion: 4, clientId: `rogue-${o.node}`, keepalive: 5, reconnectPeriod: 0, clean: true });
    try {
      const summary = await realSummary(client, o);
      const status: NodeStatus = {
        v: 1, node: o.node, instance: randomBytes(8).toString('hex'), started: Date.now(), seq: 1, online: true,
        // Never eligible: an election must not walk to a board that has no port.
        role: 'agent', term: 0, eligible: false, slots: 4, models: [summary],
      };
      const rogue = new RogueAgent(client, o);
      client.on('message', (topic) => rogue.onMessage(topic));
      await client.subscribeAsync(topics.shardsFor(o.mesh, o.node), { qos: 1 });
      await client.publishAsync(statusTopic, JSON.stringify(status), { qos: 1, retain: true });
      return rogue;
    } catch (err) {
      await client.endAsync(true).catch(() => undefined);
      throw err;
    }
  }

  get node(): string {
    return this.o.node;
  }

  /** Resolves once it has been given `n` shards, or rejects after `ms`. */
  shardsGiven(n: number, ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.shards.length < n) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      const timer = setTimeout(() => reject(new Error(`rogue ${this.o.node} got ${this.shards.length} shards in ${ms} ms, not ${n}`)), ms);
      if (!check()) this.waiters.push(check);
    });
  }

  private onMessage(topic: string): void {
    const ref = parseShardTopic(topic);
    if (!ref || ref.node !== this.o.node) return;
    this.shards.push({ start: ref.start, end: ref.end, job: ref.job });
    this.waiters = this.waiters.filter((w) => !w());
    const made = GARBAGE[this.o.garbage](ref.end - ref.start);
    const body = Buffer.isBuffer(made) ? made : Buffer.from(JSON.stringify({ v: 1, agent: this.o.node, results: made }));
    this.mqttClient.publish(topics.shardResult(this.o.mesh, ref), body, { qos: 1 });
  }

  /** Clears its retained status (the mesh forgets it) and disconnects. */
  async stop(): Promise<void> {
    await this.mqttClient.publishAsync(topics.nodeStatus(this.o.mesh, this.o.node), Buffer.alloc(0), { qos: 1, retain: true }).catch(() => undefined);
    await this.mqttClient.endAsync().catch(() => undefined);
  }
}

/** The summary of `model` in the first online real agent's retained status. */
async function realSummary(client: MqttClient, o: RogueOptions): Promise<ModelSummary> {
  const filter = topics.allNodeStatus(o.mesh);
  return new Promise<ModelSummary>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no online agent of mesh ${o.mesh} advertises ${o.model}`)), o.timeoutMs ?? 5000);
    const onMessage = (topic: string, payload: Buffer) => {
      if (!topic.startsWith(filter.slice(0, -'+/status'.length)) || payload.length === 0) return;
      try {
        const s = JSON.parse(payload.toString('utf8')) as NodeStatus;
        const m = s.online && s.node !== o.node ? s.models?.find((x) => x.name === o.model) : undefined;
        if (m) done(undefined, m);
      } catch {
        // not a status
      }
    };
    const done = (err?: Error, summary?: ModelSummary) => {
      clearTimeout(timer);
      client.off('message', onMessage);
      void client.unsubscribeAsync(filter).catch(() => undefined);
      if (err) reject(err);
      else resolve(summary!);
    };
    client.on('message', onMessage);
    client.subscribeAsync(filter, { qos: 1 }).catch((err: Error) => done(err));
  });
}
