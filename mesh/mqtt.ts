/**
 * Transport: the only module that touches mqtt.js. On top of it:
 *  - TCP_NODELAY on every connection (FIELD-NOTES: the Nagle trap costs 40-80 ms a round trip);
 *  - reconnection with capped exponential backoff and jitter (mqtt.js only has a fixed period, so
 *    after a broker change every board would reconnect at the same instant), to a target that may
 *    change between attempts (the mesh's broker after a failover);
 *  - subscriptions restored and unacknowledged QoS 1 publishes sent again after a reconnection.
 * Each connection is a fresh mqtt.js client with its own reconnection turned off: the target can
 * change and nothing of a dead connection lingers.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Socket } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { parseIdentity } from './x509.js';
import { EventEmitter } from 'node:events';
import { KizunaError } from './errors.js';
import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from './backoff.js';

export interface TransportOptions {
  /** The broker to connect to; a function is asked again before every attempt. */
  url: string | (() => string | undefined);
  /**
   * Other addresses of the same mesh, tried alongside when `url` has not answered within
   * `staggerMs` (any board's port reaches the mesh): the first to accept wins.
   */
  alternatives?: () => string[];
  staggerMs?: number;
  clientId?: string;
  /** MQTT credentials: a mesh token as the password (mesh/tokens.ts). */
  username?: string;
  password?: string;
  /**
   * For mqtts:// and wss:// URLs of a mesh with credentials: the mesh CA certificate (PEM). The
   * broker must show a board certificate of `mesh` signed by it (the host name does not matter:
   * boards move).
   */
  tls?: { ca: string; mesh: string };
  keepaliveSeconds?: number;
  connectTimeoutMs?: number;
  /** Reconnect after a loss (default true). The first connection always fails fast. */
  reconnect?: boolean;
  backoff?: Backoff;
  random?: () => number;
  /** The last will; a function is asked again for every connection (its payload may change). */
  will?: Will | (() => Will);
}

export interface Will {
  topic: string;
  payload: Buffer | string;
  qos: 0 | 1;
  retain: boolean;
}

/** `retained` is true when the broker replays a retained message to a new subscription. */
export type MessageHandler = (topic: string, payload: Buffer, retained: boolean) => void;

interface Outgoing {
  topic: string;
  payload: Buffer | string;
  qos: 0 | 1;
  retain: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class Transport extends EventEmitter {
  private readonly handlers = new Set<MessageHandler>();
  /** Filter -> QoS and how many users asked for it (two parts of an agent may share a filter). */
  private readonly subscriptions = new Map<string, { qos: 0 | 1; users: number }>();
  /** Publishes waiting for a connection, and those sent but not yet acknowledged. */
  private readonly outbox: Outgoing[] = [];
  private readonly unacked = new Set<Outgoing>();
  private client?: MqttClient;
  private attempt = 0;
  private retryTimer?: NodeJS.Timeout;
  /** Connection attempts in progress, ended at once by close(). */
  private readonly attempts = new Set<MqttClient>();
  private closing = false;
  private silentLoss = false;

  private constructor(private readonly options: TransportOptions) {
    super();
  }

  /** Connects once (rejects with the reason if that fails), then keeps the connection up. */
  static async connect(options: TransportOptions): Promise<Transport> {
    const t = new Transport(options);
    await t.open();
    return t;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** The URL of the current connection, if any. */
  get url(): string | undefined {
    return this.connected ? this.currentUrl : undefined;
  }
  private currentUrl?: string;

  private target(): string | undefined {
    return typeof this.options.url === 'string' ? this.options.url : this.options.url();
  }

  private async open(): Promise<void> {
    const url = this.target();
    if (!url) throw new KizunaError('KZ_ERR_CONFIG', 'no broker to connect to');
    // allowRetries false: a connection closed before its CONNACK rejects (by default mqtt.js waits
    // for a reconnection that reconnectPeriod 0 never makes, so the promise would never settle).
    const client = await mqtt.connectAsync(url, this.clientOptions(), false);
    this.attach(client, url);
  }

  private clientOptions(): IClientOptions {
    const o = this.options;
    return {
      protocolVersion: 4, // MQTT 3.1.1: what aedes and every broker speak
      clientId: o.clientId ?? `kizuna-${Math.random().toString(16).slice(2, 10)}`,
      keepalive: o.keepaliveSeconds ?? 30,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      reconnectPeriod: 0,
      clean: true,
      // mqtt.js hands wss only some TLS options (not checkServerIdentity): give ws all of them (ws
      // passes them to tls.connect; its types still describe an old checkServerIdentity of its own).
      ...(o.tls ? { ...meshTls(o.tls), wsOptions: meshTls(o.tls) as IClientOptions['wsOptions'] } : {}),
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(o.will ? { will: typeof o.will === 'function' ? o.will() : o.will } : {}),
    };
  }

  private attach(client: MqttClient, url: string): void {
    this.client = client;
    this.currentUrl = url;
    this.attempt = 0;
    (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
    client.on('message', (topic, payload, packet) => {
      for (const h of this.handlers) h(topic, payload, packet.retain);
    });
    client.on('error', (err) => {
      // mqtt.js reports a silent peer this way just before the close: the board is likely gone.
      if (/keepalive timeout/i.test(err.message)) this.silentLoss = true;
      this.warn(err);
    });
    client.once('close', () => this.onClose(client));
    if (this.subscriptions.size) {
      const topics = Object.fromEntries([...this.subscriptions].map(([t, { qos }]) => [t, { qos }]));
      client.subscribe(topics, (err) => err && this.warn(err));
    }
    const waiting = this.outbox.splice(0);
    for (const out of waiting) this.send(out);
    this.emit('up', url);
  }

  private onClose(client: MqttClient): void {
    if (this.client !== client) return;
    this.client = undefined;
    client.removeAllListeners('message');
    client.end(true);
    // What the dead connection had not acknowledged goes out again on the next one.
    this.outbox.unshift(...this.unacked);
    this.unacked.clear();
    if (this.closing) return;
    const silent = this.silentLoss;
    this.silentLoss = false;
    this.emit('down', { silent });
    if (this.options.reconnect === false) {
      this.failPending(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'connection to the broker lost'));
      return;
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const delay = backoffDelay(this.attempt++, this.options.backoff ?? DEFAULT_BACKOFF, this.options.random ?? Math.random);
    this.retryTimer = setTimeout(() => void this.retry(), delay);
  }

  private async retry(): Promise<void> {
    this.retryTimer = undefined;
    if (this.closing) return;
    const url = this.target();
    if (!url) return this.scheduleRetry();
    const urls = [url, ...(this.options.alternatives?.() ?? []).filter((u) => u !== url)];
    const won = await this.race(urls);
    if (won && !this.closing) return this.attach(won.client, won.url);
    if (won) won.client.end(true);
    if (!this.closing) {
      this.emit('retry-failed', url);
      this.scheduleRetry();
    }
  }

  /**
   * Connects to the first of `urls` that accepts: the first at once, each next one `staggerMs`
   * later or as soon as an earlier one fails (a silent board must not hold the client up).
   */
  private race(urls: string[]): Promise<{ client: MqttClient; url: string } | undefined> {
    return new Promise((resolve) => {
      let started = 0;
      let failed = 0;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const live = new Set<MqttClient>();
      const drop = (client: MqttClient) => {
        live.delete(client);
        this.attempts.delete(client);
        // (mqtt.js's own 'close' listener clears its CONNACK timer: keep it, or the timer holds the process.)
        client.on('error', () => undefined);
        client.end(true);
      };
      const startNext = () => {
        clearTimeout(timer);
        if (done || this.closing || started >= urls.length) return;
        const url = urls[started++]!;
        const client = mqtt.connect(url, this.clientOptions());
        live.add(client);
        this.attempts.add(client);
        client.once('connect', () => {
          if (done) return drop(client);
          done = true;
          clearTimeout(timer);
          live.delete(client);
          this.attempts.delete(client);
          for (const other of [...live]) drop(other);
          resolve({ client, url });
        });
        const fail = () => {
          if (done || !live.has(client)) return;
          drop(client);
          if (++failed === urls.length) {
            done = true;
            resolve(undefined);
          } else startNext();
        };
        client.once('close', fail);
        client.once('error', fail);
        if (started < urls.length) timer = setTimeout(startNext, this.options.staggerMs ?? 300);
      };
      startNext();
    });
  }


  /** Connection trouble is reported as 'warning' events: the transport itself recovers. */
  private warn(err: Error): void {
    if (this.listenerCount('warning')) this.emit('warning', err);
  }

  /** Drops the current connection and reconnects at once (the broker changed). */
  reconnectNow(): void {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.attempt = 0;
      void this.retry();
    } else {
      this.client?.stream.destroy();
    }
  }

  onMessage(handler: MessageHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  onConnectionChange(listener: (up: boolean) => void): void {
    this.on('up', () => listener(true));
    this.on('down', () => listener(false));
  }

  /** Subscribes now if connected, and again after every reconnection. */
  async subscribe(topic: string | string[], qos: 0 | 1 = 1): Promise<void> {
    const list = Array.isArray(topic) ? topic : [topic];
    for (const t of list) this.subscriptions.set(t, { qos, users: (this.subscriptions.get(t)?.users ?? 0) + 1 });
    if (!this.client?.connected) return;
    const granted = await this.client.subscribeAsync(list, { qos });
    const refused = granted.filter((g) => g.qos === 128);
    if (refused.length) throw new Error(`subscription refused: ${refused.map((g) => g.topic).join(', ')}`);
  }

  async unsubscribe(topic: string | string[]): Promise<void> {
    const last: string[] = [];
    for (const t of Array.isArray(topic) ? topic : [topic]) {
      const s = this.subscriptions.get(t);
      if (!s) continue;
      if (--s.users > 0) continue;
      this.subscriptions.delete(t);
      last.push(t);
    }
    if (last.length && this.client?.connected) await this.client.unsubscribeAsync(last);
  }

  /**
   * Resolves when a broker has the message (PUBACK for QoS 1). While disconnected the message
   * waits; one sent on a connection that dies unacknowledged is sent again (at least once).
   */
  publish(topic: string, payload: Buffer | string, options: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    if (this.closing) return Promise.reject(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'transport closed'));
    return new Promise<void>((resolve, reject) => {
      const out = { topic, payload, qos: options.qos ?? 1, retain: options.retain ?? false, resolve, reject };
      if (this.client?.connected) this.send(out);
      else this.outbox.push(out);
    });
  }

  private send(out: Outgoing): void {
    const client = this.client!;
    this.unacked.add(out);
    client.publish(out.topic, out.payload, { qos: out.qos, retain: out.retain }, (err) => {
      if (!this.unacked.delete(out)) return; // already moved back to the outbox by a close
      if (!err) return out.resolve();
      // mqtt.js fails what was in flight when the connection dies: send it again on the next one.
      if (this.closing || this.options.reconnect === false) out.reject(err);
      else this.outbox.push(out);
    });
  }

  private failPending(err: Error): void {
    for (const out of this.outbox.splice(0)) out.reject(err);
  }

  /** Closes after in-flight messages are acknowledged (unless `force`); queued ones fail. */
  async close(force = false): Promise<void> {
    this.closing = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const attempt of this.attempts) attempt.end(true);
    this.attempts.clear();
    this.handlers.clear();
    const client = this.client;
    this.client = undefined;
    this.failPending(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'transport closed'));
    if (client) await client.endAsync(force);
    for (const out of this.unacked) out.reject(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'transport closed'));
    this.unacked.clear();
  }
}

/** TLS options that accept a broker only if the mesh CA signed its board certificate for `mesh`. */
export function meshTls(t: { ca: string; mesh: string }): { ca: string; rejectUnauthorized: true; checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined } {
  return {
    ca: t.ca,
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      const id = parseIdentity(cert);
      if (id?.mesh === t.mesh && id.kind === 'board') return undefined;
      // With Node's code for a name mismatch: mqtt.js reports a wss stream's error only if it has a code.
      return Object.assign(new Error(`the broker's certificate is not a board of mesh ${t.mesh}`), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    },
  };
}
