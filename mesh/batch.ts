/**
 * Batches for apps: any number of inputs, loaded lazily, sent as consecutive jobs of up to
 * `jobSize` inputs and `jobBytes` bytes (the next job is sent while the current one runs, so the boards never wait between
 * jobs, and at most two jobs' inputs are in memory). Each job is split across the mesh by the
 * dispatcher; each result comes back exactly once, in input order. An input that cannot be loaded
 * yields its error and the batch goes on.
 */
import { KizunaError, asKizunaError } from './errors.js';
import type { KizunaClient } from './client.js';
import type { JobInput, JobItemResult, JobProgress, JobRun, JobRunOptions } from './job-client.js';

export type BatchItem = JobItemResult;
export type BatchProgress = JobProgress;

export interface BatchOptions extends Omit<JobRunOptions, 'onProgress'> {
  /** Inputs per job (default 1024). */
  jobSize?: number;
  /** About this many bytes per job at most (default 16 MiB; the mesh refuses jobs over 32 MiB). */
  jobBytes?: number;
  /** A stable prefix for job ids: the same batch sent again reuses them (default: random). */
  jobId?: string;
  onProgress?: (p: BatchProgress) => void;
}

const FIRST_JOB = 128;

interface Started {
  k: number;
  run: JobRun;
  offset: number;
  /** The first input of the next job. */
  end: number;
  /** Input positions sent in this job (inputs that failed to load are not sent). */
  sent: number[];
  failedToLoad: BatchItem[];
}

export async function* runBatch(
  client: KizunaClient,
  model: string,
  inputs: readonly (() => Promise<JobInput> | JobInput)[],
  options: BatchOptions = {},
): AsyncGenerator<BatchItem> {
  const total = inputs.length;
  const size = Math.max(1, Math.floor(options.jobSize ?? 1024));
  const prefix = options.jobId ?? Math.random().toString(16).slice(2, 10);
  const started = performance.now();
  const byAgent: Record<string, number> = {};
  let done = 0;
  let failed = 0;
  /** The latest progress of the jobs running (two overlap). */
  const running = new Map<number, JobProgress>();

  const report = () => {
    let d = done, f = failed;
    const agents = { ...byAgent };
    for (const p of running.values()) {
      d += p.done;
      f += p.failed;
      for (const [a, n] of Object.entries(p.byAgent)) agents[a] = (agents[a] ?? 0) + n;
    }
    const rate = d / Math.max(0.001, (performance.now() - started) / 1000);
    options.onProgress?.({ done: d, total, failed: f, rate, etaS: rate > 0 ? (total - d) / rate : Number.POSITIVE_INFINITY, byAgent: agents });
  };

  const maxBytes = Math.max(1, options.jobBytes ?? 16 << 20);
  const start = async (k: number, offset: number): Promise<Started> => {
    const sent: number[] = [];
    const values: JobInput[] = [];
    const failedToLoad: BatchItem[] = [];
    let bytes = 0;
    let end = offset;
    // Load a few at a time until the job is full by count or by bytes.
    // The first jobs are small so the boards start at once; later ones grow to `size`.
    const count = Math.min(size, FIRST_JOB << k);
    while (end < total && end - offset < count && bytes < maxBytes) {
      const from = end;
      const chunk = inputs.slice(from, Math.min(total, from + 16, offset + count));
      const loaded = await Promise.allSettled(chunk.map(async (f) => f()));
      loaded.forEach((r, i) => {
        if (bytes >= maxBytes) return;
        end = from + i + 1;
        if (r.status === 'fulfilled') {
          sent.push(from + i);
          values.push(r.value);
          bytes += wireBytes(r.value);
        } else failedToLoad.push({ index: from + i, error: r.reason instanceof KizunaError ? r.reason : asKizunaError(r.reason) });
      });
    }
    const { jobSize: _s, jobBytes: _b, jobId: _j, onProgress: _p, ...rest } = options;
    const run = client.job(model, values, { ...rest, id: `${prefix}-${k}`, onProgress: (p) => (running.set(k, p), report()) });
    return { k, run, offset, end, sent, failedToLoad };
  };

  let next: Promise<Started> | undefined = total > 0 ? start(0, 0) : undefined;
  for (let k = 0; next; k++) {
    const job = await next;
    next = job.end < total ? start(k + 1, job.end) : undefined;
    try {
      // Results of sent inputs and errors of unloadable ones, merged back into input order.
      const failures = [...job.failedToLoad];
      const flushFailures = function* (upTo: number) {
        while (failures.length && failures[0]!.index < upTo) yield failures.shift()!;
      };
      for await (const item of job.run) {
        const index = job.sent[item.index]!;
        yield* flushFailures(index);
        yield { ...item, index };
      }
      yield* flushFailures(Number.POSITIVE_INFINITY);
    } finally {
      const p = running.get(job.k);
      running.delete(job.k);
      if (p) {
        done += p.done;
        failed += p.failed;
        for (const [a, n] of Object.entries(p.byAgent)) byAgent[a] = (byAgent[a] ?? 0) + n;
      }
      done += job.failedToLoad.length;
      failed += job.failedToLoad.length;
      report();
    }
  }
}

/** About how many bytes an input takes in a job (base64 of its bytes). */
function wireBytes(input: JobInput): number {
  if (input instanceof Uint8Array) return Math.ceil(input.byteLength / 3) * 4;
  if (Array.isArray(input)) return input.reduce((n, i) => n + wireBytes(i), 0);
  return Object.values(input).reduce((n, t) => n + Math.ceil(t.data.byteLength / 3) * 4 + 64, 0);
}
