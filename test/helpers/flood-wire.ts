/**
 * MQTT 3.1.1 by hand, for the flood attackers: packets built from the spec (CONNECT with
 * credentials, PUBLISH, SUBSCRIBE) and a socket that reads what the broker sends back (CONNACK,
 * SUBACK, PUBLISH, close), over TCP or TLS. An attacker writes bytes as cheaply as it can; mqtt.js
 * would refuse or slow some of them. Loopback only: every socket goes to 127.0.0.1.
 */
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { packet, str } from './raw-mqtt.js';

/**
 * TLS to a mesh's broker: its CA, and no check of the host name (attackers need no more; apps
 * check the board certificate's mesh and kind, mesh/mqtt.ts).
 */
export interface WireTls {
  ca: string;
}

export function connectPacket(o: { clientId: string; username?: string; password?: string; keepalive?: number }): Buffer {
  // Flags: clean session (0x02), with a username (0x80) and a password (0x40) when given.
  const flags = 0x02 | (o.username !== undefined ? 0x80 : 0) | (o.password !== undefined ? 0x40 : 0);
  const keepalive = o.keepalive ?? 60;
  return packet(
    0x10,
    Buffer.concat([
      str('MQTT'),
      Buffer.from([4, flags, keepalive >> 8, keepalive & 0xff]),
      str(o.clientId),
      ...(o.username !== undefined ? [str(o.username)] : []),
      ...(o.password !== undefined ? [str(o.password)] : []),
    ]),
  );
}

export function publishPacket(topic: string, payload: Buffer, o: { qos?: 0 | 1; id?: number; retain?: boolean } = {}): Buffer {
  const qos = o.qos ?? 0;
  const first = 0x30 | (qos << 1) | (o.retain ? 1 : 0);
  const id = qos ? Buffer.from([(o.id ?? 1) >> 8, (o.id ?? 1) & 0xff]) : Buffer.alloc(0);
  return packet(first, Buffer.concat([str(topic), id, payload]));
}

export function subscribePacket(id: number, filters: string[]): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([id >> 8, id & 0xff]), ...filters.map((f) => Buffer.concat([str(f), Buffer.from([1])]))]));
}

export interface Incoming {
  type: number;
  flags: number;
  body: Buffer;
}

/**
 * A raw connection to the broker on 127.0.0.1: writes what it is given (waiting for 'drain' so an
 * attacker never buffers without bound) and parses what comes back into packets.
 */
export class RawConn {
  readonly closed: Promise<void>;
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiters = new Set<(p: Incoming) => boolean>();
  private isClosed = false;

  private constructor(readonly socket: net.Socket) {
    // A broker that cuts the connection while we still write resets it: that is a close too.
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => ((this.isClosed = true), resolve())));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  /** A plain TCP connection, or TLS when `secure` is given (resolves after the handshake). */
  static async open(port: number, secure?: WireTls, timeoutMs = 3000): Promise<RawConn> {
    const socket = secure
      ? tls.connect({ port, host: '127.0.0.1', ca: secure.ca, checkServerIdentity: () => undefined })
      : net.connect({ port, host: '127.0.0.1', noDelay: true });
    if (secure) socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(new Error('connect timeout')), timeoutMs);
    try {
      await once(socket, secure ? 'secureConnect' : 'connect');
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return new RawConn(socket);
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** Writes; resolves when the socket can take more (false: it closed meanwhile). */
  async write(bytes: Buffer): Promise<boolean> {
    if (this.isClosed) return false;
    if (this.socket.write(bytes)) return true;
    await Promise.race([once(this.socket, 'drain').catch(() => undefined), this.closed]);
    return !this.isClosed;
  }

  /** The next packet for which `match` is true, or 'closed', or 'timeout'. */
  next(match: (p: Incoming) => boolean, timeoutMs: number): Promise<Incoming | 'closed' | 'timeout'> {
    if (this.isClosed) return Promise.resolve('closed');
    return new Promise((resolve) => {
      const done = (v: Incoming | 'closed' | 'timeout') => {
        clearTimeout(timer);
        this.waiters.delete(w);
        resolve(v);
      };
      const w = (p: Incoming) => (match(p) ? (done(p), true) : false);
      const timer = setTimeout(() => done('timeout'), timeoutMs);
      this.waiters.add(w);
      void this.closed.then(() => done('closed'));
    });
  }

  /** CONNECTs; the CONNACK return code (0 accepted, 5 not authorized...), or 'closed' / 'timeout'. */
  async connect(o: Parameters<typeof connectPacket>[0], timeoutMs = 3000): Promise<number | 'closed' | 'timeout'> {
    const reply = this.next((p) => p.type === 2, timeoutMs);
    await this.write(connectPacket(o));
    const p = await reply;
    return typeof p === 'string' ? p : p.body[1] ?? -1;
  }

  /** Whether the broker closes the connection within `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    if (this.isClosed) return true;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.closed.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.buf.length < 2) return;
      let len = 0;
      let mul = 1;
      let i = 1;
      for (; i < 5 && i < this.buf.length; i++) {
        len += (this.buf[i]! & 0x7f) * mul;
        mul *= 128;
        if (!(this.buf[i]! & 0x80)) break;
      }
      if (i >= this.buf.length || this.buf.length < i + 1 + len) return;
      const p: Incoming = { type: this.buf[0]! >> 4, flags: this.buf[0]! & 0x0f, body: this.buf.subarray(i + 1, i + 1 + len) };
      this.buf = this.buf.subarray(i + 1 + len);
      for (const w of [...this.waiters]) if (w(p)) break;
    }
  }
}

/** Topic and payload of an incoming PUBLISH. */
export function readPublish(p: Incoming): { topic: string; payload: Buffer } {
  const n = (p.body[0]! << 8) | p.body[1]!;
  const qos = (p.flags >> 1) & 3;
  const topic = p.body.subarray(2, 2 + n).toString('utf8');
  return { topic, payload: p.body.subarray(2 + n + (qos ? 2 : 0)) };
}
