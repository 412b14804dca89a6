/**
 * The web dashboard: a small HTTP server on the agent (opt-in, `--dashboard-port`), Node's http
 * only. It serves a fixed list of files, streams the mesh as this agent sees it to the browser by
 * Server-Sent Events (so the browser needs neither MQTT nor the mesh CA), and runs the
 * playground's inferences through the mesh as an app would.
 *
 *   GET  /, /index.html, /app.js, /charts.js, /dom.js, /playground.js, /app.css, /favicon.svg   the page
 *   GET  /events                  SSE: 'snapshot', then 'board' and 'health' (login)
 *   GET  /api/session             { login_required, authenticated, playground }
 *   POST /api/login               {"token": "..."} -> HttpOnly session cookie
 *   POST /api/logout
 *   POST /api/infer?model=NAME    the image's bytes (image/png, jpeg, webp, gif, tiff) (login)
 *
 * Every error is JSON `{code, message}` with the mesh's stable codes. No CORS: POSTs from another
 * origin are refused, and every answer carries a same-origin CSP, nosniff and frame-ancestors none.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Roster } from '../../mesh/roster.js';
import { asKizunaError, KizunaError } from '../../mesh/errors.js';
import { sniffImage } from '../../mesh/image.js';
import { isSegment } from '../../mesh/topics.js';
import type { Logger } from '../log.js';
import { Gate, sessionCookie, SESSION_COOKIE } from './auth.js';
import { SseHub } from './events.js';
import { Feed } from './feed.js';
import { readBody, securityHeaders, sendError, sendJson, statusOf } from './http.js';
import { Playground } from './playground.js';
import { dashboardPolicy, trustedHost } from './policy.js';
import { followHealth, type MeshMessages } from './health-feed.js';
import { loadPublic, type StaticFile } from './static.js';

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff']);

export interface DashboardOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  mesh: string;
  node: string;
  roster: Roster;
  /** This agent's mesh port, for the playground's app connection. */
  meshUrl: () => string;
  /** The mesh's public key and CA: present on a mesh with credentials. */
  credentials?: { publicKey: KeyObject; ca?: string };
  /** An app token of the mesh (`dashboardToken`). */
  token?: string;
  /** The agent's MQTT connection, for the boards' health reports (none: statuses only). */
  health?: MeshMessages;
  /** Largest image the playground takes. */
  maxImageBytes: number;
  log: Logger;
  /** SSE streams at once (default 16). */
  maxStreams?: number;
  /** Playground requests at once (default 4). */
  maxInFlight?: number;
  /** Where the page's files are (default: the package's). */
  publicDir?: string;
}

export class Dashboard {
  private readonly server: http.Server;
  private stopping?: Promise<void>;
  private unfollow?: () => Promise<void>;

  private constructor(
    private readonly o: DashboardOptions,
    private readonly files: Map<string, StaticFile>,
    /** The boards and their health, as this agent sees them: health reports go in here. */
    readonly feed: Feed,
    private readonly hub: SseHub,
    private readonly gate: Gate,
    private readonly playground: Playground,
  ) {
    this.server = http.createServer({ requestTimeout: 60_000, headersTimeout: 10_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        const e = asKizunaError(err);
        this.o.log.warn(`dashboard: ${req.method} ${req.url?.slice(0, 200)}: ${e.message}`);
        sendError(res, 500, 'KZ_ERR_INTERNAL', e.message);
      });
    });
    this.server.maxConnections = (o.maxStreams ?? 16) + 32;
  }

  static async start(o: DashboardOptions): Promise<Dashboard> {
    const policy = dashboardPolicy({ host: o.host, mesh: o.mesh, ...(o.token !== undefined ? { token: o.token } : {}), ...(o.credentials ? { publicKey: o.credentials.publicKey } : {}) });
    const files = await loadPublic(o.publicDir);
    const feed = new Feed(o.roster);
    const hub = new SseHub(feed, { mesh: o.mesh, node: o.node }, { maxStreams: o.maxStreams ?? 16, heartbeatMs: 15_000 });
    const gate = new Gate(o.token, policy.loginRequired);
    const playground = new Playground({
      url: o.meshUrl, mesh: o.mesh, node: o.node, credentials: o.credentials !== undefined, maxInFlight: o.maxInFlight ?? 4, timeoutMs: 20_000, log: o.log,
      ...(o.token !== undefined ? { token: o.token } : {}), ...(o.credentials?.ca ? { ca: o.credentials.ca } : {}),
    });
    const d = new Dashboard(o, files, feed, hub, gate, playground);
    feed.start();
    hub.start();
    try {
      if (o.health) d.unfollow = await followHealth(o.health, o.mesh, feed);
      d.server.listen(o.port, o.host);
      await Promise.race([once(d.server, 'listening'), once(d.server, 'error').then(([err]) => Promise.reject(err as Error))]).catch((err: Error) => {
        throw new KizunaError('KZ_ERR_CONFIG', `dashboard cannot listen on ${o.host}:${o.port}: ${err.message}`);
      });
    } catch (err) {
      await d.stop();
      throw err;
    }
    const login = policy.loginRequired ? ' (login: the dashboard token)' : '';
    o.log.info(`dashboard on ${d.url}${login}`);
    if (!policy.loginRequired && o.host !== '127.0.0.1' && !o.host.startsWith('127.') && o.host !== '::1' && o.host !== 'localhost') {
      o.log.warn(`open dashboard: anyone who reaches ${o.host}:${d.port} sees the mesh and can use the playground (an open mesh; set --dashboard-token for a login)`);
    }
    if (!playground.available) o.log.warn('dashboard playground off: this mesh has credentials and no --dashboard-token was given');
    return d;
  }

  get port(): number {
    return (this.server.address() as { port: number } | null)?.port ?? 0;
  }

  /** Where a browser on this machine opens it (on 0.0.0.0: loopback). */
  get url(): string {
    const h = this.o.host === '0.0.0.0' ? '127.0.0.1' : this.o.host === '::' ? '::1' : this.o.host;
    return `http://${h.includes(':') ? `[${h}]` : h}:${this.port}/`;
  }

  /** Browsers connected to the event stream now. */
  get streams(): number {
    return this.hub.size;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.unfollow?.();
      this.hub.stop();
      this.feed.stop();
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeAllConnections();
      await closed;
      await this.playground.stop();
    })();
    return this.stopping;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    securityHeaders(res);
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid');
    if (!this.gate.required && !trustedHost(req.headers.host)) {
      return sendError(res, 403, 'KZ_ERR_FORBIDDEN', 'the Host header does not name this machine (use its IP address, localhost or its host name)');
    }
    const file = this.files.get(url.pathname);
    if (file) return this.serveFile(req, res, file);
    switch (url.pathname) {
      case '/events':
        if (!this.method(req, res, 'GET') || !this.allowed(req, res)) return;
        if (!this.hub.open(req, res)) sendError(res, 503, 'KZ_ERR_OVERLOADED', 'too many dashboards are open on this agent; close one');
        return;
      case '/api/session':
        if (!this.method(req, res, 'GET')) return;
        return sendJson(res, 200, { login_required: this.gate.required, authenticated: this.gate.allows(req), playground: this.playground.available });
      case '/api/login':
        return this.login(req, res);
      case '/api/logout':
        if (!this.method(req, res, 'POST') || !this.sameOrigin(req, res)) return;
        this.gate.logout(req);
        res.writeHead(204, { 'Set-Cookie': `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`, 'Cache-Control': 'no-store' }).end();
        return;
      case '/api/infer':
        return this.infer(req, res, url);
      default:
        return sendError(res, 404, 'KZ_ERR_BAD_REQUEST', `no such page: ${url.pathname.slice(0, 100)}`);
    }
  }

  private serveFile(req: http.IncomingMessage, res: http.ServerResponse, file: StaticFile): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') return void sendError(res, 405, 'KZ_ERR_BAD_REQUEST', `${req.method} is not allowed here`, { Allow: 'GET, HEAD' });
    const headers = { 'Content-Type': file.type, 'Cache-Control': 'no-cache', ETag: file.etag };
    if (req.headers['if-none-match'] === file.etag) return void res.writeHead(304, headers).end();
    res.writeHead(200, { ...headers, 'Content-Length': file.body.length });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  }

  private method(req: http.IncomingMessage, res: http.ServerResponse, method: string): boolean {
    if (req.method === method) return true;
    sendError(res, 405, 'KZ_ERR_BAD_REQUEST', `${req.method} is not allowed here`, { Allow: method });
    return false;
  }

  private allowed(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (this.gate.allows(req)) return true;
    sendError(res, 401, 'KZ_ERR_UNAUTHORIZED', 'log in with the dashboard token (an app token of the mesh)');
    return false;
  }

  /** A POST from a page of another origin is refused (there is no CORS). */
  private sameOrigin(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    if ((origin === undefined || origin === `http://${req.headers.host}`) && (site === undefined || site === 'same-origin' || site === 'none')) return true;
    sendError(res, 403, 'KZ_ERR_FORBIDDEN', 'requests from another origin are refused');
    return false;
  }

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!this.method(req, res, 'POST') || !this.sameOrigin(req, res)) return;
    if (!this.gate.required) return sendJson(res, 200, { authenticated: true });
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) return sendError(res, 415, 'KZ_ERR_BAD_REQUEST', 'send {"token": "..."} as application/json');
    let token: unknown;
    try {
      token = (JSON.parse((await readBody(req, 8192)).toString('utf8')) as { token?: unknown }).token;
    } catch (err) {
      if (err instanceof KizunaError) return sendError(res, 413, err.code, err.message, { Connection: 'close' });
      return sendError(res, 400, 'KZ_ERR_MALFORMED', 'the body is not JSON');
    }
    const session = typeof token === 'string' ? this.gate.login(token) : undefined;
    if (!session) return sendError(res, 401, 'KZ_ERR_UNAUTHORIZED', 'that is not the dashboard token');
    sendJson(res, 200, { authenticated: true }, { 'Set-Cookie': sessionCookie(session.id, session.maxAgeS) });
  }

  private async infer(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    if (!this.method(req, res, 'POST') || !this.sameOrigin(req, res) || !this.allowed(req, res)) return;
    const model = url.searchParams.get('model') ?? '';
    if (!isSegment(model)) return sendError(res, 400, 'KZ_ERR_BAD_NAME', 'model= must name one model (1-128 of A-Z a-z 0-9 _ . : -)');
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (!IMAGE_TYPES.has(type)) return sendError(res, 415, 'KZ_ERR_BAD_REQUEST', `send the image's bytes as ${[...IMAGE_TYPES].join(', ')}; got ${JSON.stringify(type.slice(0, 100))}`);
    let image: Buffer;
    try {
      image = await readBody(req, this.o.maxImageBytes);
    } catch (err) {
      const e = asKizunaError(err);
      // The rest of the body is not read: the connection goes.
      return sendError(res, e.code === 'KZ_ERR_TOO_LARGE' ? 413 : 400, e.code, e.message, { Connection: 'close' });
    }
    if (!sniffImage(image)) return sendError(res, 422, 'KZ_ERR_IMAGE_CORRUPT', 'the body is not a JPEG, PNG, WebP, GIF or TIFF image');
    try {
      sendJson(res, 200, await this.playground.infer(model, image));
    } catch (err) {
      const e = asKizunaError(err);
      sendError(res, statusOf(e.code), e.code, e.message);
    }
  }
}
