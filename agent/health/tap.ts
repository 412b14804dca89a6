/**
 * What a health report learns of each request without touching the worker: the worker's events
 * ('accepted' when it takes a request or a shard, 'replied' when it sends the reply) give the key
 * and the time; the task or shard topic, seen on the same bus, gives the model. The latency is
 * from acceptance to the reply being sent (the reply's timings.total_ms, about).
 *
 * The bus delivers a message to its listeners one after the other, synchronously, so the topic
 * and the worker's events for it meet in the same turn whichever listener runs first.
 */
import type { EventEmitter } from 'node:events';
import type { Bus } from '../../mesh/bus.js';
import { parseShardTopic, parseTaskTopic } from '../../mesh/topics.js';
import type { InferenceMeter } from './inference.js';

interface Pending {
  at: number;
  model?: string;
  /** 1 for a request; a shard's size. */
  inputs: number;
  shard: boolean;
}

/** Entries older than this are dropped (a shard that failed whole sends no 'replied'). */
const STALE_MS = 10 * 60_000;

export class WorkerTap {
  private readonly pending = new Map<string, Pending>();
  /** The task or shard being delivered now: its key prefix and model. */
  private current?: { key: string; model: string; inputs: number; shard: boolean };
  /** When the worker hears a message before the tap: the key it accepted, or refused, without a model yet. */
  private orphan?: { key: string; refused?: string };
  private readonly offs: (() => void)[] = [];

  constructor(
    private readonly meter: InferenceMeter,
    private readonly options: { mesh: string; node: () => string; now: () => number },
  ) {}

  /** Listens to `bus` (the worker's) and `worker`'s events until detach(). */
  attach(bus: Bus, worker: EventEmitter): void {
    this.offs.push(bus.onMessage((topic) => this.onTopic(topic)));
    const accepted = (key: string) => this.onAccepted(key);
    const replied = (key: string, code?: string) => this.onReplied(key, code);
    worker.on('accepted', accepted);
    worker.on('replied', replied);
    this.offs.push(() => worker.off('accepted', accepted), () => worker.off('replied', replied));
  }

  detach(): void {
    for (const off of this.offs.splice(0)) off();
    this.pending.clear();
  }

  /** Accepted and not replied yet (what the tap knows of). */
  get size(): number {
    return this.pending.size;
  }

  /** Drops what waited too long for a reply (called at each report). */
  sweep(): void {
    const limit = this.options.now() - STALE_MS;
    for (const [key, p] of this.pending) if (p.at < limit) this.pending.delete(key);
  }

  onTopic(topic: string): void {
    const { mesh } = this.options;
    const node = this.options.node();
    const task = parseTaskTopic(topic);
    let next: WorkerTap['current'];
    if (task) {
      if (task.mesh !== mesh || task.node !== node) return;
      next = { key: `${task.client}/${task.id}`, model: task.model, inputs: 1, shard: false };
    } else {
      const s = parseShardTopic(topic);
      if (!s || s.mesh !== mesh || s.node !== node) return;
      // The worker's shard key goes on with a digest of the payload: match on this prefix.
      next = { key: `${s.client}/${s.job}/${s.start}-${s.end}/`, model: s.model, inputs: s.end - s.start, shard: true };
    }
    this.current = next;
    // The worker heard it first: fill in what its event could not know.
    const orphan = this.orphan;
    this.orphan = undefined;
    if (!orphan || !this.matches(orphan.key, next)) return;
    const p = this.pending.get(orphan.key);
    if (p && p.model === undefined) Object.assign(p, { model: next.model, inputs: next.inputs, shard: next.shard });
    else if (orphan.refused && !next.shard) this.meter.record(next.model, { inputs: 1, error: true });
  }

  onAccepted(key: string): void {
    const c = this.current && this.matches(key, this.current) ? this.current : undefined;
    if (!c) this.orphan = { key };
    this.pending.set(key, { at: this.options.now(), inputs: c?.inputs ?? 1, shard: c?.shard ?? false, ...(c ? { model: c.model } : {}) });
  }

  onReplied(key: string, code?: string): void {
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      if (p.model === undefined) return;
      if (p.shard) this.meter.record(p.model, { inputs: p.inputs });
      else this.meter.record(p.model, { inputs: 1, latencyMs: this.options.now() - p.at, ...(code ? { error: true } : {}) });
      return;
    }
    // Refused before it was accepted (the agent drains, its queue is full): an error, no latency.
    const c = this.current;
    if (c && !c.shard && c.key === key) this.meter.record(c.model, { inputs: 1, error: true });
    else if (code) this.orphan = { key, refused: code };
  }

  private matches(key: string, c: { key: string; shard: boolean }): boolean {
    return c.shard ? key.startsWith(c.key) : key === c.key;
  }
}
