/**
 * A Server-Sent Events reader for tests and benchmarks (the dashboard's /events): resolves each
 * event as it arrives, and waits, bounded, for one that satisfies a predicate.
 */
import http from 'node:http';
import { once } from 'node:events';

export interface SseEvent {
  event: string;
  data: unknown;
  /** When it arrived (Date.now()). */
  at: number;
}

export class SseReader {
  readonly events: SseEvent[] = [];
  private waiters = new Set<() => void>();
  private buffer = '';

  private constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    private readonly req: http.ClientRequest,
    /** The body of a refused request (JSON), when status is not 200. */
    readonly body: string,
  ) {}

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
    const req = http.get(url, { headers: { Accept: 'text/event-stream', ...headers }, agent: false });
    const [res] = (await once(req, 'response')) as [http.IncomingMessage];
    if (res.statusCode !== 200) {
      let body = '';
      for await (const chunk of res) body += chunk;
      return new SseReader(res.statusCode!, res.headers, req, body);
    }
    const reader = new SseReader(200, res.headers, req, '');
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => reader.feed(chunk));
    res.on('error', () => undefined);
    return reader;
  }

  private feed(chunk: string): void {
    this.buffer += chunk;
    let end: number;
    while ((end = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (!data.length) continue;
      this.events.push({ event, data: JSON.parse(data.join('\n')), at: Date.now() });
      for (const w of [...this.waiters]) w();
    }
  }

  /** The first event (already received or to come) that satisfies `p`; rejects after `ms`. */
  until(p: (e: SseEvent) => boolean, ms: number, what: string): Promise<SseEvent> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.find(p);
        if (!found) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no event within ${ms} ms: ${what}; got ${this.events.map((e) => e.event).join(', ')}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }

  close(): void {
    this.req.destroy();
  }
}

/** A board of the dashboard's stream, as the page receives it. */
export interface StreamBoard {
  node: string;
  since: number | null;
  status: { node: string; online: boolean; role?: string; draining?: boolean };
  health?: unknown;
}

/** The boards of the latest snapshot with every later 'board' event applied. */
export function boardsOf(reader: SseReader): Map<string, StreamBoard> {
  const boards = new Map<string, StreamBoard>();
  for (const e of reader.events) {
    if (e.event === 'snapshot') {
      boards.clear();
      for (const b of (e.data as { boards: StreamBoard[] }).boards) boards.set(b.node, b);
    } else if (e.event === 'board') {
      const b = (e.data as { board: StreamBoard & { removed?: true } }).board;
      if (b.removed) boards.delete(b.node);
      else boards.set(b.node, b);
    }
  }
  return boards;
}
