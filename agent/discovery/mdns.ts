/**
 * mDNS / DNS-SD discovery: publishes `_kizuna._tcp` as `<mesh>-<node>` with the advert in TXT,
 * and browses for the others. The only module that imports bonjour-service.
 *
 * bonjour-service 1.4 facts this relies on (FIELD-NOTES, and its source):
 *  - there is no TXT update: its re-announce loop resends the records captured at publish, so a
 *    changed advert is a goodbye and a new publish; browsers see 'down' then 'up';
 *  - responders never re-announce after the first minutes, so a healed partition is only seen by
 *    querying again: every refreshMs;
 *  - answers carry `addresses` and `referer`; `host` lacks `.local` and is not resolvable;
 *  - multicast-dns emits 'error' on its socket and bonjour-service does not listen: we must.
 */
import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { Bonjour, type Browser, type Service } from 'bonjour-service';
import { advertFromTxt, advertToTxt, type Advert } from '../advert.js';
import type { Logger } from '../log.js';
import type { Discovery } from './discovery.js';
import { PeerTable } from './static.js';

export const SERVICE_TYPE = 'kizuna';
const GOODBYE_WAIT_MS = 1000;

/** What we use of multicast-dns, which bonjour-service keeps in a private field. */
interface MulticastDns extends EventEmitter {
  query(name: string, type: string, callback: (err?: Error | null) => void): void;
}

export interface MdnsOptions {
  mesh: string;
  /** An IPv4 address of this host: multicast is joined and sent on that interface only. */
  interface?: string;
  refreshMs?: number;
  log?: Logger;
}

/** `<mesh>-<node>`, one DNS label (63 bytes at most; bonjour turns '.' into '-'). */
export function instanceName(mesh: string, node: string): string {
  const name = `${mesh}-${node}`.split('.').join('-');
  if (Buffer.byteLength(name) <= 63) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, 40)}-${hash}`;
}

/** The answer's source address first (it reached us), then the others, IPv4 before IPv6. */
export function answerAddresses(referer: string | undefined, addresses: string[]): string[] {
  const all = [...new Set([...(referer ? [referer] : []), ...addresses])];
  return [...all.filter((a) => isIPv4(a)), ...all.filter((a) => !isIPv4(a))];
}

export class MdnsDiscovery extends EventEmitter implements Discovery {
  private readonly table: PeerTable;
  private bonjour?: Bonjour;
  private browser?: Browser;
  private service?: Service;
  private mdns?: MulticastDns;
  private timer?: NodeJS.Timeout;
  /** Whether the last query failed to send: logged once when it starts, once when it ends. */
  private sendFailing = false;
  /** update() calls in order: two overlapping re-publishes would announce the name twice. */
  private updating: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MdnsOptions) {
    super();
    this.table = new PeerTable(this, opts.log);
  }

  async start(self: Advert): Promise<void> {
    if (this.bonjour) throw new Error('mDNS discovery already started');
    if (self.mesh !== this.opts.mesh) throw new Error(`mDNS discovery for mesh ${this.opts.mesh} started as ${self.mesh}`);
    const log = this.opts.log;
    this.table.self = self;
    // Bound to 0.0.0.0 even with an interface: a socket bound to a unicast address receives no multicast.
    const mdnsOptions = this.opts.interface ? { interface: this.opts.interface, bind: '0.0.0.0' } : {};
    const bonjour = new Bonjour(mdnsOptions as object, (err: Error) => log?.warn(`mDNS answer not sent: ${err.message}`));
    const mdns = (bonjour as unknown as { server: { mdns: MulticastDns } }).server.mdns;
    mdns.on('error', (err: Error) => log?.error(`mDNS socket: ${err.message}`));
    mdns.on('warning', (err: Error) => log?.debug(`mDNS: ${err.message}`));
    this.bonjour = bonjour;
    this.mdns = mdns;
    this.publish(self, true);
    this.browser = bonjour.find({ type: SERVICE_TYPE });
    for (const event of ['up', 'txt-update', 'srv-update'] as const) this.browser.on(event, (s: Service) => this.seen(s));
    this.refresh(); // the browser queried already, but without a callback: this one reports send errors
    this.timer = setInterval(() => this.refresh(), this.opts.refreshMs ?? 5000);
  }

  update(self: Advert): Promise<void> {
    const next = this.updating.then(() => this.republish(self));
    this.updating = next.catch(() => {}); // one failed update must not block the next ones, nor stop()
    return next;
  }

  /** The browser's own query (browser.update()) swallows send errors; the answers reach it either way. */
  refresh(): void {
    try {
      this.mdns?.query(`_${SERVICE_TYPE}._tcp.local`, 'PTR', (err) => this.sent(err ?? undefined));
    } catch (err) {
      this.sent(err as Error);
    }
  }

  peers(): ReadonlyMap<string, Advert> {
    return this.table.peers();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.updating;
    const bonjour = this.bonjour;
    if (!bonjour) return;
    this.bonjour = undefined;
    this.browser?.stop();
    this.browser = undefined;
    this.service = undefined;
    this.mdns = undefined;
    await this.bounded((done) => bonjour.unpublishAll(done)); // goodbye: peers' browsers drop us now
    await this.bounded((done) => bonjour.destroy(done)); // closes the socket and its query interval
  }

  private publish(self: Advert, probe: boolean): void {
    this.service = this.bonjour!.publish({
      name: instanceName(self.mesh, self.node),
      type: SERVICE_TYPE,
      port: self.port,
      txt: advertToTxt(self),
      probe,
    });
  }

  private async republish(self: Advert): Promise<void> {
    const before = this.table.self;
    this.table.self = self;
    const old = this.service;
    if (!this.bonjour || !old) return;
    const unchanged = before && JSON.stringify(advertToTxt(before)) === JSON.stringify(advertToTxt(self));
    if (unchanged && old.activated) return;
    // Only a name we already announced skips probing; a new name (a renewed node id), one still
    // probing, or one lost to another board, probes again.
    const name = instanceName(self.mesh, self.node);
    const probe = !old.published || old.name !== name;
    await this.bounded((done) => old.stop(done));
    if (this.bonjour) this.publish(self, probe);
  }

  private sent(err: Error | undefined): void {
    if (err && !this.sendFailing) {
      this.opts.log?.warn(`mDNS cannot send (${err.message}): no multicast route? Set the mDNS interface or add a 224.0.0.0/4 route`);
    } else if (!err && this.sendFailing) {
      this.opts.log?.info('mDNS sends again');
    }
    this.sendFailing = err !== undefined;
  }

  private seen(service: Service): void {
    const addresses = answerAddresses(service.referer?.address, service.addresses ?? []);
    const advert = advertFromTxt((service.txt ?? {}) as Record<string, unknown>, addresses);
    if (!advert) return this.opts.log?.debug(`ignored mDNS service ${service.name}: not a valid kizuna advert`);
    this.table.see(advert, `${addresses[0] ?? service.host}:${advert.port}`);
  }

  /** Waits for a bonjour callback, but never forever: a lost send must not hang stop(). */
  private bounded(fn: (done: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, GOODBYE_WAIT_MS);
      try {
        fn(() => {
          clearTimeout(timer);
          resolve();
        });
      } catch (err) {
        this.opts.log?.warn(`mDNS: ${(err as Error).message}`);
        clearTimeout(timer);
        resolve();
      }
    });
  }
}
