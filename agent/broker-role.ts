/**
 * What an agent runs while it is the elected broker: the embedded aedes broker, seeded with the
 * retained state every agent mirrors (the roster), and the dispatcher beside it. After a failover
 * it marks offline the members that never came back, so no ghost lingers in anyone's view.
 */
import { Dispatcher } from '../broker/dispatcher.js';
import { EmbeddedBroker, type BrokerSecurity } from '../broker/embedded.js';
import type { Roster } from '../mesh/roster.js';
import type { NodeStatus } from '../mesh/status.js';
import { topics } from '../mesh/topics.js';
import type { Logger } from './log.js';

export interface BrokerRecord {
  v: 1;
  node: string;
  term: number;
  host: string;
  port: number;
  since: number;
}

export const agentClientId = (node: string): string => `kizuna-agent-${node}`;

export class BrokerRole {
  private sweepTimer?: NodeJS.Timeout;

  private constructor(
    readonly broker: EmbeddedBroker,
    readonly dispatcher: Dispatcher,
    private readonly mesh: string,
  ) {}

  /**
   * Starts a broker for `term`. `mirror` is this agent's copy of the retained roster; the nodes in
   * `failed` are known dead (the old broker among them) and are seeded as offline.
   */
  static async start(options: {
    mesh: string;
    self: string;
    record: BrokerRecord;
    mirror: Roster;
    failed: readonly string[];
    rejoinGraceMs: number;
    log: Logger;
    /** Credentials required of every client (absent: an open broker). */
    security?: BrokerSecurity;
    /** The signed revocation list to keep retained (so the next broker's clients see it too). */
    revocations?: Buffer;
    /** The mesh catalogue this agent mirrored (agent/distribution.ts), retained again here. */
    catalog?: readonly { topic: string; payload: Buffer }[];
  }): Promise<BrokerRole> {
    const { mesh, mirror, log } = options;
    const broker = await EmbeddedBroker.create(log.child('aedes'), options.security);
    if (options.revocations) await broker.publish(topics.revoked(mesh), options.revocations, true);
    for (const { topic, payload } of options.catalog ?? []) await broker.publish(topic, payload, true);
    const dispatcher = new Dispatcher(broker, { mesh, node: options.self, log: log.child('dispatcher') });
    const role = new BrokerRole(broker, dispatcher, mesh);
    for (const status of mirror.all()) {
      const seeded: NodeStatus = options.failed.includes(status.node) && status.online ? { ...status, online: false } : status;
      dispatcher.roster.set(seeded);
      await broker.publish(topics.nodeStatus(mesh, status.node), Buffer.from(JSON.stringify(seeded)), true);
    }
    await broker.publish(topics.brokerRecord(mesh), Buffer.from(JSON.stringify(options.record)), true);
    await dispatcher.start();
    role.sweepTimer = setTimeout(() => void role.sweep(options.self), options.rejoinGraceMs);
    return role;
  }

  /** Members still marked online that did not reconnect after the failover are gone. */
  private async sweep(self: string): Promise<void> {
    this.sweepTimer = undefined;
    for (const status of this.dispatcher.roster.online()) {
      if (status.node === self || this.broker.hasClient(agentClientId(status.node))) continue;
      const gone: NodeStatus = { ...status, online: false };
      this.dispatcher.roster.set(gone);
      await this.broker.publish(topics.nodeStatus(this.mesh, status.node), Buffer.from(JSON.stringify(gone)), true).catch(() => undefined);
    }
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    await this.dispatcher.stop();
    await this.broker.stop();
  }
}
