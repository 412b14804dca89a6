/**
 * Picks the discovery for a configuration: the static peer list when one is given (multicast may
 * not cross that network), else mDNS, or one that finds nothing when discovery is disabled.
 */
import { EventEmitter } from 'node:events';
import type { Advert } from '../advert.js';
import type { Logger } from '../log.js';
import type { Discovery } from './discovery.js';
import { MdnsDiscovery } from './mdns.js';
import { StaticDiscovery } from './static.js';

export type { Discovery } from './discovery.js';

export interface DiscoveryOptions {
  mesh: string;
  peers?: { host: string; port: number }[];
  /** An IPv4 address of this host to run mDNS on; all interfaces when absent. */
  mdnsInterface?: string;
  disabled?: boolean;
  /** How long a static peer has to answer a hello. */
  probeTimeoutMs?: number;
  log: Logger;
}

/** For a single agent, or one that is told its broker: sees no one, tells no one. */
export class NoDiscovery extends EventEmitter implements Discovery {
  async start(_self: Advert): Promise<void> {}
  async update(_self: Advert): Promise<void> {}
  refresh(): void {}
  peers(): ReadonlyMap<string, Advert> {
    return new Map();
  }
  async stop(): Promise<void> {}
}

export function createDiscovery(options: DiscoveryOptions): Discovery {
  const { mesh, log } = options;
  if (options.disabled) return new NoDiscovery();
  if (options.peers && options.peers.length > 0) {
    return new StaticDiscovery({ mesh, peers: options.peers, ...(options.probeTimeoutMs ? { probeTimeoutMs: options.probeTimeoutMs } : {}), log: log.child('static') });
  }
  return new MdnsDiscovery({ mesh, interface: options.mdnsInterface, log: log.child('mdns') });
}
