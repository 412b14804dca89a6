/**
 * The mesh port (1883 by default) on every agent. A connection is routed by what the agent is:
 *  - the elected broker: handed to the embedded broker (no extra hop);
 *  - any other agent: piped to the elected broker, so apps may use ANY board's address and still
 *    reach the mesh after a failover (they reconnect to the same board, which now pipes elsewhere);
 *  - during an election: held, paused, until there is a broker to route it to.
 * A connection whose first byte is 'K' is a hello probe (static discovery), answered by `onHello`.
 * A piped connection starts with one 'P' byte: it is served only by a broker, never piped again,
 * so two agents with momentarily different views can never pipe a client round in a loop.
 * The broker serves MQTT and, when the (decrypted) bytes start with an HTTP GET, MQTT over
 * WebSocket (broker/websocket.ts): one port for boards, apps and browsers.
 * Sockets get TCP_NODELAY: without it every round trip costs 40-80 ms (FIELD-NOTES: the Nagle trap).
 */
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import { EventEmitter, once } from 'node:events';
import type { Logger } from '../agent/log.js';
import { KizunaError } from '../mesh/errors.js';
import type { EmbeddedBroker } from './embedded.js';
import { Allowances, GuardedConnection, type GuardLimits, type Violation } from './packet-guard.js';
import { WebSocketDoor } from './websocket.js';

const PIPED = 0x50; // 'P'
const TLS_HANDSHAKE = 0x16; // the first byte of a TLS ClientHello
const HTTP_GET = 0x47; // 'G': a WebSocket upgrade starts with GET
/** A WebSocket message may hold a whole packet (its header too) and a few small ones after it. */
const WS_MARGIN = 64 * 1024;

export type Route = { kind: 'broker'; broker: EmbeddedBroker } | { kind: 'proxy'; host: string; port: number } | { kind: 'hold' };

export interface ListenerOptions {
  port: number;
  host: string;
  log: Logger;
  /** A hello probe, with the bytes of it already read (its nonce is in them). */
  onHello?: (socket: net.Socket, first: Buffer) => void;
  /** A held connection is closed after this long without a broker (the client retries). */
  holdTimeoutMs?: number;
  maxHeld?: number;
  /** A broker that does not accept a piped connection within this is treated as unreachable. */
  upstreamTimeoutMs?: number;
  /** Limits on what one connection sends the embedded broker (none when absent). */
  guard?: GuardLimits;
  /**
   * The broker's TLS identity (this board's certificate, signed by the mesh CA). With it, MQTT
   * connections to the broker must be TLS (mqtts, or wss): a plain one is closed. Piped connections stay
   * encrypted end to end (a board in between only forwards the bytes).
   */
  tls?: { cert: string; key: string; ca: string };
}

/** Events: 'upstream-failed' (host, port) when the broker it pipes to cannot be reached. */
export class MeshListener extends EventEmitter {
  private route: Route = { kind: 'hold' };
  private readonly held = new Map<net.Socket, { first: Buffer; piped: boolean; timer: NodeJS.Timeout }>();
  /** Connections routed to the broker or piped, so a change of broker can close them. */
  private readonly routed = new Set<net.Socket>();
  private secure?: tls.SecureContext;
  /** Publish allowances per identity, across connections and reconnections. */
  private allowances?: Allowances;
  private web?: WebSocketDoor;

  private constructor(
    private readonly server: net.Server,
    private readonly options: ListenerOptions,
  ) {
    super();
  }

  static async create(options: ListenerOptions): Promise<MeshListener> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true });
    const listener = new MeshListener(server, options);
    server.on('connection', (socket) => listener.accept(socket));
    server.listen(options.port, options.host);
    try {
      await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e))]);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = { EADDRINUSE: 'is in use (another agent or MQTT broker?)', EACCES: 'needs privileges', EADDRNOTAVAIL: 'is not an address of this machine' }[e.code ?? ''];
      if (why) throw new KizunaError('KZ_ERR_CONFIG', `cannot listen on ${options.host}:${options.port}: it ${why}; choose another with --port or --host`, { cause: err });
      throw err;
    }
    options.log.info(`broker listening on ${options.host}:${listener.port}`);
    return listener;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Routes new connections (and the held ones) to `route`; open connections are not moved. */
  setRoute(route: Route): void {
    this.route = route;
    if (route.kind === 'hold') return;
    for (const [socket, { first, piped, timer }] of this.held) {
      clearTimeout(timer);
      this.held.delete(socket);
      this.dispatch(socket, first, piped);
    }
  }

  /** Closes the routed connections: their clients reconnect and meet the current route. */
  dropRouted(): void {
    for (const socket of this.routed) socket.destroy();
    this.routed.clear();
  }

  private accept(socket: net.Socket): void {
    socket.on('error', (err) => this.options.log.debug(`connection error: ${err.message}`));
    // A connection that never says anything is closed: it would hold a descriptor for ever.
    const silent = setTimeout(() => socket.destroy(), this.options.holdTimeoutMs ?? 10_000);
    socket.once('close', () => clearTimeout(silent));
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(silent);
      socket.pause();
      if (chunk[0] === 0x4b /* K */ && this.options.onHello) return this.options.onHello(socket, chunk);
      const piped = chunk[0] === PIPED;
      const first = piped ? chunk.subarray(1) : chunk;
      if (piped && first.length === 0) {
        // The 'P' came alone: the client's own first bytes (TLS or MQTT) decide the route.
        socket.once('data', (more: Buffer) => {
          socket.pause();
          this.place(socket, more, true);
        });
        socket.resume();
        return;
      }
      this.place(socket, first, piped);
    });
    socket.resume();
  }

  /** Routes a connection now, or holds it (paused) until there is a broker. */
  private place(socket: net.Socket, first: Buffer, piped: boolean): void {
    if (this.route.kind !== 'hold') return this.dispatch(socket, first, piped);
    if (this.held.size >= (this.options.maxHeld ?? 1000)) return void socket.destroy();
    const timer = setTimeout(() => {
      this.held.delete(socket);
      socket.destroy();
    }, this.options.holdTimeoutMs ?? 10_000);
    this.held.set(socket, { first, piped, timer });
    socket.once('close', () => {
      clearTimeout(timer);
      this.held.delete(socket);
    });
  }

  private dispatch(socket: net.Socket, first: Buffer, piped: boolean): void {
    const route = this.route;
    if (piped && route.kind !== 'broker') return void socket.destroy(); // the client retries
    this.routed.add(socket);
    socket.once('close', () => this.routed.delete(socket));
    if (route.kind === 'broker') return this.serve(socket, first, route.broker);
    if (route.kind === 'proxy') {
      const upstream = net.connect({ host: route.host, port: route.port, noDelay: true });
      let connected = false;
      // A silent (cut off) broker never refuses: give up soon, so the client tries elsewhere and
      // this agent checks its broker at once instead of after its own keepalive.
      const timer = setTimeout(() => upstream.destroy(new Error('upstream silent')), this.options.upstreamTimeoutMs ?? 1000);
      upstream.once('connect', () => {
        connected = true;
        clearTimeout(timer);
      });
      upstream.once('close', () => clearTimeout(timer));
      upstream.on('error', () => {
        socket.destroy();
        if (!connected) this.emit('upstream-failed', route.host, route.port);
      });
      socket.on('error', () => upstream.destroy());
      upstream.once('close', () => socket.destroy());
      socket.once('close', () => upstream.destroy());
      upstream.write(Buffer.from([PIPED]));
      if (first.length) upstream.write(first);
      socket.pipe(upstream);
      upstream.pipe(socket);
      socket.resume();
    }
  }

  /** Hands a connection to the embedded broker: MQTT or WebSocket, over TLS when the mesh has it. */
  private serve(socket: net.Socket, first: Buffer, broker: EmbeddedBroker): void {
    if (!this.options.tls) return this.serveDecrypted(socket, socket, first, broker);
    if (first[0] !== TLS_HANDSHAKE) {
      this.options.log.warn(`connection ${socket.remoteAddress}:${socket.remotePort} closed: this mesh takes MQTT over TLS only (mqtts:// or wss://)`);
      this.emit('refused', { kind: 'plain' });
      return void socket.destroy();
    }
    this.secure ??= tls.createSecureContext(this.options.tls);
    // TLS over a stream that replays the bytes already read (a TLSSocket on the raw socket
    // would read its handle directly and miss the ClientHello we peeked at).
    const conn = new tls.TLSSocket(replaying(socket, first), { isServer: true, secureContext: this.secure });
    conn.on('error', (err) => this.options.log.debug(`tls: ${err.message}`));
    // MQTT or WebSocket: only the first decrypted bytes tell.
    const silent = setTimeout(() => conn.destroy(), this.options.holdTimeoutMs ?? 10_000);
    conn.once('close', () => clearTimeout(silent));
    conn.once('data', (chunk: Buffer) => {
      clearTimeout(silent);
      conn.pause();
      this.serveDecrypted(socket, conn, chunk, broker);
    });
    socket.resume();
  }

  /** `stream` (the raw socket, or TLS over it) has sent `first` already, and is paused. */
  private serveDecrypted(socket: net.Socket, stream: net.Socket, first: Buffer, broker: EmbeddedBroker): void {
    if (first[0] === HTTP_GET) {
      const who = `${socket.remoteAddress}:${socket.remotePort}`;
      this.webSocketDoor().serve(replaying(stream, first), {
        upgraded: (mqtt) => this.handOver(socket, mqtt, broker),
        failed: (err) => {
          if (err.code !== 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return this.options.log.debug(`websocket ${who}: ${err.message}`);
          this.options.log.warn(`connection ${who} cut off: it sent a WebSocket message over ${this.webSocketDoor().maxPayload} bytes (the packet limit and a margin)`);
        },
      });
    } else {
      if (first.length) stream.unshift(first);
      this.handOver(socket, stream, broker);
    }
    socket.resume();
  }

  private webSocketDoor(): WebSocketDoor {
    const guard = this.options.guard;
    return (this.web ??= new WebSocketDoor({ upgradeTimeoutMs: this.options.holdTimeoutMs ?? 10_000, ...(guard ? { maxPayload: guard.maxPacketBytes + WS_MARGIN } : {}) }));
  }

  /** MQTT bytes to the broker, through the packet guard when there is one. */
  private handOver(socket: net.Socket, mqtt: Duplex, broker: EmbeddedBroker): void {
    const guard = this.options.guard;
    if (!guard) return broker.handle(mqtt);
    this.allowances ??= new Allowances(guard);
    // The guard uses only what any Duplex has (write, pause, resume, destroyed, 'drain').
    broker.handle(new GuardedConnection(mqtt as net.Socket, guard, (v) => this.refused(socket, v), this.allowances));
  }

  private refused(socket: net.Socket, v: Violation): void {
    const who = `${socket.remoteAddress}:${socket.remotePort}`;
    const why = v.kind === 'too-large' ? `sent a packet of ${v.bytes} bytes (limit ${this.options.guard!.maxPacketBytes})`
      : v.kind === 'flood' ? `published faster than ${v.rate} messages/s` : 'sent a malformed packet length';
    this.options.log.warn(`connection ${who} cut off: it ${why}`);
    this.emit('refused', v);
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const [socket, { timer }] of this.held) {
      clearTimeout(timer);
      socket.destroy();
    }
    this.held.clear();
    this.dropRouted();
    await closed;
  }
}

/**
 * A duplex over `socket` (raw, or TLS) whose reading starts with `first`, then whatever the socket
 * receives. Having no handle of its own, nothing downstream can read the socket around it.
 */
export function replaying(socket: net.Socket, first: Buffer): Duplex {
  const carrier = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _enc, callback) => void socket.write(chunk, callback),
    final: (callback) => void socket.end(callback),
    destroy: (err, callback) => {
      // Whatever TLS still writes (a CONNACK refusing the client, a close_notify) goes out first.
      if (err) socket.destroy();
      else socket.destroySoon();
      callback(err);
    },
  });
  carrier.push(first);
  socket.on('data', (chunk: Buffer) => {
    if (!carrier.push(chunk)) socket.pause();
  });
  socket.once('end', () => carrier.push(null));
  socket.once('close', () => carrier.destroy());
  return carrier;
}
