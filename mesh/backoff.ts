/**
 * Capped exponential backoff with jitter, for every reconnection and retry in the mesh. Jitter
 * spreads the boards out: after a broker change they would otherwise all knock at once.
 */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Share of the delay that is random: 0 = none, 1 = anywhere from 0 to the full delay. */
  jitter: number;
}

/** Fast first retries (a failover is over in well under a second), capped at 5 s. */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 50, maxMs: 5000, factor: 2, jitter: 0.5 };

/** The delay before retry number `attempt` (0-based); `random` returns [0, 1). */
export function backoffDelay(attempt: number, b: Backoff, random: () => number): number {
  const base = Math.min(b.maxMs, b.initialMs * b.factor ** Math.max(0, attempt));
  return Math.round(base * (1 - b.jitter + b.jitter * random()));
}
