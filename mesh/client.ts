/**
 * The app client: what a local Node app uses to ask the mesh for inferences.
 *
 *   const kz = await KizunaClient.connect({ url: 'mqtt://pi.local:1883' });
 *   const r = await kz.infer('digits', pngBytes);           // raw image bytes
 *   const r2 = await kz.infer('digits', { input: tensor }); // tensors
 *
 * Each call gets a fresh request id; the reply comes back on this client's reply topic.
 * A single image with no options travels as raw bytes; with options (topK...) or in a batch it
 * travels as base64 JSON. Tensors travel as a KZB1 frame unless `format: 'json'`.
 */
import { randomBytes } from 'node:crypto';
import { KizunaError } from './errors.js';
import { decodeReply, encodeImageRequest, encodeTensorRequest, type EncodeOptions, type InferenceResult } from './messages.js';
import { Transport } from './mqtt.js';
import { runBatch, type BatchItem, type BatchOptions } from './batch.js';
import { JobRun, type JobChannel, type JobInput, type JobRunOptions } from './job-client.js';
import type { Tensor } from './tensor.js';
import { assertSegment, topics } from './topics.js';
import { tokenSubject } from './tokens.js';

export interface ClientOptions {
  /** Any agent's address works; give several so the client can reach the mesh if that board dies. */
  url: string | string[];
  mesh?: string;
  /** The client name in request and reply topics (random when absent). */
  client?: string;
  timeoutMs?: number;
  /** Send an unanswered request again (same id) after this long (default 2000 ms). */
  resendMs?: number;
  /** MQTT keepalive: a dead broker is noticed after about 1.5 times this (default 2 s). */
  keepaliveSeconds?: number;
  /** Give up on one address after this long and try the next (default 2000 ms). */
  connectTimeoutMs?: number;
  /** The app token of a mesh with credentials (`kizuna token app NAME`); its name is the client name. */
  token?: string;
  /**
   * The mesh CA certificate (PEM; ca.pem of the mesh) for mqtts:// and wss:// URLs
   * (wss://host:1883/mqtt): the client then talks only to a broker that is a board of this mesh.
   */
  ca?: string;
}

export interface InferOptions extends EncodeOptions {
  /** Send tensors as JSON instead of a KZB1 frame. */
  format?: 'json' | 'binary';
  timeoutMs?: number;
  id?: string;
}

export type InferInput = Uint8Array | Uint8Array[] | Record<string, Tensor>;
export type InferResult = InferenceResult & { outputs: Record<string, Tensor> };

interface Pending {
  topic: string;
  payload: Buffer;
  sentAt: number;
  resolve: (r: InferResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class KizunaClient {
  private readonly pending = new Map<string, Pending>();
  private readonly jobListeners = new Map<string, Parameters<JobChannel['listen']>[1]>();
  private seq = 0;
  private readonly prefix = randomBytes(4).toString('hex');
  private readonly resendTimer: NodeJS.Timeout;

  private constructor(
    private readonly transport: Transport,
    readonly mesh: string,
    readonly client: string,
    private readonly timeoutMs: number,
    private readonly resendMs: number,
  ) {
    const jobPrefix = topics.jobResults(mesh, client, '');
    transport.onMessage((topic, payload) => {
      if (topic.startsWith(jobPrefix)) this.jobListeners.get(topic.slice(jobPrefix.length))?.message(payload);
      else this.onReply(topic, payload);
    });
    // After a reconnection (a broker failover), every unanswered request goes out again with its
    // id: the mesh answers each id once, and this client keeps only the first reply. Jobs ask
    // for the results they lack.
    transport.on('up', () => {
      this.resend(0);
      for (const l of this.jobListeners.values()) l.reconnected();
    });
    this.resendTimer = setInterval(() => this.resend(this.resendMs), Math.max(50, resendMs / 2));
  }

  static async connect(options: ClientOptions): Promise<KizunaClient> {
    const mesh = options.mesh ?? 'home';
    // With a token the app is who the token names: the broker serves it under that name only.
    const client = options.client ?? (options.token && tokenSubject(options.token)) ?? `app-${randomBytes(4).toString('hex')}`;
    assertSegment('mesh', mesh);
    assertSegment('client', client);
    const urls = Array.isArray(options.url) ? options.url : [options.url];
    // Stay with the address that worked: boards drop the connections they pipe when the mesh
    // changes broker and accept again at once. Move to the next address only when one fails.
    let current = 0;
    let transport: Transport | undefined;
    let lastError: unknown;
    for (let tried = 0; tried < urls.length && !transport; tried++, current = (current + 1) % urls.length) {
      try {
        transport = await Transport.connect({
          url: () => urls[current],
          // After a loss the other boards are tried too, 300 ms apart: the first to accept wins.
          alternatives: () => urls,
          clientId: `kizuna-${client}`,
          ...(options.token ? { username: client, password: options.token } : {}),
          ...(options.ca ? { tls: { ca: options.ca, mesh } } : {}),
          keepaliveSeconds: options.keepaliveSeconds ?? 2,
          connectTimeoutMs: options.connectTimeoutMs ?? 2000,
        });
      } catch (err) {
        lastError = err;
      }
    }
    if (!transport) throw lastError;
    const next = () => (current = (current + 1) % urls.length);
    transport.on('retry-failed', next);
    transport.on('up', (url: string) => (current = Math.max(0, urls.indexOf(url))));
    // A board that went silent (keepalive) is likely gone: do not knock on it first.
    transport.on('down', (loss: { silent: boolean }) => loss.silent && next());
    await transport.subscribe(topics.repliesTo(mesh, client), 1);
    await transport.subscribe(topics.jobResultsTo(mesh, client), 1);
    return new KizunaClient(transport, mesh, client, options.timeoutMs ?? 30_000, options.resendMs ?? 2_000);
  }

  async infer(model: string, input: InferInput, options: InferOptions = {}): Promise<InferResult> {
    const hasOptions = options.topK !== undefined || options.version !== undefined || options.rawOutputs !== undefined || options.reply !== undefined;
    let payload: Buffer;
    if (input instanceof Uint8Array) payload = hasOptions ? encodeImageRequest([input], options) : Buffer.from(input);
    else if (Array.isArray(input)) payload = encodeImageRequest(input, options);
    else payload = encodeTensorRequest(input, options, options.format ?? 'binary');
    return this.send(model, payload, options);
  }

  /** Publishes a ready-made request payload (JSON, KZB1 or image bytes) and waits for its reply. */
  async send(model: string, payload: Buffer, options: { id?: string; timeoutMs?: number } = {}): Promise<InferResult> {
    const id = options.id ?? `${this.prefix}-${++this.seq}`;
    const topic = topics.request(this.mesh, model, this.client, id);
    if (this.pending.has(id)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `request id ${id} is already in flight`);
    const answer = new Promise<InferResult>((resolve, reject) => {
      const ms = options.timeoutMs ?? this.timeoutMs;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new KizunaError('KZ_ERR_TIMEOUT', `no reply to ${model} request ${id} within ${ms} ms`));
      }, ms);
      this.pending.set(id, { topic, payload, sentAt: performance.now(), resolve, reject, timer });
    });
    this.transport.publish(topic, payload, { qos: 1 }).catch((err: Error) => this.settle(id)?.reject(err));
    return answer;
  }

  /** Sends again the requests unanswered for `olderThanMs` (the same id: never a second answer). */
  private resend(olderThanMs: number): void {
    if (!this.transport.connected) return; // the reconnection sends them all again anyway
    const now = performance.now();
    for (const p of this.pending.values()) {
      if (now - p.sentAt < olderThanMs) continue;
      p.sentAt = now;
      this.transport.publish(p.topic, p.payload, { qos: 1 }).catch(() => undefined);
    }
  }

  private settle(id: string) {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  private onReply(topic: string, payload: Buffer): void {
    const id = topic.slice(topic.lastIndexOf('/') + 1);
    const p = this.settle(id);
    if (!p) return; // a duplicate or a late reply: each request resolves once
    try {
      const reply = decodeReply(payload);
      if (reply.ok) p.resolve(reply);
      else p.reject(new KizunaError(reply.error.code, reply.error.message));
    } catch (err) {
      p.reject(err as Error);
    }
  }

  /**
   * A job: many inputs in one message, split by the mesh across its boards by their speed. Iterate
   * the returned run for each input's result (or error) exactly once, in input order. It starts
   * at once; see job-client.ts.
   */
  job(model: string, inputs: readonly JobInput[], options: JobRunOptions & { id?: string } = {}): JobRun {
    const id = options.id ?? `${this.prefix}-j${++this.seq}`;
    const topic = topics.job(this.mesh, model, this.client, id);
    if (this.jobListeners.has(id)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `job id ${id} is already running`);
    const channel: JobChannel = {
      publish: (t, payload) => void this.transport.publish(t, payload, { qos: 1 }).catch(() => undefined),
      listen: (jobId, on) => {
        this.jobListeners.set(jobId, on);
        return () => this.jobListeners.delete(jobId);
      },
    };
    return new JobRun(channel, topic, id, inputs, { timeoutMs: this.timeoutMs, ...options });
  }

  /**
   * Any number of inputs, loaded lazily and sent as consecutive jobs: yields each input's result
   * (or error) exactly once, in input order. See batch.ts.
   */
  batch(model: string, inputs: readonly (() => Promise<InferInput> | InferInput)[], options: BatchOptions = {}): AsyncGenerator<BatchItem> {
    return runBatch(this, model, inputs, options);
  }

  async close(): Promise<void> {
    clearInterval(this.resendTimer);
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(new KizunaError('KZ_ERR_SHUTTING_DOWN', 'client closed'));
    for (const l of [...this.jobListeners.values()]) l.closed();
    await this.transport.close();
  }
}
