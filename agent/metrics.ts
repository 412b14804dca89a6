/**
 * The Prometheus endpoint (opt-in, `metricsPort`): `GET /metrics` on a small HTTP server of the
 * agent, in the text exposition format 0.0.4 (agent/metrics/exposition.ts). The figures are read
 * at each scrape from what the agent keeps anyway (agent/metrics/families.ts); every sample has
 * the board's `mesh` and `node` labels. No login: keep it on loopback (`metricsHost`, 127.0.0.1
 * by default) or on a network you trust.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { KizunaError } from '../mesh/errors.js';
import { CONTENT_TYPE, writeExposition, type Family, type Labels } from './metrics/exposition.js';
import type { Logger } from './log.js';

export interface MetricsOptions {
  host: string;
  port: number;
  /** The families, read at each scrape. */
  collect(): Family[];
  /** Labels of every sample (the board's mesh and node). */
  labels: Labels;
  log: Logger;
}

export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    private readonly o: MetricsOptions,
  ) {}

  static async start(o: MetricsOptions): Promise<MetricsServer> {
    const server = http.createServer();
    const m = new MetricsServer(server, o);
    server.on('request', (req, res) => m.handle(req, res));
    server.listen(o.port, o.host);
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err as Error))]).catch((err: Error) => {
      throw new KizunaError('KZ_ERR_CONFIG', `metrics endpoint cannot listen on ${o.host}:${o.port}: ${err.message}`);
    });
    o.log.info(`metrics on ${m.url}`);
    return m;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    const host = this.o.host.includes(':') ? `[${this.o.host}]` : this.o.host;
    return `http://${host}:${this.port}/metrics`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return text(res, 404, 'not found: the metrics are at /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return text(res, 405, 'method not allowed\n');
    }
    let body: string;
    try {
      body = writeExposition(this.o.collect(), this.o.labels);
    } catch (err) {
      this.o.log.error(`metrics: ${(err as Error).message}`);
      return text(res, 500, 'the metrics could not be written\n');
    }
    res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
