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

/** A token bucket: one token per PUBLISH, refilled at `perSecond` up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Publishes a connection may make before it has said who it is (CONNECT is not one). */
export const UNIDENTIFIED_BURST = 20;

/**
 * One allowance per identity, shared by all its connections: a client that is cut off and
 * reconnects at once does not get a fresh burst. Bounded: the least recently used are forgotten.
 */
export class Allowances {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly limits: GuardLimits,
    private readonly now: () => number = () => performance.now(),
    private readonly max = 10_000,
  ) {}

  of(identity: string): TokenBucket {
    let b = this.buckets.get(identity);
    if (b) this.buckets.delete(identity);
    else b = new TokenBucket(this.limits.publishPerSecond, this.limits.publishBurst, this.now);
    this.buckets.set(identity, b);
    while (this.buckets.size > this.max) this.buckets.delete(this.buckets.keys().next().value!);
    return b;
  }
}

/** The byte scanner, separate from the stream so it can be tested alone. */
export class PacketScanner {
  private state: 'type' | 'length' | 'body' = 'type';
  private type = 0;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private left = 0;
  /** The allowance publishes are counted against: the connection's own, then its identity's. */
  bucket: TokenBucket;

  constructor(
    private readonly limits: GuardLimits,
    now: () => number = () => performance.now(),
    bucket?: TokenBucket,
  ) {
    this.bucket = bucket ?? new TokenBucket(limits.publishPerSecond, limits.publishBurst, now);
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

  private spend(): Violation | undefined {
    return this.bucket.take() ? undefined : { kind: 'flood', rate: this.bucket.perSecond };
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
    private readonly allowances?: Allowances,
  ) {
    super({ allowHalfOpen: false });
    // Until the broker knows who this is, a small allowance of its own: a CONNECT followed by a
    // flood in one write spends no one's burst.
    this.scanner = new PacketScanner(limits, undefined, allowances ? new TokenBucket(limits.publishPerSecond, Math.min(limits.publishBurst, UNIDENTIFIED_BURST)) : undefined);
    socket.on('data', (chunk: Buffer) => {
      if (socket.destroyed) return; // TLS may still hand over records it had decrypted: one cut-off, one report
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

  /** The broker authenticated the client: its publishes now count against its identity's allowance. */
  identified(identity: string): void {
    if (this.allowances) this.scanner.bucket = this.allowances.of(identity);
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
