/**
 * The dashboard's Server-Sent Events: GET /events streams a snapshot of the boards, then each
 * change ('board') and each health report ('health') as this agent receives them, with the agent's
 * clock (`now`) so the page can show ages whatever its own clock says. Streams are capped; a
 * browser that stops reading is cut off (EventSource reconnects and gets a fresh snapshot).
 */
import type http from 'node:http';
import type { BoardView, Feed } from './feed.js';

/** A stream holding this many unsent bytes is a reader that stopped reading. */
const MAX_BACKLOG = 1 << 20;

export interface SseOptions {
  maxStreams: number;
  heartbeatMs: number;
  now?: () => number;
}

export class SseHub {
  private readonly streams = new Set<http.ServerResponse>();
  private heartbeat?: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly onBoard = (b: BoardView | { node: string; removed: true }) => this.broadcast('board', { now: this.now(), board: b });
  private readonly onHealth = (node: string, health: unknown, at: number) => this.broadcast('health', { now: this.now(), node, health, at });

  constructor(
    private readonly feed: Feed,
    private readonly meta: { mesh: string; node: string },
    private readonly options: SseOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.streams.size;
  }

  start(): void {
    this.feed.on('board', this.onBoard);
    this.feed.on('health', this.onHealth);
    // A comment now and then keeps proxies and NAT from dropping an idle stream.
    this.heartbeat = setInterval(() => this.broadcastRaw(': keepalive\n\n'), this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Takes the response as a stream; false (nothing written) when the cap is reached. */
  open(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (this.streams.size >= this.options.maxStreams) return false;
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    req.socket.setNoDelay(true);
    req.socket.setTimeout(0);
    this.streams.add(res);
    res.once('close', () => this.streams.delete(res));
    res.write('retry: 1000\n\n');
    this.write(res, 'snapshot', { now: this.now(), mesh: this.meta.mesh, self: this.meta.node, boards: this.feed.all() });
    return true;
  }

  stop(): void {
    clearInterval(this.heartbeat);
    this.feed.off('board', this.onBoard);
    this.feed.off('health', this.onHealth);
    for (const res of this.streams) res.end();
    this.streams.clear();
  }

  private broadcast(event: string, data: unknown): void {
    if (!this.streams.size) return;
    this.broadcastRaw(frame(event, data));
  }

  private broadcastRaw(text: string): void {
    for (const res of this.streams) this.writeRaw(res, text);
  }

  private write(res: http.ServerResponse, event: string, data: unknown): void {
    this.writeRaw(res, frame(event, data));
  }

  private writeRaw(res: http.ServerResponse, text: string): void {
    if (res.writableLength > MAX_BACKLOG) {
      this.streams.delete(res);
      res.destroy();
      return;
    }
    res.write(text);
  }
}

/** One SSE message; JSON has no raw newlines, so one data line. */
function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
