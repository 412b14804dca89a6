/**
 * BrokerHost: the embedded aedes broker on a TCP listener. The only module that imports aedes.
 * Sockets get TCP_NODELAY: without it Nagle's algorithm meets delayed ACKs and every
 * request/reply round trip costs 40-80 ms instead of under one (FIELD-NOTES: the Nagle trap).
 */
import net from 'node:net';
import { once } from 'node:events';
import { Aedes } from 'aedes';
import type { Logger } from '../agent/log.js';
import { KizunaError } from '../mesh/errors.js';

export interface BrokerHostOptions {
  port: number;
  host: string;
  log: Logger;
}

export class BrokerHost {
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly broker: Aedes,
    private readonly server: net.Server,
    private readonly log: Logger,
  ) {}

  static async create(options: BrokerHostOptions): Promise<BrokerHost> {
    const broker = await Aedes.createBroker({
      // A publish with a wildcard in its topic name is a protocol violation; refuse it here so it
      // never reaches a subscriber as a topic nobody can parse safely.
      authorizePublish: (_client, packet, callback) => {
        if (packet.topic.startsWith('$SYS') || /[+#\u0000]/.test(packet.topic)) {
          callback(new Error('forbidden topic'));
          return;
        }
        callback(null);
      },
    });
    const server = net.createServer({ noDelay: true });
    const host = new BrokerHost(broker, server, options.log);
    server.on('connection', (socket) => host.accept(socket));
    server.listen(options.port, options.host);
    try {
      await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e))]);
    } catch (err) {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
        const why = e.code === 'EADDRINUSE' ? 'is in use (another agent or MQTT broker?)' : e.code === 'EACCES' ? 'needs privileges' : 'is not an address of this machine';
        throw new KizunaError('KZ_ERR_CONFIG', `cannot listen on ${options.host}:${options.port}: it ${why}; choose another with --port or --host`, { cause: err });
      }
      throw err;
    }
    options.log.info(`broker listening on ${options.host}:${host.port}`);
    return host;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get connectedClients(): number {
    return this.broker.connectedClients;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', (err) => this.log.debug(`client socket error: ${err.message}`));
    this.broker.handle(socket);
  }

  /** Stops accepting, closes every client connection and the broker. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await new Promise<void>((resolve) => this.broker.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
