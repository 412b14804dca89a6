/**
 * The Discovery seam: who else of this mesh is out there, and what they advertise.
 * Real: mDNS (mdns.ts), static peers probed on their mesh port (static.ts); in-memory for tests.
 *
 * Discovery only ever says who was SEEN. It never says who died: mDNS keeps a killed node's
 * records for hours (FIELD-NOTES). Liveness comes from MQTT (will messages, keepalive).
 */
import type { EventEmitter } from 'node:events';
import type { Advert } from '../advert.js';

export interface Discovery extends EventEmitter {
  /** Starts advertising `self` (when the implementation advertises) and looking for peers. */
  start(self: Advert): Promise<void>;
  /** Changes what this agent advertises (its role and term after an election). */
  update(self: Advert): Promise<void>;
  /** Asks the network again now (after a partition heals, a broker loss). */
  refresh(): void;
  /** The latest advert of every peer seen (this agent excluded), by node id. */
  peers(): ReadonlyMap<string, Advert>;
  /** Stops advertising (a clean goodbye where the medium has one) and looking. */
  stop(): Promise<void>;
  // Events: 'peer' (advert: Advert) whenever a peer is seen or its advert changes.
}
