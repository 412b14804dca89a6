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

  /**
   * Receives, inside the broker process, what is published on `topic` (a filter): the dispatcher
   * sits here so a request costs no extra network hop. Returns the unsubscribe function.
   */
  async subscribe(topic: string, handler: (topic: string, payload: Buffer, retained: boolean) => void): Promise<() => Promise<void>> {
    const deliver = (packet: { topic: string; payload: string | Buffer; retain: boolean }, done: () => void) => {
      try {
        handler(packet.topic, Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload), packet.retain);
      } finally {
        done();
      }
    };
    await new Promise<void>((resolve) => this.aedes.subscribe(topic, deliver, resolve));
    return () => new Promise<void>((resolve) => this.aedes.unsubscribe(topic, deliver, resolve));
  }

  /** Whether a client with this MQTT client id is connected now. */
  hasClient(clientId: string): boolean {
    return Boolean((this.aedes as unknown as { clients: Record<string, unknown> }).clients[clientId]);
  }

  /** Closes every client connection and the broker. */
  stop(): Promise<void> {
    this.log.debug('embedded broker closing');
    return new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
