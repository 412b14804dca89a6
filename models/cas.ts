/**
 * The content-addressed model store of one board, under `<dataDir>/store/`:
 *
 *   blobs/<sha256>                     model files, named by their sha256; one appears only once
 *                                      its whole content matched that name (read-only, 0444)
 *   manifests/<name>@<version>.json    a manifest as given (and as signed), beside it
 *             <name>@<version>.json.sig   the mesh key's signature, when there is one
 *             <name>@<version>.labels     the text of its labels file, when it names one
 *   partial/<sha256>.part              a file being fetched, chunk by chunk, at its final size
 *   partial/<sha256>.json              which chunks are in, and the chunk hashes they matched
 *   quarantine/<sha256>.<ms>           blobs that no longer matched their name (kizuna models verify)
 *
 * Every file is written whole to a temporary name in its folder, flushed, then renamed: a crash
 * leaves the old file or the new one, never half of one. Names come from validated manifests and
 * sha256 hex only; anything else is refused before it reaches a path. Knows nothing of MQTT.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { KizunaError } from '../mesh/errors.js';

const SHA256 = /^[0-9a-f]{64}$/;
/** As the manifest schema allows (models/manifest.ts), which keeps a key one plain file name. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const VERSION = /^[0-9A-Za-z.+-]{1,32}$/;

export function assertSha256(sha256: string): void {
  if (!SHA256.test(sha256)) throw new KizunaError('KZ_ERR_MANIFEST', `${JSON.stringify(sha256.slice(0, 80))} is not a sha256 (64 lower-case hex digits)`);
}

/** `name@version`, the file name of a manifest in the store; refuses what could leave the folder. */
export function modelKey(name: string, version: string): string {
  if (!NAME.test(name) || !VERSION.test(version) || name === '.' || name === '..') {
    throw new KizunaError('KZ_ERR_MANIFEST', `${JSON.stringify(`${name}@${version}`.slice(0, 120))} is not a model name and version`);
  }
  return `${name}@${version}`;
}

/** A model of the store: its manifest as stored (checked by the model store when loaded). */
export interface StoredModel {
  key: string;
  manifestPath: string;
  /** The parsed manifest; name, version and sha256 are checked, the rest is the model store's to check. */
  manifest: { name: string; version: string; sha256: string } & Record<string, unknown>;
  sig?: string;
  labels?: string;
}

export interface VerifyReport {
  ok: { sha256: string; bytes: number }[];
  /** Blobs whose bytes no longer match their name: moved to quarantine/. */
  bad: { sha256: string; actual: string; quarantined: string }[];
  /** Manifests whose blob is missing (or was just quarantined). */
  orphans: string[];
}

/** The sha256 and size of a file, read as a stream (a model may be bigger than memory allows). */
export async function hashFile(file: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** The chunk hashes of a file, read as a stream. */
export async function hashChunks(file: string, chunkSize: number): Promise<{ sha256: string; size: number; chunks: string[] }> {
  const whole = createHash('sha256');
  const chunks: string[] = [];
  let part = createHash('sha256');
  let inPart = 0;
  let size = 0;
  for await (const piece of createReadStream(file, { highWaterMark: 1 << 20 })) {
    let buf = piece as Buffer;
    whole.update(buf);
    size += buf.length;
    while (buf.length) {
      const take = Math.min(chunkSize - inPart, buf.length);
      part.update(buf.subarray(0, take));
      inPart += take;
      buf = buf.subarray(take);
      if (inPart === chunkSize) {
        chunks.push(part.digest('hex'));
        part = createHash('sha256');
        inPart = 0;
      }
    }
  }
  if (inPart) chunks.push(part.digest('hex'));
  return { sha256: whole.digest('hex'), size, chunks };
}

/** Writes `data` to `file` atomically: a temporary file beside it, flushed, then renamed over it. */
export async function writeAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

export class Cas {
  private constructor(readonly root: string) {}

  /** The store under `root` (`<dataDir>/store`), its folders made if missing. */
  static async open(root: string): Promise<Cas> {
    for (const sub of ['blobs', 'manifests', 'partial', 'quarantine']) await fs.mkdir(path.join(root, sub), { recursive: true, mode: 0o755 });
    return new Cas(root);
  }

  blobPath(sha256: string): string {
    assertSha256(sha256);
    return path.join(this.root, 'blobs', sha256);
  }

  private manifestFile(key: string): string {
    return path.join(this.root, 'manifests', `${key}.json`);
  }

  async hasBlob(sha256: string): Promise<boolean> {
    return fs.stat(this.blobPath(sha256)).then((s) => s.isFile(), () => false);
  }

  async blobSize(sha256: string): Promise<number | undefined> {
    return fs.stat(this.blobPath(sha256)).then((s) => s.size, () => undefined);
  }

  /** Stores bytes held in memory; returns their sha256 (refuses them if `expected` differs). */
  async putBlob(bytes: Uint8Array, expected?: string): Promise<string> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (expected !== undefined && expected !== sha256) throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `bytes of sha256 ${sha256}, not ${expected}`);
    if (!(await this.hasBlob(sha256))) await writeAtomic(this.blobPath(sha256), bytes, 0o444);
    return sha256;
  }

  /** Copies a file into the store as a stream, hashing it on the way; returns its sha256 and size. */
  async importFile(file: string): Promise<{ sha256: string; size: number }> {
    const tmp = path.join(this.root, 'blobs', `.import.${randomBytes(6).toString('hex')}.tmp`);
    const hash = createHash('sha256');
    let size = 0;
    const out = await fs.open(tmp, 'wx', 0o444);
    try {
      for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
        await out.write(chunk as Buffer);
      }
      await out.sync();
    } catch (err) {
      await out.close();
      await fs.rm(tmp, { force: true });
      throw new KizunaError('KZ_ERR_MANIFEST', `${file}: ${(err as Error).message}`, { cause: err });
    }
    await out.close();
    const sha256 = hash.digest('hex');
    if (await this.hasBlob(sha256)) await fs.rm(tmp, { force: true });
    else await fs.rename(tmp, this.blobPath(sha256));
    return { sha256, size };
  }

  /** A blob's bytes, checked against its name; a mismatch is quarantined and refused (KZ_ERR_MODEL_INTEGRITY). */
  async readBlob(sha256: string): Promise<Buffer> {
    const bytes = await fs.readFile(this.blobPath(sha256)).catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MANIFEST', `blob ${sha256} is not in the store: ${err.message}`);
    });
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== sha256) {
      const where = await this.quarantine(sha256);
      throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `blob ${sha256} holds bytes of sha256 ${actual}: moved to ${where}, refusing to load it`);
    }
    return bytes;
  }

  /** `length` bytes at `offset` of a blob (the caller checks them against the chunk's hash). */
  async readRange(sha256: string, offset: number, length: number): Promise<Buffer> {
    const fh = await fs.open(this.blobPath(sha256), 'r');
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** Moves a blob out of the way (it no longer matches its name); returns where it went. */
  async quarantine(sha256: string): Promise<string> {
    const to = path.join(this.root, 'quarantine', `${sha256}.${Date.now()}`);
    await fs.rename(this.blobPath(sha256), to).catch(() => undefined);
    return to;
  }

  /** Writes a manifest (its text as given, so its signature still verifies), with its signature and labels. */
  async putManifest(model: { manifest: object; text?: string; sig?: string; labels?: string }): Promise<StoredModel> {
    const m = model.manifest as StoredModel['manifest'];
    const key = modelKey(String(m.name), String(m.version));
    assertSha256(String(m.sha256));
    const file = this.manifestFile(key);
    await writeAtomic(file, model.text ?? `${JSON.stringify(model.manifest, null, 2)}\n`);
    if (model.sig) await writeAtomic(`${file}.sig`, `${model.sig.trim()}\n`);
    else await fs.rm(`${file}.sig`, { force: true });
    const labelsFile = path.join(this.root, 'manifests', `${key}.labels`);
    if (model.labels !== undefined) await writeAtomic(labelsFile, model.labels);
    else await fs.rm(labelsFile, { force: true });
    return { key, manifestPath: file, manifest: m, ...(model.sig ? { sig: model.sig.trim() } : {}), ...(model.labels !== undefined ? { labels: model.labels } : {}) };
  }

  /** Every manifest of the store (a file that is not a readable manifest is reported, not returned). */
  async models(problems?: (file: string, why: string) => void): Promise<StoredModel[]> {
    const dir = path.join(this.root, 'manifests');
    const out: StoredModel[] = [];
    for (const file of (await fs.readdir(dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.')).sort()) {
      const key = file.slice(0, -'.json'.length);
      const manifestPath = path.join(dir, file);
      try {
        const manifest = JSON.parse(await fs.readFile(manifestPath, 'utf8')) as StoredModel['manifest'];
        if (modelKey(String(manifest?.name), String(manifest?.version)) !== key) throw new Error(`names ${manifest?.name}@${manifest?.version}, not ${key}`);
        assertSha256(String(manifest.sha256));
        const sig = await fs.readFile(`${manifestPath}.sig`, 'utf8').then((s) => s.trim(), () => undefined);
        const labels = await fs.readFile(path.join(dir, `${key}.labels`), 'utf8').catch(() => undefined);
        out.push({ key, manifestPath, manifest, ...(sig ? { sig } : {}), ...(labels !== undefined ? { labels } : {}) });
      } catch (err) {
        problems?.(manifestPath, (err as Error).message);
      }
    }
    return out;
  }

  /**
   * Removes the manifests of `name` (one version, or all), then the blobs no manifest names
   * (but those in `keep`).
   */
  async remove(name: string, version?: string, keep: Iterable<string> = []): Promise<StoredModel[]> {
    const gone = (await this.models()).filter((m) => m.manifest.name === name && (version === undefined || m.manifest.version === version));
    for (const m of gone) {
      for (const f of [m.manifestPath, `${m.manifestPath}.sig`, path.join(this.root, 'manifests', `${m.key}.labels`)]) await fs.rm(f, { force: true });
    }
    await this.collect(keep);
    return gone;
  }

  /**
   * Deletes blobs that no manifest names, but those in `keep` (a file just fetched, whose
   * manifest is about to be written); returns their sha256.
   */
  async collect(keep: Iterable<string> = []): Promise<string[]> {
    const named = new Set([...(await this.models()).map((m) => m.manifest.sha256), ...keep]);
    const removed: string[] = [];
    for (const name of await fs.readdir(path.join(this.root, 'blobs'))) {
      if (!SHA256.test(name) || named.has(name)) continue;
      await fs.rm(path.join(this.root, 'blobs', name), { force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Hashes every blob again: a mismatch is quarantined. */
  async verify(): Promise<VerifyReport> {
    const report: VerifyReport = { ok: [], bad: [], orphans: [] };
    for (const name of (await fs.readdir(path.join(this.root, 'blobs'))).sort()) {
      if (!SHA256.test(name)) continue;
      const { sha256, size } = await hashFile(path.join(this.root, 'blobs', name));
      if (sha256 === name) report.ok.push({ sha256, bytes: size });
      else report.bad.push({ sha256: name, actual: sha256, quarantined: await this.quarantine(name) });
    }
    for (const m of await this.models()) if (!(await this.hasBlob(m.manifest.sha256))) report.orphans.push(m.key);
    return report;
  }

  /** The partial file of `plan.sha256`, resumed from the chunks already on disk when the plan is the same. */
  async partial(plan: ChunkPlan): Promise<PartialBlob> {
    assertSha256(plan.sha256);
    const part = path.join(this.root, 'partial', `${plan.sha256}.part`);
    const progress = path.join(this.root, 'partial', `${plan.sha256}.json`);
    const have = new Set<number>();
    const saved = await fs.readFile(progress, 'utf8').then((t) => JSON.parse(t) as Partial<Progress>, () => undefined);
    const same = saved && saved.size === plan.size && saved.chunkSize === plan.chunkSize && JSON.stringify(saved.chunks) === JSON.stringify(plan.chunks);
    const fh = await fs.open(part, same ? 'r+' : 'w+').catch(() => fs.open(part, 'w+'));
    try {
      if (same) {
        // Trust nothing that was on disk: a listed chunk counts only if its bytes still match.
        for (const i of Array.isArray(saved.have) ? saved.have : []) {
          if (!Number.isInteger(i) || i < 0 || i >= plan.chunks.length) continue;
          const len = Math.min(plan.chunkSize, plan.size - i * plan.chunkSize);
          const buf = Buffer.alloc(len);
          const { bytesRead } = await fh.read(buf, 0, len, i * plan.chunkSize);
          if (bytesRead === len && createHash('sha256').update(buf).digest('hex') === plan.chunks[i]) have.add(i);
        }
      }
      await fh.truncate(plan.size);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new PartialBlob(this, plan, fh, part, progress, have);
  }

  /** The transfers with chunks on disk (sha256 and how many chunks are in). */
  async partials(): Promise<{ sha256: string; have: number; of: number }[]> {
    const out: { sha256: string; have: number; of: number }[] = [];
    for (const name of await fs.readdir(path.join(this.root, 'partial'))) {
      const sha = name.slice(0, -'.json'.length);
      if (!name.endsWith('.json') || !SHA256.test(sha)) continue;
      const p = await fs.readFile(path.join(this.root, 'partial', name), 'utf8').then((t) => JSON.parse(t) as Progress, () => undefined);
      if (p && Array.isArray(p.have) && Array.isArray(p.chunks)) out.push({ sha256: sha, have: p.have.length, of: p.chunks.length });
    }
    return out;
  }

  /** @internal PartialBlob's last step: its file becomes the blob. */
  async adopt(part: string, sha256: string): Promise<void> {
    await fs.chmod(part, 0o444);
    await fs.rename(part, this.blobPath(sha256));
  }
}

export interface ChunkPlan {
  sha256: string;
  size: number;
  chunkSize: number;
  /** The sha256 of each chunk. */
  chunks: readonly string[];
}

interface Progress {
  v: 1;
  size: number;
  chunkSize: number;
  chunks: readonly string[];
  have: number[];
}

/** How many chunks may go in before the progress file is written again (it is also written on close). */
const PROGRESS_EVERY = 8;

/**
 * A file being fetched: chunks are written in place as they arrive (each already checked against
 * its hash by the caller, and again here), the progress file records which are in, and finish()
 * makes it a blob only once the whole file matches its sha256.
 */
export class PartialBlob {
  private unsaved = 0;
  private closed = false;
  /** Writes one after the other: the progress file must not race itself. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly cas: Cas,
    readonly plan: ChunkPlan,
    private readonly fh: fs.FileHandle,
    private readonly part: string,
    private readonly progress: string,
    readonly have: Set<number>,
  ) {}

  get complete(): boolean {
    return this.have.size === this.plan.chunks.length;
  }

  get bytesDone(): number {
    let n = 0;
    for (const i of this.have) n += Math.min(this.plan.chunkSize, this.plan.size - i * this.plan.chunkSize);
    return n;
  }

  missing(): number[] {
    return this.plan.chunks.map((_, i) => i).filter((i) => !this.have.has(i));
  }

  /** Writes chunk `index`; refuses bytes that do not match its hash (KZ_ERR_MODEL_INTEGRITY). */
  write(index: number, bytes: Uint8Array): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.closed || this.have.has(index)) return;
      const len = Math.min(this.plan.chunkSize, this.plan.size - index * this.plan.chunkSize);
      if (bytes.length !== len || createHash('sha256').update(bytes).digest('hex') !== this.plan.chunks[index]) {
        throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `chunk ${index} of ${this.plan.sha256} does not match its hash`);
      }
      await this.fh.write(bytes, 0, bytes.length, index * this.plan.chunkSize);
      this.have.add(index);
      if (++this.unsaved >= PROGRESS_EVERY) await this.save();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async save(): Promise<void> {
    this.unsaved = 0;
    const p: Progress = { v: 1, size: this.plan.size, chunkSize: this.plan.chunkSize, chunks: this.plan.chunks, have: [...this.have].sort((a, b) => a - b) };
    await writeAtomic(this.progress, JSON.stringify(p));
  }

  /**
   * Every chunk is in: the whole file is hashed again, and becomes the blob only if it matches;
   * otherwise the partial file is dropped (KZ_ERR_MODEL_INTEGRITY: the chunk list lied).
   */
  finish(): Promise<void> {
    const run = this.queue.then(async () => {
      if (!this.complete) throw new KizunaError('KZ_ERR_INTERNAL', `${this.plan.sha256}: ${this.missing().length} chunks missing`);
      await this.fh.sync();
      await this.fh.close();
      this.closed = true;
      const { sha256 } = await hashFile(this.part);
      if (sha256 !== this.plan.sha256) {
        await this.discardFiles();
        throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `the chunks of ${this.plan.sha256} make a file of sha256 ${sha256}: dropped`);
      }
      await this.cas.adopt(this.part, this.plan.sha256);
      await fs.rm(this.progress, { force: true });
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stops here, keeping what is on disk for a later resume. */
  close(): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.closed) return;
      this.closed = true;
      await this.save();
      await this.fh.close();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stops and deletes what was fetched. */
  discard(): Promise<void> {
    const run = this.queue.then(async () => {
      if (!this.closed) {
        this.closed = true;
        await this.fh.close();
      }
      await this.discardFiles();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async discardFiles(): Promise<void> {
    await fs.rm(this.part, { force: true });
    await fs.rm(this.progress, { force: true });
  }
}
