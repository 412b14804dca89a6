/**
 * MQTT over WebSocket on the mesh port, for browsers and apps (ws://, or wss:// once the listener
 * has decrypted TLS). The listener hands over a stream that starts with an HTTP request; a
 * WebSocket upgrade on /mqtt (or /) with subprotocol mqtt becomes a binary byte stream for the
 * broker; any other request gets a short 4xx and is closed. The only module that touches `ws`.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, WebSocketServer } from 'ws';

const PATHS = new Set(['/mqtt', '/']);
/** mqtt.js and browsers' libraries send `mqtt`; MQTT 3.1 clients send `mqttv3.1`. */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'];

export interface WebSocketDoorOptions {
  /** Largest WebSocket message, in bytes (ws buffers a whole message before handing it on). */
  maxPayload?: number;
  /** A connection that has not completed its upgrade within this is closed. */
  upgradeTimeoutMs: number;
}

export interface Upgrade {
  /** The connection is a WebSocket now: `mqtt` carries the client's MQTT bytes, both ways. */
  upgraded: (mqtt: Duplex) => void;
  /** A message over maxPayload, or a broken frame: ws closes the connection after this. */
  failed?: (err: Error & { code?: string }) => void;
}

interface Waiting extends Upgrade {
  timer: NodeJS.Timeout;
}

export class WebSocketDoor {
  // Never listens: the listener injects each connection (Node accepts any Duplex there).
  private readonly http = http.createServer((req, res) => refuseRequest(req, res));
  private readonly wss: WebSocketServer;
  private readonly waiting = new WeakMap<Duplex, Waiting>();

  /** Largest WebSocket message taken (ws' own default when none is given). */
  readonly maxPayload: number;

  constructor(private readonly options: WebSocketDoorOptions) {
    this.maxPayload = options.maxPayload ?? 100 * 1024 * 1024;
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      // ws would take the client's first offer: answer with ours (the check below ensures one).
      handleProtocols: (offered) => SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
      maxPayload: this.maxPayload,
    });
    this.http.on('upgrade', (req: http.IncomingMessage, stream: Duplex, head: Buffer) => this.upgrade(req, stream, head));
  }

  /** Serves `stream`, which starts with the client's HTTP request. */
  serve(stream: Duplex, upgrade: Upgrade): void {
    // The HTTP server's own timeouts need it to listen: a client that never upgrades (or keeps a
    // refused connection open) is cut here.
    const timer = setTimeout(() => stream.destroy(), this.options.upgradeTimeoutMs);
    stream.once('close', () => clearTimeout(timer));
    this.waiting.set(stream, { ...upgrade, timer });
    this.http.emit('connection', stream);
  }

  private upgrade(req: http.IncomingMessage, stream: Duplex, head: Buffer): void {
    const waiting = this.waiting.get(stream);
    this.waiting.delete(stream);
    if (!waiting) return void stream.destroy();
    if (!PATHS.has(pathOf(req))) return refuseUpgrade(stream, 404, `no WebSocket here: MQTT over WebSocket is at /mqtt\n`);
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!SUBPROTOCOLS.some((p) => offered.includes(p))) return refuseUpgrade(stream, 400, `the WebSocket subprotocol must be mqtt (or mqttv3.1)\n`);
    this.wss.handleUpgrade(req, stream, head, (ws) => {
      clearTimeout(waiting.timer);
      // Not for a stream the broker's side already destroyed (the guard cut it off; ws still
      // parsed what had come). Listening before the stream does, so it is not destroyed by this error.
      ws.on('error', (err) => !mqtt.destroyed && waiting.failed?.(err));
      const mqtt = createWebSocketStream(ws);
      waiting.upgraded(mqtt);
    });
  }
}

const pathOf = (req: http.IncomingMessage): string => (req.url ?? '').split('?')[0]!;

/** A plain HTTP request (a browser opening the address): say what this port is, then close. */
function refuseRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const [status, text] = PATHS.has(pathOf(req))
    ? [400, 'this is MQTT over WebSocket: connect with a WebSocket client, subprotocol mqtt\n']
    : [404, 'not found: MQTT over WebSocket is at /mqtt\n'];
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
  res.end(text);
}

function refuseUpgrade(stream: Duplex, status: number, text: string): void {
  const body = Buffer.from(text);
  stream.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${text}`,
  );
}
