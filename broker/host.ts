/**
 * BrokerHost: an embedded broker behind its own mesh listener, the whole broker of a one-agent
 * mesh (and of tests). The elected broker of a larger mesh uses the same two parts.
 */
import type { Logger } from '../agent/log.js';
import { EmbeddedBroker, type BrokerSecurity, type Denial } from './embedded.js';
import { MeshListener, type ListenerOptions } from './listener.js';

export class BrokerHost {
  private constructor(
    readonly broker: EmbeddedBroker,
    readonly listener: MeshListener,
  ) {}

  static async create(options: Omit<ListenerOptions, 'log'> & { log: Logger; security?: BrokerSecurity; onDenied?: (d: Denial) => void }): Promise<BrokerHost> {
    const broker = await EmbeddedBroker.create(options.log, options.security, options.onDenied);
    let listener: MeshListener;
    try {
      listener = await MeshListener.create(options);
    } catch (err) {
      await broker.stop();
      throw err;
    }
    listener.setRoute({ kind: 'broker', broker });
    return new BrokerHost(broker, listener);
  }

  get port(): number {
    return this.listener.port;
  }

  get connectedClients(): number {
    return this.broker.connectedClients;
  }

  async stop(): Promise<void> {
    await this.broker.stop();
    await this.listener.stop();
  }
}
