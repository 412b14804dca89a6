/**
 * Where this board's mesh port sends its connections, as the election decides: to the broker
 * hosted here (the BrokerRole, started and stopped here), to another board's broker, or nowhere
 * yet (held). It carries out the routing half of the coordinator's host (agent/coordinator.ts);
 * the agent keeps the other half (adverts, roster, probes).
 */
import type { MeshListener } from '../broker/listener.js';
import { LocalBus } from '../broker/local-bus.js';
import type { SwitchBus } from '../mesh/bus.js';
import type { Transport } from '../mesh/mqtt.js';
import type { Roster } from '../mesh/roster.js';
import type { Advert } from './advert.js';
import { BrokerRole } from './broker-role.js';
import type { Config } from './config.js';
import type { BrokerRef } from './coordinator.js';
import { catalogGate, type Distribution } from './distribution.js';
import type { Logger } from './log.js';
import type { AgentSecurity } from './security.js';

export interface RoutingOptions {
  config: Config;
  listener: MeshListener;
  roster: Roster;
  log: Logger;
  security?: AgentSecurity;
  node: () => string;
  /** This agent's advert now: where its broker is reached. */
  self: () => Advert;
  /** The models across the mesh, once connected: the broker's catalog is seeded from them. */
  models: () => Distribution | undefined;
  /** The agent's own connection, once made: moved in-process onto a broker hosted here, reconnected on a new route. */
  link: () => { bus?: SwitchBus; transport?: Transport };
}

export class MeshRouting {
  private role?: BrokerRole;

  constructor(private readonly o: RoutingOptions) {}

  /** The broker and dispatcher, while this board hosts them. */
  get brokerRole(): BrokerRole | undefined {
    return this.role;
  }

  /** Runs the embedded broker here (seeded with the mirrored retained state) and routes to it. */
  async becomeBroker(term: number, failed: readonly string[]): Promise<void> {
    const { config, log, listener } = this.o;
    const self = this.o.self();
    const record = { v: 1 as const, node: this.o.node(), term, host: self.addresses[0] ?? '127.0.0.1', port: self.port, since: Date.now() };
    const revocations = this.o.security?.creds.revokedPayload;
    const security = this.o.security && {
      ...this.o.security.broker,
      acceptCatalog: catalogGate(this.o.security.creds.publicKey, (name) => this.o.models()?.current(name)),
    };
    this.role = await BrokerRole.start({
      mesh: config.mesh, self: this.o.node(), record, mirror: this.o.roster, failed, rejoinGraceMs: config.rejoinGraceMs, log: log.child('broker'),
      ...(security ? { security } : {}), ...(revocations ? { revocations } : {}),
      catalog: this.o.models()?.retained() ?? [],
    });
    const { bus, transport } = this.o.link();
    if (bus) await bus.use(new LocalBus(this.role.broker));
    // Drop what went to the old route first: setRoute hands the held connections to this one.
    listener.dropRouted();
    listener.setRoute({ kind: 'broker', broker: this.role.broker });
    transport?.reconnectNow();
  }

  /** Stops running the broker here (a healed partition chose another one). */
  async stepDown(): Promise<void> {
    const { bus, transport } = this.o.link();
    if (bus && transport) await bus.use(transport);
    this.o.listener.setRoute({ kind: 'hold' });
    await this.role?.stop();
    this.role = undefined;
  }

  /** Routes the listener to another agent's broker and reconnects this agent through it. */
  follow(b: BrokerRef): void {
    this.o.listener.dropRouted();
    this.o.listener.setRoute({ kind: 'proxy', host: b.host, port: b.port });
    this.o.link().transport?.reconnectNow();
  }

  /** Holds new connections while there is no broker. */
  hold(): void {
    this.o.listener.setRoute({ kind: 'hold' });
  }

  /** Stops the broker hosted here, if any (the agent stops its listener first). */
  async stop(): Promise<void> {
    await this.role?.stop();
  }
}
