/**
 * One file over HTTP(S), verified before anyone can see it: the bytes stream into a hidden
 * partial file beside the destination, hashed on the way; only when the sha256 (and size) match
 * is the partial file renamed to its destination. An interrupted transfer keeps its partial file
 * and goes on with an HTTP Range request, in this call (retries) or in the next one. Bytes that
 * do not match are deleted and refused with KZ_ERR_MODEL_INTEGRITY.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KizunaError } from '../mesh/errors.js';

export interface Progress {
  /** Bytes of the file held so far (a resumed transfer starts above 0). */
  received: number;
  total: number;
  /** Bytes that were already there when this attempt started. */
  resumedFrom: number;
  /** Milliseconds since this attempt started. */
  elapsedMs: number;
  attempt: number;
}

export interface DownloadOptions {
  url: string;
  /** Final path; it appears only once the bytes are verified. */
  dest: string;
  sha256: string;
  size: number;
  /** Further attempts after a transfer is cut (each resumes with Range). Default 3. */
  retries?: number;
  /** Abort an attempt that receives nothing for this long. Default 30 s. */
  idleTimeoutMs?: number;
  onProgress?: (p: Progress) => void;
  /** First wait between attempts, doubled each time. Default 500 ms. */
  backoffMs?: number;
}

export interface DownloadResult {
  /** Bytes received by all attempts of this call together (a cut attempt's bytes count). */
  transferred: number;
  /** Bytes a previous run had left in the partial file. */
  resumedFrom: number;
  /** HTTP requests made (0: the destination was already there and verified). */
  requests: number;
  ms: number;
}

/** The hidden partial file of `dest`, named by the expected sha256 so that another version never resumes it. */
export function partPath(dest: string, sha256: string): string {
  return path.join(path.dirname(dest), `.${path.basename(dest)}.${sha256.slice(0, 16)}.part`);
}

/** sha256 of a file's bytes, or undefined when there is no such file. */
export async function fileSha256(file: string): Promise<string | undefined> {
  const hash = createHash('sha256');
  try {
    await hashInto(hash, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return hash.digest('hex');
}

async function hashInto(hash: Hash, file: string): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
}

const sizeOf = (file: string) => fs.stat(file).then((s) => s.size, () => 0);

/** An HTTP status worth another attempt (the server may get better); others are final. */
const retryable = (status: number) => status === 408 || status === 429 || status >= 500;

class Interrupted extends Error {}

export async function download(options: DownloadOptions): Promise<DownloadResult> {
  const { url, dest, sha256, size } = options;
  const retries = options.retries ?? 3;
  const started = performance.now();
  if ((await fileSha256(dest)) === sha256) return { transferred: 0, resumedFrom: 0, requests: 0, ms: 0 };
  const part = partPath(dest, sha256);
  const resumedFrom = await sizeOf(part);
  const counter = { bytes: 0 };
  let requests = 0;
  let restartedOnce = false;
  for (let attempt = 0; ; attempt++) {
    let offset = await sizeOf(part);
    if (offset > size) {
      await fs.rm(part, { force: true });
      offset = 0;
    }
    try {
      if (offset < size) {
        requests++;
        await fetchInto(url, part, offset, size, attempt, counter, options);
      }
      const actual = await fileSha256(part);
      if (actual !== sha256) {
        await fs.rm(part, { force: true });
        // Bytes kept from an earlier transfer may be what is wrong: start once from zero.
        if (offset > 0 && !restartedOnce) {
          restartedOnce = true;
          continue;
        }
        throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${url}: the downloaded bytes have sha256 ${actual}, the catalogue says ${sha256}; deleted them`);
      }
      await fs.rename(part, dest);
      return { transferred: counter.bytes, resumedFrom, requests, ms: performance.now() - started };
    } catch (err) {
      if (!(err instanceof Interrupted) || attempt >= retries) {
        if (err instanceof Interrupted) {
          const kept = await sizeOf(part);
          throw new KizunaError('KZ_ERR_MODEL_LOAD', `cannot download ${url}: ${err.message}; ${kept} of ${size} bytes are kept in ${part}, the next pull resumes from there`, { cause: err.cause });
        }
        throw err;
      }
      await sleep((options.backoffMs ?? 500) * 2 ** attempt);
    }
  }
}

/** One HTTP request appending to `part` from `offset`, adding what it receives to `counter`. Throws Interrupted when worth another try. */
async function fetchInto(url: string, part: string, offset: number, size: number, attempt: number, counter: { bytes: number }, options: DownloadOptions): Promise<void> {
  const started = performance.now();
  const abort = new AbortController();
  const idleMs = options.idleTimeoutMs ?? 30_000;
  let idle = setTimeout(() => abort.abort(new Error(`nothing received for ${idleMs} ms`)), idleMs);
  const poke = () => {
    clearTimeout(idle);
    idle = setTimeout(() => abort.abort(new Error(`nothing received for ${idleMs} ms`)), idleMs);
  };
  let received = 0;
  try {
    let res: Response;
    try {
      res = await fetch(url, {
        signal: abort.signal,
        // Byte ranges must count the file's own bytes, never a compressed encoding of them.
        headers: { 'accept-encoding': 'identity', ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
      });
    } catch (err) {
      throw new Interrupted(describe(err), { cause: err });
    }
    let at = offset;
    if (res.status === 206) {
      const start = Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]);
      if (start !== offset) at = -1; // not the range asked for: start over
    } else if (res.status === 200) {
      at = 0; // the server ignored the range (or none was asked): the whole file follows
    } else if (res.status === 416 && offset > 0) {
      await res.body?.cancel();
      await fs.rm(part, { force: true });
      throw new Interrupted('the server refused to resume the partial file; starting again');
    } else {
      await res.body?.cancel();
      const why = `HTTP ${res.status} ${res.statusText}`.trim();
      if (retryable(res.status)) throw new Interrupted(why);
      throw new KizunaError('KZ_ERR_MODEL_LOAD', `cannot download ${url}: ${why}`);
    }
    if (at < 0) {
      await res.body?.cancel();
      await fs.rm(part, { force: true });
      throw new Interrupted('the server answered another byte range; starting again');
    }
    const file = await fs.open(part, at === 0 ? 'w' : 'a');
    try {
      if (!res.body) throw new Interrupted('the response has no body');
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        poke();
        if (at + received + chunk.length > size) {
          abort.abort();
          await file.close();
          await fs.rm(part, { force: true });
          throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${url}: more than the ${size} bytes the catalogue says; deleted them`);
        }
        await file.write(chunk);
        received += chunk.length;
        counter.bytes += chunk.length;
        options.onProgress?.({ received: at + received, total: size, resumedFrom: at, elapsedMs: performance.now() - started, attempt });
      }
    } catch (err) {
      if (err instanceof KizunaError || err instanceof Interrupted) throw err;
      throw new Interrupted(describe(err), { cause: err });
    } finally {
      await file.close().catch(() => undefined);
    }
    if (at + received < size) throw new Interrupted(`the transfer ended after ${at + received} of ${size} bytes`);
  } finally {
    clearTimeout(idle);
  }
}

/** A fetch failure in words: undici hides the socket's error under `cause`. */
function describe(err: unknown): string {
  const e = err as Error & { cause?: Error & { code?: string } };
  const cause = e.cause ? `: ${e.cause.code ?? ''} ${e.cause.message}`.replace(/\s+/g, ' ') : '';
  return `${e.message}${cause}`;
}
