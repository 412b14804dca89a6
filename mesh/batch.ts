/**
 * Batches for apps: many inputs through the mesh, each result exactly once and in input order.
 * Every input is its own request (its own id), so the dispatcher spreads the work by each board's
 * measured speed and free slots (a fast board simply comes back for more: work stealing for free),
 * a board's death or a broker failover is covered by the client's resends with the same ids, and
 * a duplicate answer is never emitted twice.
 */
import { KizunaError, asKizunaError } from './errors.js';
import type { InferInput, InferOptions, InferResult, KizunaClient } from './client.js';

export interface BatchItem {
  index: number;
  result?: InferResult;
  error?: KizunaError;
}

export interface BatchProgress {
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

export interface BatchOptions extends InferOptions {
  /** Requests in flight at once (default 32). */
  window?: number;
  /** A stable prefix for request ids: the same job sent again reuses them (default: random). */
  jobId?: string;
  onProgress?: (p: BatchProgress) => void;
}

/** Yields one item per input, in input order; a failed input yields its error and the batch goes on. */
export async function* runBatch(
  client: KizunaClient,
  model: string,
  inputs: readonly (() => Promise<InferInput> | InferInput)[],
  options: BatchOptions = {},
): AsyncGenerator<BatchItem> {
  const total = inputs.length;
  const window = Math.max(1, options.window ?? 32);
  const job = options.jobId ?? Math.random().toString(16).slice(2, 10);
  const finished = new Map<number, BatchItem>();
  const byAgent: Record<string, number> = {};
  const started = performance.now();
  let next = 0;
  let emitted = 0;
  let failed = 0;
  let wake: (() => void) | undefined;

  const progress = () => {
    const done = finished.size + emitted;
    const rate = done / Math.max(0.001, (performance.now() - started) / 1000);
    options.onProgress?.({ done, total, failed, rate, etaS: rate > 0 ? (total - done) / rate : Number.POSITIVE_INFINITY, byAgent });
  };
  const launch = () => {
    while (next < total && next - emitted < window) {
      const index = next++;
      void (async () => {
        let item: BatchItem;
        try {
          const input = await inputs[index]!();
          const result = await client.infer(model, input, { ...options, id: `${job}-${index}` });
          byAgent[result.agent] = (byAgent[result.agent] ?? 0) + 1;
          item = { index, result };
        } catch (err) {
          failed++;
          item = { index, error: err instanceof KizunaError ? err : asKizunaError(err) };
        }
        finished.set(index, item);
        progress();
        wake?.();
      })();
    }
  };

  launch();
  while (emitted < total) {
    const item = finished.get(emitted);
    if (!item) {
      await new Promise<void>((resolve) => (wake = resolve));
      continue;
    }
    finished.delete(emitted);
    emitted++;
    launch();
    yield item;
  }
}
