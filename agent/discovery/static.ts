/**
 * Static discovery, for networks without multicast (VPNs, docker bridges, several subnets): a
 * configured list of host:port is probed with hellos (hello.ts) at start, every interval and on
 * refresh(). It advertises nothing itself: the agent's mesh listener answers other agents' hellos.
 *
 * PeerTable, also used by the mDNS and in-memory discoveries, holds the one rule for which adverts
 * count and when 'peer' and 'duplicate' are emitted.
 */
import { EventEmitter } from 'node:events';
import { advertToTxt, type Advert } from '../advert.js';
import type { Logger } from '../log.js';
import type { Discovery } from './discovery.js';
import { probe } from './hello.js';

function sameAdvert(a: Advert, b: Advert): boolean {
  return JSON.stringify(advertToTxt(a)) === JSON.stringify(advertToTxt(b)) && a.addresses.join() === b.addresses.join();
}

/**
 * The latest advert of each peer by node id. Ignores other meshes and this agent itself (same node
 * AND instance). Emits 'peer' when an advert is new or changed, and 'duplicate' when:
 *  - a peer claims this agent's node id with another instance (a copied board: we are alive), or
 *  - a known node id shows up with another instance from another endpoint (address:port). From
 *    the same endpoint that is a restart, not a duplicate.
 * A duplicate is also recorded and emitted as a 'peer' so the agent sees it in its view.
 */
export class PeerTable {
  self?: Advert;
  private readonly adverts = new Map<string, { advert: Advert; from: string }>();

  constructor(private readonly emitter: EventEmitter, private readonly log?: Logger) {}

  see(advert: Advert, from: string): void {
    const self = this.self;
    if (!self || advert.mesh !== self.mesh || advert.v !== self.v) return;
    if (advert.node === self.node && advert.instance === self.instance) return;
    const known = this.adverts.get(advert.node);
    this.adverts.set(advert.node, { advert, from });
    if (known && sameAdvert(known.advert, advert)) return;
    const newInstance = known === undefined || known.advert.instance !== advert.instance;
    const duplicate = newInstance && (advert.node === self.node || (known !== undefined && known.from !== from));
    if (duplicate) this.emit('duplicate', advert);
    this.emit('peer', advert);
  }

  peers(): ReadonlyMap<string, Advert> {
    return new Map([...this.adverts].map(([node, e]) => [node, e.advert]));
  }

  /** A listener that throws must not take discovery (or the socket it runs on) down with it. */
  private emit(event: 'peer' | 'duplicate', advert: Advert): void {
    try {
      this.emitter.emit(event, advert);
    } catch (err) {
      this.log?.error(`a '${event}' listener failed on ${advert.node}: ${(err as Error).message}`);
    }
  }
}

export interface StaticOptions {
  mesh: string;
  peers: { host: string; port: number }[];
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  log?: Logger;
}

export class StaticDiscovery extends EventEmitter implements Discovery {
  private readonly table: PeerTable;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private queued?: Promise<void>;
  private stopped = false;
  /** Endpoints whose last probe failed: logged once when they go, once when they come back. */
  private readonly failing = new Set<string>();

  constructor(private readonly opts: StaticOptions) {
    super();
    this.table = new PeerTable(this, opts.log);
  }

  /** Resolves after the first probe round, so the agent starts with a view of whoever answers. */
  async start(self: Advert): Promise<void> {
    if (self.mesh !== this.opts.mesh) throw new Error(`static discovery for mesh ${this.opts.mesh} started as ${self.mesh}`);
    this.table.self = self;
    this.stopped = false;
    this.timer = setInterval(() => void this.probeAll(), this.opts.probeIntervalMs ?? 2000);
    await this.probeAll();
  }

  async update(self: Advert): Promise<void> {
    this.table.self = self;
  }

  refresh(): void {
    void this.probeAll();
  }

  peers(): ReadonlyMap<string, Advert> {
    return this.table.peers();
  }

  /** One probe round over every peer; a call during a round queues one more round after it. */
  probeAll(): Promise<void> {
    if (this.stopped || !this.table.self) return Promise.resolve();
    if (this.running) {
      this.queued ??= this.running.then(() => {
        this.queued = undefined;
        return this.probeAll();
      });
      return this.queued;
    }
    this.running = this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.queued;
    await this.running;
  }

  private async round(): Promise<void> {
    const timeout = this.opts.probeTimeoutMs ?? 1000;
    await Promise.all(
      this.opts.peers.map(async ({ host, port }) => {
        const from = `${host}:${port}`;
        try {
          const advert = await probe(host, port, timeout);
          if (this.stopped) return;
          if (this.failing.delete(from)) this.opts.log?.info(`${from} answers again`);
          // The probed host first: it is the one address known to reach this peer from here.
          const addresses = [host, ...advert.addresses.filter((a) => a !== host)];
          this.table.see({ ...advert, addresses }, from);
        } catch (err) {
          if (!this.failing.has(from)) this.opts.log?.debug(`${(err as Error).message}`);
          this.failing.add(from);
        }
      }),
    );
  }
}
