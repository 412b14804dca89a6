/**
 * One job as the app sees it: many inputs sent in one message, each result received exactly once
 * and in input order, with progress while it runs.
 *
 * The mesh streams results in order, so "what I have" is one number: the first index not yet
 * received. Whenever the app may have missed something (it reconnected after a broker failover,
 * heard nothing for a while, or sees a gap) it sends the same job again with `from` set to that
 * number; the mesh runs or resends the rest, and anything received twice is dropped here.
 */
import { KizunaError } from './errors.js';
import { decodeJobMessage, jobItem, jobPayload, type JobOptions, type JobResultItem } from './jobs.js';
import { tensorFromJson } from './codec.js';
import type { Tensor } from './tensor.js';
import type { InferenceResult } from './messages.js';

export type JobInput = Uint8Array | Uint8Array[] | Record<string, Tensor>;

export interface JobItemResult {
  index: number;
  result?: InferenceResult & { outputs: Record<string, Tensor> };
  error?: KizunaError;
}

export interface JobProgress {
  done: number;
  total: number;
  failed: number;
  /** Results per second since the start. */
  rate: number;
  /** Seconds left at that rate. */
  etaS: number;
  /** Results per agent. */
  byAgent: Record<string, number>;
}

/** What a job needs of the client: publish, and hear its messages and reconnections. */
export interface JobChannel {
  publish(topic: string, payload: Buffer): void;
  listen(id: string, on: { message(payload: Buffer): void; reconnected(): void; closed(): void }): () => void;
}

export interface JobRunOptions {
  version?: string;
  topK?: number;
  rawOutputs?: boolean;
  onProgress?: (p: JobProgress) => void;
  /** Ask again when nothing was heard for this long (the mesh reports progress every second). */
  silenceMs?: number;
  /** Give up when nothing at all was heard for this long (default 30 s). */
  timeoutMs?: number;
}

export class JobRun implements AsyncIterable<JobItemResult> {
  private next = 0;
  private readonly ready: JobItemResult[] = [];
  private wake?: () => void;
  private error?: Error;
  private finished = false;
  private lastHeard = performance.now();
  private readonly payloadFrom: (from: number) => Buffer;
  private readonly timer: NodeJS.Timeout;
  private readonly unlisten: () => void;

  constructor(
    private readonly channel: JobChannel,
    private readonly topic: string,
    readonly id: string,
    inputs: readonly JobInput[],
    private readonly options: JobRunOptions = {},
  ) {
    const wire: JobOptions = {
      ...(options.version !== undefined ? { version: options.version } : {}),
      ...(options.topK !== undefined ? { top_k: options.topK } : {}),
      ...(options.rawOutputs !== undefined ? { raw_outputs: options.rawOutputs } : {}),
    };
    this.total = inputs.length;
    this.payloadFrom = jobPayload(inputs.map(jobItem), wire);
    this.unlisten = channel.listen(id, {
      message: (p) => this.onMessage(p),
      reconnected: () => this.send(),
      closed: () => this.fail(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'client closed')),
    });
    const silenceMs = options.silenceMs ?? 3000;
    const timeoutMs = options.timeoutMs ?? 30_000;
    this.timer = setInterval(() => {
      const quiet = performance.now() - this.lastHeard;
      if (quiet >= timeoutMs) this.fail(new KizunaError('KZ_ERR_TIMEOUT', `no word of job ${id} for ${timeoutMs} ms`));
      else if (quiet >= silenceMs) this.send();
    }, Math.max(50, silenceMs / 2));
    if (this.total === 0) this.end();
    else this.send();
  }

  readonly total: number;

  private send(): void {
    if (this.finished) return;
    this.channel.publish(this.topic, this.payloadFrom(this.next));
  }

  private onMessage(payload: Buffer): void {
    if (this.finished) return;
    let msg: ReturnType<typeof decodeJobMessage>;
    try {
      msg = decodeJobMessage(payload);
    } catch {
      return; // not a job message: nothing the mesh sends, so nothing to act on
    }
    // Being told to wait is not progress: the timeout still counts from the last real word.
    if (msg.ok) this.lastHeard = performance.now();
    // A busy or stopping mesh: ask again later (the silence timer does), until the timeout.
    if (!msg.ok && (msg.error.code === 'KZ_ERR_OVERLOADED' || msg.error.code === 'KZ_ERR_SHUTTING_DOWN')) return;
    if (!msg.ok) return this.fail(new KizunaError(msg.error.code, msg.error.message));
    const p = msg.progress;
    this.options.onProgress?.({ done: p.done, total: p.total, failed: p.failed, rate: p.rate, etaS: p.eta_s, byAgent: p.by_agent });
    // A gap: results between what we have and this message were lost on the way. Ask again.
    if (msg.from > this.next) return this.send();
    for (const r of msg.results) {
      if (r.index !== this.next) continue; // a duplicate of something we have
      this.ready.push(toItem(this.id, r));
      this.next++;
    }
    if (this.next >= this.total) this.end();
    this.wake?.();
  }

  private end(): void {
    this.finished = true;
    clearInterval(this.timer);
    this.unlisten();
    this.wake?.();
  }

  private fail(err: Error): void {
    this.error = err;
    this.end();
  }

  /** Stops listening; results not yet received are abandoned. */
  cancel(): void {
    if (!this.finished) this.end();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<JobItemResult> {
    try {
      for (;;) {
        const item = this.ready.shift();
        if (item) {
          yield item;
          continue;
        }
        if (this.error) throw this.error;
        if (this.finished) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      this.cancel();
    }
  }
}

function toItem(job: string, r: JobResultItem): JobItemResult {
  if (!r.ok) return { index: r.index, error: new KizunaError(r.error.code, r.error.message) };
  // fromEntries, not assignment: an output named "__proto__" stays an output.
  const outputs: Record<string, Tensor> = Object.fromEntries(Object.entries(r.outputs ?? {}).map(([name, t]) => [name, tensorFromJson(name, t, Number.MAX_SAFE_INTEGER)]));
  const result = {
    id: `${job}:${r.index}`,
    model: r.model,
    version: r.version,
    agent: r.agent,
    outputs,
    ...(r.answers ? { answers: r.answers } : {}),
    timings: r.timings,
  };
  return { index: r.index, result };
}
