/**
 * The inference figures of a health report: per model, what was answered in each period (count,
 * rate, latency percentiles, errors) and since the start; node-wide, the worker's own counters
 * turned into per-period figures. Pure bookkeeping: the caller feeds it what it observed and the
 * period's length, so a test drives it with numbers and no clock.
 */
import type { ModelHealth } from '../../mesh/health.js';
import { percentile } from '../stats.js';

/** Latencies kept per model and period: beyond this the percentiles cover the latest ones. */
export const LATENCY_SAMPLES = 4096;

/** Answers per second over `periodS` seconds, 3 decimals (0 for an empty period). */
export function ratePerSecond(count: number, periodS: number): number {
  return periodS > 0 ? Math.round((count / periodS) * 1000) / 1000 : 0;
}

/** p50 and p95 (nearest rank) of the samples, 3 decimals; null for none. */
export function latencyPercentiles(samples: ArrayLike<number>, n = samples.length): { p50_ms: number | null; p95_ms: number | null } {
  if (n === 0) return { p50_ms: null, p95_ms: null };
  const sorted = Array.from({ length: n }, (_, i) => samples[i]!).sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { p50_ms: r(percentile(sorted, 50)), p95_ms: r(percentile(sorted, 95)) };
}

/** A model's figures in the current period. */
class ModelWindow {
  requests = 0;
  errors = 0;
  /** The latest latencies: grows to LATENCY_SAMPLES, then a ring (a quiet model allocates nothing). */
  private readonly ring: number[] = [];
  private count = 0;

  addLatency(ms: number): void {
    if (this.ring.length < LATENCY_SAMPLES) this.ring.push(ms);
    else this.ring[this.count % LATENCY_SAMPLES] = ms;
    this.count++;
  }

  percentiles(): { p50_ms: number | null; p95_ms: number | null } {
    return latencyPercentiles(this.ring, Math.min(this.count, LATENCY_SAMPLES));
  }
}

/**
 * Upper bounds (ms) of the cumulative latency histogram kept per model since the start, for the
 * Prometheus endpoint (agent/metrics.ts); one more bucket holds the rest (+Inf).
 */
export const LATENCY_BUCKETS_MS: readonly number[] = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];

/** A model's figures since the start. */
export interface ModelTotals {
  requests: number;
  errors: number;
  /** Latencies of single requests: how many, their sum, and how many fell in each bucket of LATENCY_BUCKETS_MS (+Inf last). */
  latency: { count: number; sumMs: number; buckets: number[] };
}

export interface Answered {
  /** Inputs answered: 1 for a request, the shard's size for a part of a job. */
  inputs: number;
  /** From acceptance to reply, for single requests only. */
  latencyMs?: number;
  /** The reply was an error (single requests). */
  error?: boolean;
}

export class InferenceMeter {
  private window = new Map<string, ModelWindow>();
  private readonly totals = new Map<string, ModelTotals>();

  record(model: string, a: Answered): void {
    let w = this.window.get(model);
    if (!w) this.window.set(model, (w = new ModelWindow()));
    let t = this.totals.get(model);
    if (!t) this.totals.set(model, (t = { requests: 0, errors: 0, latency: { count: 0, sumMs: 0, buckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0) } }));
    w.requests += a.inputs;
    t.requests += a.inputs;
    if (a.error) {
      w.errors++;
      t.errors++;
    }
    if (a.latencyMs !== undefined && Number.isFinite(a.latencyMs)) {
      const ms = Math.max(0, a.latencyMs);
      w.addLatency(ms);
      t.latency.count++;
      t.latency.sumMs += ms;
      let i = 0;
      while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]!) i++;
      t.latency.buckets[i]!++;
    }
  }

  /** Each model's figures since the start (copies), by name. */
  totalsByModel(): Map<string, ModelTotals> {
    return new Map([...this.totals].map(([name, t]) => [name, { ...t, latency: { ...t.latency, buckets: [...t.latency.buckets] } }]));
  }

  /**
   * The figures of the period that ends now, per model (the `loaded` ones, and any other that had
   * traffic in the period), sorted by name; then a new period starts.
   */
  take(periodS: number, loaded: readonly string[]): ModelHealth[] {
    const names = new Set([...loaded, ...this.window.keys()]);
    const out = [...names].sort().map((name): ModelHealth => {
      const w = this.window.get(name);
      const t = this.totals.get(name) ?? { requests: 0, errors: 0 };
      const requests = w?.requests ?? 0;
      return {
        name,
        requests,
        rate_per_s: ratePerSecond(requests, periodS),
        ...(w ? w.percentiles() : { p50_ms: null, p95_ms: null }),
        errors: w?.errors ?? 0,
        total_requests: t.requests,
        total_errors: t.errors,
      };
    });
    this.window = new Map();
    return out;
  }
}

/** The worker's cumulative counters (agent/worker.ts WorkerStats) that a report reads. */
export interface WorkerCounters {
  answered: number;
  errors: Partial<Record<string, number>>;
}

/** A copy of the counters, to diff against later. */
export function snapshotCounters(c: WorkerCounters): WorkerCounters {
  return { answered: c.answered, errors: { ...c.errors } };
}

/**
 * Node-wide figures between two readings of the worker's counters: answers (results plus errors)
 * and errors by code, in the period and in total.
 */
export function periodTotals(prev: WorkerCounters, next: WorkerCounters, periodS: number) {
  const errors_by_code: Record<string, number> = {};
  const total_errors_by_code: Record<string, number> = {};
  let errors = 0;
  let totalErrors = 0;
  for (const [code, n = 0] of Object.entries(next.errors)) {
    if (n > 0) total_errors_by_code[code] = n;
    totalErrors += n;
    const d = n - (prev.errors[code] ?? 0);
    if (d > 0) {
      errors_by_code[code] = d;
      errors += d;
    }
  }
  const requests = Math.max(0, next.answered - prev.answered) + errors;
  return {
    requests,
    rate_per_s: ratePerSecond(requests, periodS),
    errors,
    errors_by_code,
    total_requests: next.answered + totalErrors,
    total_errors: totalErrors,
    total_errors_by_code,
  };
}
