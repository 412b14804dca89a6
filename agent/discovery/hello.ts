/**
 * The hello probe: static discovery asks an agent for its advert on the agent's mesh port, the
 * same TCP port as MQTT. An MQTT client's first byte is 0x10 (CONNECT); a hello starts with 'K',
 * so the listener tells them apart by peeking one byte.
 *
 *   prober -> agent: `KZHI\n`
 *   agent -> prober: one line of JSON (the Advert) and `\n`, then the agent closes.
 */
import net from 'node:net';
import { validAdvert, type Advert } from '../advert.js';

export const HELLO = Buffer.from('KZHI\n');
/** An advert is a few hundred bytes; more is not an agent of ours. */
export const MAX_ANSWER = 8 * 1024;
/** How long an agent keeps a hello connection whose prober does not close. */
const ANSWER_LINGER_MS = 5000;

/** True when a connection's first bytes are a hello: the first byte alone decides. */
export function isHello(firstChunk: Buffer): boolean {
  return firstChunk.length > 0 && firstChunk[0] === HELLO[0];
}

/** Answers a hello on an accepted socket and closes it. Whatever the prober sends is ignored. */
export function answerHello(socket: net.Socket, advert: Advert & { view?: unknown }): void {
  // A prober that vanishes mid-answer is not an error worth more than dropping the socket.
  socket.on('error', () => socket.destroy());
  // Drain the rest of the hello: closing with unread input would reset the connection and
  // could throw away the answer before the prober reads it.
  socket.resume();
  socket.setTimeout(ANSWER_LINGER_MS, () => socket.destroy());
  socket.end(JSON.stringify(advert) + '\n');
}

/** Asks host:port for its advert. Rejects on refusal, timeout, an oversized, non-JSON or invalid answer. */
export function probe(host: string, port: number, timeoutMs: number): Promise<Advert> {
  return new Promise<Advert>((resolve, reject) => {
    const where = `${host}:${port}`;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => fail(`no answer from ${where} in ${timeoutMs} ms`), timeoutMs);

    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const fail = (message: string) => settle(() => reject(new Error(`hello: ${message}`)));
    const answer = (line: Buffer) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line.toString('utf8'));
      } catch {
        return fail(`${where} answered something that is not JSON`);
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail(`${where} answered a non-object`);
      const advert = parsed as Partial<Record<keyof Advert, unknown>>;
      if (Array.isArray(advert.addresses) && advert.addresses.length === 0) advert.addresses = [host];
      if (!validAdvert(advert)) return fail(`${where} answered an invalid advert`);
      settle(() => resolve(advert));
    };

    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(HELLO));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(0x0a);
      if (nl >= 0 && nl <= MAX_ANSWER) return answer(all.subarray(0, nl));
      if (size > MAX_ANSWER) fail(`${where} answered more than ${MAX_ANSWER} bytes`);
    });
    // An answer without its newline still counts when the agent closed right after it.
    socket.on('end', () => (size > 0 ? answer(Buffer.concat(chunks)) : fail(`${where} closed without answering`)));
    socket.on('error', (err) => fail(`${where}: ${err.message}`));
    socket.on('close', () => fail(`${where} closed without answering`));
  });
}
