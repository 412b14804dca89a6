/**
 * In-memory discovery for fast tests of the election driver: every MemoryDiscovery on one
 * MemoryNetwork sees the others' adverts (and their changes) at once, with no sockets or timers.
 *
 * Like mDNS, the network keeps what it was told: a stopped discovery says goodbye (new members no
 * longer see it), a dropped one (drop(node), a SIGKILL) stays visible. Members never forget an
 * advert they saw; liveness is not discovery's business.
 */
import { EventEmitter } from 'node:events';
import type { Advert } from '../advert.js';
import type { Discovery } from './discovery.js';
import { PeerTable } from './static.js';

export class MemoryNetwork {
  private readonly members = new Set<MemoryDiscovery>();
  /** Published adverts by node/instance, including those of dropped members. */
  private readonly adverts = new Map<string, Advert>();
  private cut?: [Set<string>, Set<string>];

  /** Nodes in `a` and nodes in `b` stop seeing each other (nodes in neither see both sides). */
  partition(a: string[], b: string[]): void {
    this.cut = [new Set(a), new Set(b)];
  }

  /** Ends the partition; every member then sees what it missed, as mDNS's periodic re-query would. */
  heal(): void {
    this.cut = undefined;
    for (const m of this.members) this.deliverAllTo(m);
  }

  /** Kills `node`'s discoveries: they stop hearing and telling, but their adverts stay visible. */
  drop(node: string): void {
    for (const m of this.members) if (m.self?.node === node) this.members.delete(m);
  }

  canSee(x: string, y: string): boolean {
    if (!this.cut) return true;
    const [a, b] = this.cut;
    return !((a.has(x) && b.has(y)) || (b.has(x) && a.has(y)));
  }

  /** @internal */
  join(m: MemoryDiscovery): void {
    this.members.add(m);
  }

  /** @internal Stores `advert` and tells every member that can see its node. */
  publish(from: MemoryDiscovery, advert: Advert): void {
    if (!this.members.has(from)) return;
    // A new instance of a node replaces that node's dropped adverts, as a restarted agent's mDNS
    // records replace the ones a killed process left under the same name.
    for (const [key, a] of this.adverts) {
      if (a.node === advert.node && a.instance !== advert.instance && !this.isLive(a)) this.adverts.delete(key);
    }
    this.adverts.set(`${advert.node}/${advert.instance}`, advert);
    for (const m of this.members) if (m !== from && m.self && this.canSee(m.self.node, advert.node)) m.deliver(advert);
  }

  /** @internal A clean goodbye: new members will not see it. */
  leave(m: MemoryDiscovery): void {
    if (this.members.delete(m) && m.self) this.adverts.delete(`${m.self.node}/${m.self.instance}`);
  }

  /** @internal */
  deliverAllTo(m: MemoryDiscovery): void {
    if (!this.members.has(m) || !m.self) return;
    for (const a of this.adverts.values()) if (this.canSee(m.self.node, a.node)) m.deliver(a);
  }

  private isLive(a: Advert): boolean {
    for (const m of this.members) if (m.self?.node === a.node && m.self.instance === a.instance) return true;
    return false;
  }
}

export class MemoryDiscovery extends EventEmitter implements Discovery {
  private readonly table = new PeerTable(this);

  constructor(private readonly network: MemoryNetwork) {
    super();
  }

  get self(): Advert | undefined {
    return this.table.self;
  }

  async start(self: Advert): Promise<void> {
    this.table.self = self;
    this.network.join(this);
    this.network.publish(this, self);
    this.network.deliverAllTo(this);
  }

  async update(self: Advert): Promise<void> {
    this.table.self = self;
    this.network.publish(this, self);
  }

  refresh(): void {
    this.network.deliverAllTo(this);
  }

  peers(): ReadonlyMap<string, Advert> {
    return this.table.peers();
  }

  async stop(): Promise<void> {
    this.network.leave(this);
  }

  /**
   * @internal Delivered on a microtask, so a listener that calls update() never re-enters a delivery.
   * The endpoint is the advert's first address and port: a restart there is not a duplicate.
   */
  deliver(advert: Advert): void {
    queueMicrotask(() => {
      if (this.table.self) this.table.see(advert, `${advert.addresses[0] ?? ''}:${advert.port}`);
    });
  }
}
