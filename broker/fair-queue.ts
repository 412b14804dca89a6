/**
 * Requests waiting for a free agent, one queue per client, served round-robin: a client that
 * floods the mesh waits behind its own requests, not in front of everyone else's. Each client may
 * have `perClient` requests waiting and all together `total`; beyond, push() says no (the caller
 * answers KZ_ERR_OVERLOADED). Pure bookkeeping: no I/O, no clock.
 */
export interface Waiting {
  client: string;
  id: string;
  model: string;
}

export class FairQueue<T extends Waiting> {
  private readonly queues = new Map<string, T[]>();
  private readonly keys = new Set<string>();
  /** Clients in the order they are served next. */
  private order: string[] = [];
  private count = 0;

  constructor(private readonly limits: { perClient: number; total: number }) {}

  get size(): number {
    return this.count;
  }

  has(client: string, id: string): boolean {
    return this.keys.has(`${client}/${id}`);
  }

  /** Queues `item` last (or first, for a request taken back from a dead agent); false when over a bound. */
  push(item: T, first = false): boolean {
    const q = this.queues.get(item.client);
    if (!first && ((q?.length ?? 0) >= this.limits.perClient || this.count >= this.limits.total)) return false;
    if (q) {
      if (first) q.unshift(item);
      else q.push(item);
    } else {
      this.queues.set(item.client, [item]);
      this.order.push(item.client);
    }
    this.keys.add(`${item.client}/${item.id}`);
    this.count++;
    return true;
  }

  /**
   * The next request that can be served: clients in turn, each one's oldest request whose model
   * `canServe` (up to `scan` of its requests are looked at). The client served goes to the back.
   */
  take(canServe: (model: string) => boolean, scan = 64): T | undefined {
    for (let turn = 0; turn < this.order.length; turn++) {
      const client = this.order[turn]!;
      const q = this.queues.get(client)!;
      const at = q.slice(0, scan).findIndex((item) => canServe(item.model));
      if (at < 0) continue;
      const [item] = q.splice(at, 1) as [T];
      this.forget(item);
      this.order.splice(turn, 1);
      if (q.length) this.order.push(client);
      else this.queues.delete(client);
      return item;
    }
    return undefined;
  }

  /** Removes and returns every request for which `drop` is true (a model nobody serves any more). */
  removeWhere(drop: (item: T) => boolean): T[] {
    const out: T[] = [];
    for (const [client, q] of this.queues) {
      const keep = q.filter((item) => !drop(item));
      if (keep.length === q.length) continue;
      for (const item of q) if (drop(item)) (out.push(item), this.forget(item));
      if (keep.length) this.queues.set(client, keep);
      else {
        this.queues.delete(client);
        this.order = this.order.filter((c) => c !== client);
      }
    }
    return out;
  }

  private forget(item: T): void {
    this.keys.delete(`${item.client}/${item.id}`);
    this.count--;
  }
}
