/**
 * A guard in front of the embedded broker: it reads the MQTT fixed header of every packet a
 * connection sends and cuts the connection off when a packet is larger than the limit (aedes has
 * no such limit: a client could make it buffer up to 256 MiB per packet) or when the client
 * publishes faster than its allowance. Others' connections are not touched.
 *
 * It only scans (no copy, no parsing of bodies): a header byte, a 1-4 byte remaining length, then
 * that many bytes skipped, across chunk boundaries.
 */
import { Duplex } from 'node:stream';
import type net from 'node:net';

export interface GuardLimits {
  /** Largest MQTT packet (fixed header excluded), in bytes. */
  maxPacketBytes: number;
  /** PUBLISH packets per second a connection may send on average... */
  publishPerSecond: number;
  /** ...and in one burst. */
  publishBurst: number;
}

export type Violation = { kind: 'too-large'; bytes: number } | { kind: 'flood'; rate: number } | { kind: 'malformed' };

const PUBLISH = 3;

/** The byte scanner, separate from the stream so it can be tested alone. */
export class PacketScanner {
  private state: 'type' | 'length' | 'body' = 'type';
  private type = 0;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private left = 0;
  private tokens: number;
  private last: number;

  constructor(
    private readonly limits: GuardLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = limits.publishBurst;
    this.last = now();
  }

  /** Scans the next bytes; returns the first violation, or undefined. */
  scan(chunk: Uint8Array): Violation | undefined {
    for (let i = 0; i < chunk.length; ) {
      if (this.state === 'body') {
        const n = Math.min(this.left, chunk.length - i);
        this.left -= n;
        i += n;
        if (this.left === 0) this.state = 'type';
        continue;
      }
      const byte = chunk[i++]!;
      if (this.state === 'type') {
        this.type = byte >> 4;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        continue;
      }
      // The remaining length: 7 bits per byte, least significant first, at most 4 bytes.
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      if (++this.lengthBytes > 4) return { kind: 'malformed' };
      if (byte & 0x80) continue;
      if (this.length > this.limits.maxPacketBytes) return { kind: 'too-large', bytes: this.length };
      if (this.type === PUBLISH) {
        const flood = this.spend();
        if (flood) return flood;
      }
      this.left = this.length;
      this.state = this.left > 0 ? 'body' : 'type';
    }
    return undefined;
  }

  /** A token bucket: one token per PUBLISH, refilled at publishPerSecond up to publishBurst. */
  private spend(): Violation | undefined {
    const now = this.now();
    this.tokens = Math.min(this.limits.publishBurst, this.tokens + ((now - this.last) / 1000) * this.limits.publishPerSecond);
    this.last = now;
    if (this.tokens < 1) return { kind: 'flood', rate: this.limits.publishPerSecond };
    this.tokens -= 1;
    return undefined;
  }
}

/**
 * The socket as the broker sees it: what the client sends passes the scanner first; a violation
 * destroys the socket (the client sees its connection closed, as from any broker that refuses it).
 */
export class GuardedConnection extends Duplex {
  private readonly scanner: PacketScanner;

  constructor(
    private readonly socket: net.Socket,
    limits: GuardLimits,
    onViolation: (v: Violation) => void,
  ) {
    super({ allowHalfOpen: false });
    this.scanner = new PacketScanner(limits);
    socket.on('data', (chunk: Buffer) => {
      const violation = this.scanner.scan(chunk);
      if (violation) {
        onViolation(violation);
        socket.destroy();
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => this.push(null));
    socket.once('close', () => this.destroy());
    socket.on('error', (err) => this.destroy(err));
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return callback();
    // Done as soon as the socket took it (waiting for the flush would leave the broker's next
    // writes buffered here, and lost when it closes the connection right after: a CONNACK
    // refusing a client is written in pieces, then the connection is closed).
    if (this.socket.write(chunk)) callback();
    else this.socket.once('drain', () => callback());
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.socket.end(() => callback());
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // The broker closes a refused client right after its CONNACK: let that reach the client
    // (over TLS it is still being encrypted), then make sure the socket goes.
    if (!err && !this.socket.destroyed && this.socket.writable) {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else this.socket.destroy();
    callback(err);
  }
}
