/**
 * The hello probe: static discovery asks an agent for its advert on the agent's mesh port, the
 * same TCP port as MQTT. An MQTT client's first byte is 0x10 (CONNECT); a hello starts with 'K',
 * so the listener tells them apart by peeking one byte.
 *
 *   prober -> agent: `KZHI <nonce>\n` (the nonce: 32 hex digits, fresh per probe; `KZHI\n` also works)
 *   agent -> prober: one line of JSON (the Advert) and `\n`, then the agent closes.
 *
 * On a mesh with credentials the answer also carries `proof` (hello-proof.ts): the board's
 * certificate and its signature over the advert and the nonce. A prober with the mesh CA takes
 * only proven answers: an advert is a hint anyone can send, a proven answer is a member's word.
 */
import net from 'node:net';
import { validAdvert, type Advert } from '../advert.js';
import { newNonce, NONCE, type HelloProver, type HelloVerifier } from './hello-proof.js';

export const HELLO = Buffer.from('KZHI\n');
/** The hello line is short; anything longer is not a prober of ours. */
const MAX_HELLO = 64;
/** How long an agent waits for the rest of a hello line before answering without a nonce. */
const HELLO_LINE_MS = 1000;

/** A probe refused because the answer does not prove membership (not a network failure: no retry helps). */
export class UnprovenAnswer extends Error {
  override readonly name = 'UnprovenAnswer';
}
/** An advert is a few hundred bytes; more is not an agent of ours. */
export const MAX_ANSWER = 8 * 1024;
/** How long an agent keeps a hello connection whose prober does not close. */
const ANSWER_LINGER_MS = 5000;

/** True when a connection's first bytes are a hello: the first byte alone decides. */
export function isHello(firstChunk: Buffer): boolean {
  return firstChunk.length > 0 && firstChunk[0] === HELLO[0];
}

/**
 * Answers a hello on an accepted socket and closes it. `first` is what the listener already read
 * of it. With a prover the answer is signed for the prober's nonce, once its line has arrived.
 */
export function answerHello(socket: net.Socket, advert: Advert & { view?: unknown }, opts: { first?: Buffer; prover?: HelloProver } = {}): void {
  // A prober that vanishes mid-answer is not an error worth more than dropping the socket.
  socket.on('error', () => socket.destroy());
  socket.setTimeout(ANSWER_LINGER_MS, () => socket.destroy());
  const { prover } = opts;
  const answer = (nonce: string | undefined) => {
    const proof = prover && nonce ? { proof: prover(advert, nonce) } : {};
    socket.end(JSON.stringify({ ...advert, ...proof }) + '\n');
  };
  if (!prover) {
    // Drain the rest of the hello: closing with unread input would reset the connection and
    // could throw away the answer before the prober reads it.
    socket.resume();
    return answer(undefined);
  }
  let line = opts.first ?? Buffer.alloc(0);
  let answered = false;
  const settle = () => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    const text = line.subarray(0, Math.max(0, line.indexOf(0x0a))).toString('latin1').trim();
    const nonce = /^KZHI ([0-9a-f]+)$/.exec(text)?.[1];
    answer(nonce && NONCE.test(nonce) ? nonce : undefined);
  };
  const timer = setTimeout(settle, HELLO_LINE_MS);
  const take = (chunk: Buffer) => {
    if (!answered) line = Buffer.concat([line, chunk]);
    if (line.includes(0x0a) || line.length > MAX_HELLO) settle();
  };
  socket.on('data', take);
  socket.once('end', settle);
  socket.resume();
  if (line.length) take(Buffer.alloc(0));
}

/**
 * Asks host:port for its advert. Rejects on refusal, timeout, an oversized, non-JSON or invalid
 * answer, and with a verifier, with UnprovenAnswer when the answer does not prove membership.
 */
export function probe(host: string, port: number, timeoutMs: number, verify?: HelloVerifier): Promise<Advert> {
  return new Promise<Advert>((resolve, reject) => {
    const where = `${host}:${port}`;
    const nonce = newNonce();
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
      const unproven = verify?.(advert, (parsed as { proof?: unknown }).proof, nonce);
      if (unproven) return settle(() => reject(new UnprovenAnswer(`hello: ${where} is not a member of this mesh: ${unproven}`)));
      settle(() => resolve(advert));
    };

    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(`KZHI ${nonce}\n`));
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
