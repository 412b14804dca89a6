/**
 * The embedded MQTT broker (aedes), without a listener of its own: the mesh listener hands it the
 * connections it should serve. The only module that imports aedes.
 */
import type { Duplex } from 'node:stream';
import { Aedes } from 'aedes';
import type { Logger } from '../agent/log.js';

export interface RetainedMessage {
  topic: string;
  payload: Buffer;
}

export class EmbeddedBroker {
  private constructor(
    private readonly aedes: Aedes,
    private readonly log: Logger,
  ) {}

  static async create(log: Logger): Promise<EmbeddedBroker> {
    const aedes = await Aedes.createBroker({
      // A publish with a wildcard in its topic name is a protocol violation; refuse it here so it
      // never reaches a subscriber as a topic nobody can parse safely.
      authorizePublish: (_client, packet, callback) => {
        if (packet.topic.startsWith('$SYS') || /[+#\u0000]/.test(packet.topic)) callback(new Error('forbidden topic'));
        else callback(null);
      },
    });
    return new EmbeddedBroker(aedes, log);
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  get closed(): boolean {
    return this.aedes.closed;
  }

  handle(stream: Duplex): void {
    this.aedes.handle(stream);
  }

  /** Publishes from inside the broker (a standby seeding the retained state it mirrored). */
  publish(topic: string, payload: Buffer, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) =>
      this.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain, dup: false }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Closes every client connection and the broker. */
  stop(): Promise<void> {
    this.log.debug('embedded broker closing');
    return new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
