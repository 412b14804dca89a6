/**
 * The playground's way into the mesh: an app like any other (mesh/client.ts), connected to this
 * agent's own mesh port, so a picture dropped in the browser travels as an app's request would
 * (dispatcher, any board that serves the model). On a mesh with credentials it needs an app
 * token of the mesh (`dashboardToken`); without one it answers KZ_ERR_CONFIG and the rest of the
 * dashboard works. Connected at the first request, kept open, closed with the dashboard.
 */
import { KizunaClient, type InferResult } from '../../mesh/client.js';
import { KizunaError } from '../../mesh/errors.js';
import { tokenSubject } from '../../mesh/tokens.js';
import type { Logger } from '../log.js';

export interface PlaygroundOptions {
  /** This agent's mesh port (any board's works). */
  url: () => string;
  mesh: string;
  node: string;
  /** The mesh has credentials: an app token is needed. */
  credentials: boolean;
  token?: string;
  /** The mesh CA (PEM), for mqtts:// */
  ca?: string;
  /** Requests in flight at once; more get KZ_ERR_OVERLOADED. */
  maxInFlight: number;
  timeoutMs: number;
  log: Logger;
}

export interface PlaygroundAnswer {
  ok: true;
  model: string;
  version: string;
  agent: string;
  answers: unknown[];
  timings: unknown;
  round_trip_ms: number;
}

export class Playground {
  private client?: Promise<KizunaClient>;
  private inFlight = 0;
  private closed = false;

  constructor(private readonly o: PlaygroundOptions) {}

  /** Whether it can run inferences (false: a mesh with credentials and no dashboard token). */
  get available(): boolean {
    return !this.o.credentials || this.o.token !== undefined;
  }

  async infer(model: string, image: Buffer): Promise<PlaygroundAnswer> {
    if (!this.available) {
      throw new KizunaError('KZ_ERR_CONFIG', 'this mesh has credentials and the dashboard has no app token: start the agent with --dashboard-token (make one with `kizuna token app dashboard`)');
    }
    if (this.closed) throw new KizunaError('KZ_ERR_SHUTTING_DOWN', 'the dashboard is stopping');
    if (this.inFlight >= this.o.maxInFlight) throw new KizunaError('KZ_ERR_OVERLOADED', `${this.o.maxInFlight} playground requests are running; try again`);
    this.inFlight++;
    try {
      const client = await this.connect();
      const t0 = performance.now();
      // Options make it base64 JSON: top 5 classes, and no raw outputs (a detector's grid is 1.6 MB).
      const r: InferResult = await client.infer(model, image, { topK: 5, rawOutputs: false, timeoutMs: this.o.timeoutMs });
      return { ok: true, model: r.model, version: r.version, agent: r.agent, answers: r.answers ?? [], timings: r.timings, round_trip_ms: Math.round((performance.now() - t0) * 100) / 100 };
    } finally {
      this.inFlight--;
    }
  }

  private connect(): Promise<KizunaClient> {
    if (!this.client) {
      const { o } = this;
      const client = (o.token && tokenSubject(o.token)) || `dashboard-${o.node}`;
      this.client = KizunaClient.connect({
        url: o.url(),
        mesh: o.mesh,
        client,
        timeoutMs: o.timeoutMs,
        ...(o.token ? { token: o.token } : {}),
        ...(o.ca ? { ca: o.ca } : {}),
      });
      this.client.then(
        () => o.log.debug(`playground connected to the mesh as app ${client}`),
        (err: Error) => {
          // The next request tries again.
          o.log.warn(`playground could not connect to the mesh: ${err.message}`);
          this.client = undefined;
        },
      );
    }
    return this.client;
  }

  async stop(): Promise<void> {
    this.closed = true;
    const client = await this.client?.catch(() => undefined);
    await client?.close().catch(() => undefined);
  }
}
