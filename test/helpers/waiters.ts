import type { EventEmitter } from 'node:events';

/**
 * Waiting for what a stream of messages shows, without sleeping: `until` checks its probe now and
 * again at every `changed()` (call it after each message), and gives up after a bound.
 */
export class Waiters {
  private readonly pending = new Set<() => void>();

  /** Call after every message: each pending probe looks again. */
  changed(): void {
    for (const w of [...this.pending]) w();
  }

  /** Resolves with the first value `probe` returns (not undefined or false), or rejects after `ms`. */
  until<T>(probe: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = probe();
        if (v === undefined || v === false) return;
        clearTimeout(timer);
        this.pending.delete(check);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.pending.delete(check);
        reject(new Error(`not seen within ${ms} ms: ${what}`));
      }, ms);
      this.pending.add(check);
      check();
    });
  }
}

/** Resolves when `check` holds: at once, or at one of `events` of `emitter`; rejects after `ms`. */
export function waitFor(emitter: EventEmitter, events: string[], check: () => boolean, ms: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const on = () => {
      if (!check()) return;
      off();
      resolve();
    };
    const timer = setTimeout(() => (off(), reject(new Error(`not within ${ms} ms: ${what}`))), ms);
    const off = () => {
      clearTimeout(timer);
      for (const e of events) emitter.off(e, on);
    };
    for (const e of events) emitter.on(e, on);
    on();
  });
}
