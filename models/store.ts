/**
 * ModelStore: the models of one agent, read from model folders. A model is a manifest (`*.json`)
 * naming an .onnx file and its sha256; a file whose bytes do not match is refused, never served.
 * Every path a manifest names stays inside its folder (no absolute path, no "..", no symlink
 * out). With a trust policy (a mesh with credentials), a model that did not ship with the
 * package loads only when the mesh key signed its manifest (models/signature.ts).
 *
 * Models also come from the board's content-addressed store (models/cas.ts: added with
 * `kizuna models add`, or fetched from the mesh): loadStored() checks them the same way (the
 * manifest, its signature under a trust policy, the bytes against the sha256), and a newer
 * version from the store replaces the one loaded before it.
 *
 * Served is not loaded: a model the store serves has its bytes here, checked; its onnxruntime
 * session is in memory only while placement (models/placement.ts, models/residency.ts) keeps it
 * there, within the board's memory budget. With no budget every model is loaded when it is read,
 * as before placement. A cold model is read again (and its sha256 checked again) when a request
 * needs it.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash, type KeyObject } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { KizunaError, asKizunaError } from '../mesh/errors.js';
import { manifestPaths, parseManifest, unsafePath, type Manifest } from './manifest.js';
import type { Engine, ModelSession, SessionOptions } from './engine.js';
import { parseLabels } from './labels.js';
import { signaturePath, verifyManifest } from './signature.js';
import type { Cas, StoredModel } from './cas.js';
import type { Tensor } from '../mesh/tensor.js';
import { Residency, type Candidate } from './residency.js';
import { discard, LazySession, warmUp } from './lazy-session.js';

/** The models shipped with the package: part of the installed software, checked by sha256 only. */
export const PACKAGE_BUILTIN_DIR = fileURLToPath(new URL('../../models/builtin/', import.meta.url));

/** Which models a store accepts; without one (an open mesh) every well-formed model loads. */
export interface TrustPolicy {
  /** The mesh's public key: every model outside `builtinDir` needs its signature. */
  publicKey: KeyObject;
  /** The folder of the package's own models (default PACKAGE_BUILTIN_DIR). */
  builtinDir?: string;
}

/** Why a model was let in: shipped with the package, signed by the mesh, or no policy asked. */
export type ModelTrust = 'builtin' | 'signed' | 'unchecked';

/** A model the store serves (the name is older than placement: it may be cold, not loaded). */
export interface LoadedModel {
  manifest: Manifest;
  labels?: readonly string[];
  /** Runs the model: a lease's session, or (from get() and list()) one that loads it first when cold. */
  session: ModelSession;
  /** The model file's size. */
  bytes: number;
  trust?: ModelTrust;
  /** A model folder of the configuration, or the board's content-addressed store. */
  source?: 'folder' | 'store';
}

export interface StoreProblem {
  manifest: string;
  code: string;
  message: string;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const MAX_SIGNATURE_BYTES = 4096;

function assertSafe(manifestPath: string, what: string, name: string): void {
  const why = unsafePath(name);
  if (why) throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${what} ${JSON.stringify(name)} ${why}; it must name a file inside ${path.dirname(manifestPath)}`);
}

/**
 * The real path of a file a manifest names, checked to be a regular file inside the manifest's
 * folder (its text first, then on the disk with realpath, so a symlink out is caught); else
 * KZ_ERR_MANIFEST.
 */
async function resolveInside(manifestPath: string, what: string, name: string): Promise<{ file: string; real: string; size: number }> {
  const dir = path.dirname(manifestPath);
  assertSafe(manifestPath, what, name);
  const file = path.resolve(dir, name);
  let real: string;
  let realDir: string;
  try {
    [realDir, real] = await Promise.all([fs.realpath(dir), fs.realpath(file)]);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  const rel = path.relative(realDir, real);
  if (!rel || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${what} ${file} leads to ${real}, outside the model folder ${realDir}; copy the file into the folder instead of linking it`);
  }
  const stat = await fs.stat(real);
  if (!stat.isFile()) throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${what} ${file} is not a regular file`);
  return { file, real, size: stat.size };
}

const realOrSelf = (p: string) => fs.realpath(p).catch(() => path.resolve(p));

/** 'builtin' for a manifest in the package's own folder, 'signed' when the mesh key signed it; else KZ_ERR_MODEL_INTEGRITY. */
async function checkTrust(manifestPath: string, parsed: unknown, trust: TrustPolicy): Promise<ModelTrust> {
  const [dir, builtin] = await Promise.all([realOrSelf(path.dirname(manifestPath)), realOrSelf(trust.builtinDir ?? PACKAGE_BUILTIN_DIR)]);
  if (dir === builtin) return 'builtin';
  const sigPath = signaturePath(manifestPath);
  const refuse = (why: string) =>
    new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${manifestPath}: not signed by this mesh (${why}); refusing to load it. Sign it with kizuna models sign on the board that holds the mesh key`);
  if (!(await fs.lstat(sigPath).then(() => true, () => false))) throw refuse(`no signature ${sigPath}`);
  const sig = await resolveInside(manifestPath, 'signature', path.basename(sigPath));
  if (sig.size > MAX_SIGNATURE_BYTES) throw refuse(`${sigPath} is ${sig.size} bytes, not a signature`);
  if (!verifyManifest(parsed as object, await fs.readFile(sig.real, 'utf8'), trust.publicKey)) {
    throw refuse(`${sigPath} is not the mesh key's signature of this manifest: the manifest changed since it was signed, or another key signed it`);
  }
  return 'signed';
}

/**
 * Reads and checks one manifest and its model file; throws KZ_ERR_MANIFEST (invalid, or a path
 * out of its folder) or KZ_ERR_MODEL_INTEGRITY (not signed under a trust policy, or the bytes
 * do not match the sha256).
 */
export async function readModel(
  manifestPath: string, trust?: TrustPolicy,
): Promise<{ manifest: Manifest; onnx: Buffer; labels?: string[]; trust: ModelTrust }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fs.readFile(manifestPath, 'utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${(err as Error).message}`);
  }
  const manifest = parseManifest(parsed, manifestPath);
  // Its paths by their text first: a manifest that names a file out of its folder is refused, signed or not.
  for (const { what, name } of manifestPaths(manifest)) assertSafe(manifestPath, what, name);
  const trusted = trust ? await checkTrust(manifestPath, parsed, trust) : 'unchecked';
  const { file, real } = await resolveInside(manifestPath, 'model file', manifest.file);
  let onnx: Buffer;
  try {
    onnx = await fs.readFile(real);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: model file ${file}: ${(err as Error).message}`);
  }
  const actual = sha256(onnx);
  if (actual !== manifest.sha256) {
    throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${file}: sha256 is ${actual}, the manifest says ${manifest.sha256}; refusing to load it`);
  }
  let labels = manifest.labels;
  if (!labels && manifest.labelsFile) {
    const { file: labelsPath, real: labelsReal } = await resolveInside(manifestPath, 'labels file', manifest.labelsFile);
    const text = await fs.readFile(labelsReal, 'utf8').catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: labels file ${labelsPath}: ${err.message}`);
    });
    labels = parseLabels(text);
  }
  return { manifest, onnx, trust: trusted, ...(labels ? { labels } : {}) };
}

/**
 * A model this board serves: its bytes are here and verified. `session` runs it, loading it first
 * when it is cold (see ModelStore.acquire; the worker takes leases instead, to time the load).
 */
interface Entry extends LoadedModel {
  /** Unique per served model: a newer version of a name is another entry. */
  key: string;
  /** Its manifest's path, for messages. */
  where: string;
  /** Reads the model file again, checked against the sha256 (a cold model's bytes are not kept). */
  reread(): Promise<Buffer>;
  /** The bytes just read, while its first load at registration runs. */
  inHand?: Buffer;
  /** Input and output names of its session, once it has been loaded. */
  io?: { inputs: readonly string[]; outputs: readonly string[] };
}

export interface PlacementOptions {
  /** Bytes for model sessions: 0 or absent, no limit (every model loads at start). */
  budgetBytes?: number;
  /** A request waiting for memory that running inferences hold is refused after this (default 30 s). */
  waitMs?: number;
  /** The process's resident set size (tests). */
  rss?: () => number;
}

/** An inference's hold on a loaded model: its session stays in memory until release(). */
export interface ModelLease {
  model: LoadedModel;
  /** Milliseconds spent waiting for the model to load (absent: it was in memory). */
  loadMs?: number;
  release(): void;
}

/** The first session an engine creates pays for the runtime itself (~39 MB here): not measured as the model's. */
const engineStarted = new WeakSet<Engine>();

/**
 * Events: 'loaded' ({name, bytes, ms, measured}), 'evicted' ({name, bytes, why}), 'unservable'
 * ({name, code, message}: a cold model failed to load and is no longer served), 'change' (which
 * models are served or in memory changed).
 */
export class ModelStore extends EventEmitter {
  private readonly models = new Map<string, Entry>();
  private readonly residency: Residency;
  private serial = 0;
  readonly problems: StoreProblem[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly options: SessionOptions = {},
    /** Absent: an open mesh, every well-formed model loads. */
    private readonly trust?: TrustPolicy,
    placement: PlacementOptions = {},
  ) {
    super();
    this.residency = new Residency({
      budget: Math.max(0, placement.budgetBytes ?? 0),
      ...(placement.waitMs !== undefined ? { waitMs: placement.waitMs } : {}),
      ...(placement.rss ? { rss: placement.rss } : {}),
    });
    for (const event of ['loaded', 'evicted', 'change']) this.residency.on(event, (...args: unknown[]) => this.emit(event, ...args));
  }

  /** Loads every manifest in the folders; a bad one is recorded in `problems` and skipped. */
  async loadFolders(dirs: readonly string[]): Promise<void> {
    for (const dir of dirs) {
      let names: string[];
      try {
        names = (await fs.readdir(dir)).filter((n) => n.endsWith('.json')).sort();
      } catch (err) {
        this.problems.push({ manifest: dir, code: 'KZ_ERR_MANIFEST', message: `model folder ${dir}: ${(err as Error).message}` });
        continue;
      }
      for (const name of names) {
        const manifestPath = path.join(dir, name);
        try {
          await this.load(manifestPath);
        } catch (err) {
          const e = asKizunaError(err);
          this.problems.push({ manifest: manifestPath, code: e.code, message: e.message });
        }
      }
    }
  }

  /**
   * Serves the model of a manifest in a model folder, checked (see readModel); its session is
   * created now if it fits in the budget beside the models already in memory, else on demand.
   */
  async load(manifestPath: string): Promise<LoadedModel> {
    const { manifest, onnx, labels, trust } = await readModel(manifestPath, this.trust);
    if (this.models.has(manifest.name)) {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: a model named ${manifest.name} is already loaded`);
    }
    const reread = async () => {
      const again = await readModel(manifestPath, this.trust);
      if (again.manifest.sha256 !== manifest.sha256) {
        throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${manifestPath} changed since it was read (sha256 ${again.manifest.sha256}, served as ${manifest.sha256}); restart the agent to serve the new file`);
      }
      return again.onnx;
    };
    const entry = this.entry(manifestPath, manifest, labels, trust, 'folder', onnx, reread);
    await this.admit(entry, onnx);
    if (this.models.has(manifest.name)) {
      this.residency.drop(entry.key);
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: a model named ${manifest.name} is already loaded`);
    }
    this.models.set(manifest.name, entry);
    this.emit('change');
    return entry;
  }

  /**
   * Serves a model of the content-addressed store: its manifest (and, under a trust policy, the
   * mesh's signature of it: nothing in the store is built in), its bytes checked against the
   * sha256. A model of the same name served from the store before is replaced once this one is
   * checked; one from a configured folder is not (KZ_ERR_MANIFEST: the folder wins).
   */
  async loadStored(cas: Cas, stored: StoredModel): Promise<LoadedModel> {
    const where = stored.manifestPath;
    const manifest = parseManifest(stored.manifest, where);
    let trusted: ModelTrust = 'unchecked';
    if (this.trust) {
      if (!stored.sig || !verifyManifest(stored.manifest, stored.sig, this.trust.publicKey)) {
        throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${where}: not signed by this mesh (${stored.sig ? 'the signature does not verify with the mesh key' : 'no signature'}); refusing to load it`);
      }
      trusted = 'signed';
    }
    const current = this.models.get(manifest.name);
    if (current && current.source !== 'store') throw new KizunaError('KZ_ERR_MANIFEST', `${where}: a model named ${manifest.name} is already loaded from a model folder`);
    if (current?.manifest.sha256 === manifest.sha256 && current.manifest.version === manifest.version) return current;
    const onnx = await cas.readBlob(manifest.sha256);
    let labels = manifest.labels;
    if (!labels && manifest.labelsFile) {
      if (stored.labels === undefined) throw new KizunaError('KZ_ERR_MANIFEST', `${where}: names labels file ${manifest.labelsFile}, which the store does not hold`);
      labels = parseLabels(stored.labels);
    }
    const entry = this.entry(where, manifest, labels, trusted, 'store', onnx, () => cas.readBlob(manifest.sha256));
    await this.admit(entry, onnx);
    // The name may have been taken while this one loaded: the newest load wins, the other is released.
    const before = this.models.get(manifest.name);
    if (before && before.source !== 'store') {
      this.residency.drop(entry.key);
      throw new KizunaError('KZ_ERR_MANIFEST', `${where}: a model named ${manifest.name} is already loaded from a model folder`);
    }
    this.models.set(manifest.name, entry);
    if (before) this.residency.drop(before.key);
    this.emit('change');
    return entry;
  }

  /** Every model of the content-addressed store; a bad one is recorded in `problems` and skipped. */
  async loadStore(cas: Cas): Promise<void> {
    const stored = await cas.models((file, why) => this.problems.push({ manifest: file, code: 'KZ_ERR_MANIFEST', message: `${file}: ${why}` }));
    for (const m of stored) {
      try {
        await this.loadStored(cas, m);
      } catch (err) {
        const e = asKizunaError(err);
        this.problems.push({ manifest: m.manifestPath, code: e.code, message: e.message });
      }
    }
  }

  /** Stops serving `name`; its session is released once no inference runs on it. Returns whether it was served. */
  async unload(name: string): Promise<boolean> {
    const model = this.models.get(name);
    if (!model) return false;
    this.models.delete(name);
    this.residency.drop(model.key);
    this.emit('change');
    return true;
  }

  /**
   * A lease on `name`'s session for one inference: at once when the model is in memory, else
   * after its load (which may first unload idle models, least recently used first, or wait
   * until models that running inferences hold are free). Undefined: no such model here. A cold
   * model that fails to load is no longer served (recorded in `problems`, 'unservable').
   */
  async acquire(name: string, version?: string): Promise<ModelLease | undefined> {
    const entry = this.models.get(name);
    if (!entry || (version !== undefined && entry.manifest.version !== version)) return undefined;
    let lease;
    try {
      lease = await this.residency.acquire(this.candidate(entry));
    } catch (err) {
      const e = asKizunaError(err);
      if (e.code === 'KZ_ERR_MODEL_LOAD' || e.code === 'KZ_ERR_MANIFEST' || e.code === 'KZ_ERR_MODEL_INTEGRITY') this.unservable(entry, e);
      throw e;
    }
    const { session, loadMs, release } = lease;
    return { model: { ...entry, session }, release, ...(loadMs !== undefined ? { loadMs } : {}) };
  }

  /** What placement holds now: the budget (0: none), the bytes in use and the served models in memory. */
  memory(): { budgetBytes: number; usedBytes: number; warm: Set<string> } {
    const warm = new Set([...this.models.values()].filter((e) => this.residency.isWarm(e.key)).map((e) => e.manifest.name));
    return { budgetBytes: this.residency.budget, usedBytes: this.residency.used, warm };
  }

  private unservable(entry: Entry, e: KizunaError): void {
    if (this.models.get(entry.manifest.name) !== entry) return;
    this.models.delete(entry.manifest.name);
    this.residency.drop(entry.key);
    this.problems.push({ manifest: entry.where, code: e.code, message: e.message });
    this.emit('unservable', { name: entry.manifest.name, code: e.code, message: e.message });
    this.emit('change');
  }

  private entry(
    where: string, manifest: Manifest, labels: readonly string[] | undefined, trust: ModelTrust, source: 'folder' | 'store', onnx: Buffer, reread: () => Promise<Buffer>,
  ): Entry {
    const entry = {
      manifest, bytes: onnx.length, trust, source, where, key: `${manifest.name}@${manifest.version}#${++this.serial}`, reread,
      ...(labels ? { labels } : {}),
    } as Omit<Entry, 'session'> as Entry;
    entry.session = new LazySession(entry, (feeds) => this.runOnce(entry, feeds));
    return entry;
  }

  /** Registration: the model is loaded now when the budget has room (or nothing is loaded); load errors are thrown. */
  private async admit(entry: Entry, onnx: Buffer): Promise<void> {
    entry.inHand = onnx;
    try {
      await this.residency.preload(this.candidate(entry));
    } finally {
      delete entry.inHand;
      discard(onnx); // served cold: its bytes are read again when a request needs it
    }
  }

  private candidate(entry: Entry): Candidate {
    return { key: entry.key, name: entry.manifest.name, fileBytes: entry.bytes, read: async () => entry.inHand ?? entry.reread(), open: (bytes, forRequest) => this.open(entry, bytes, forRequest) };
  }

  /** Runs `entry` once (its LazySession): a lease for the length of the run. */
  private async runOnce(entry: Entry, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    const lease = this.models.get(entry.manifest.name) === entry ? await this.acquire(entry.manifest.name) : undefined;
    if (!lease) throw new KizunaError('KZ_ERR_UNKNOWN_MODEL', `model ${entry.manifest.name}@${entry.manifest.version} is no longer served here`);
    try {
      return await lease.model.session.run(feeds);
    } finally {
      lease.release();
    }
  }

  /**
   * A checked session of `entry`. Loaded for a request, it is first run once on a blank image
   * when it takes images, so its first-run allocations count in its measured footprint. At start
   * (and for a model that arrives from the mesh) the session is only created: nothing waits for
   * it, and an engine that holds runs (tests' gate engine) must not hold a start.
   */
  private async open(entry: Entry, onnx: Buffer, forRequest: boolean): Promise<{ session: ModelSession; measurable: boolean }> {
    const { manifest, where } = entry;
    const measurable = engineStarted.has(this.engine);
    let session: ModelSession;
    try {
      session = await this.engine.load(onnx, this.options);
    } catch (err) {
      throw new KizunaError('KZ_ERR_MODEL_LOAD', `${where}: the runtime cannot load ${manifest.file}: ${(err as Error).message}`, { cause: err });
    } finally {
      // The runtime made its own copy: the file's bytes go now, not at V8's next collection.
      discard(onnx);
    }
    engineStarted.add(this.engine);
    const missing = [
      ...manifest.inputs.map((i) => i.name).filter((n) => !session.inputNames.includes(n)).map((n) => `input ${n}`),
      ...manifest.outputs.map((o) => o.name).filter((n) => !session.outputNames.includes(n)).map((n) => `output ${n}`),
    ];
    const post = manifest.postprocess;
    if (post?.kind === 'classify' && !manifest.outputs.some((o) => o.name === post.output)) missing.push(`output ${post.output} (postprocess)`);
    if (missing.length) {
      await session.release();
      throw new KizunaError('KZ_ERR_MANIFEST', `${where}: the model has no ${missing.join(', ')}`);
    }
    entry.io = { inputs: [...session.inputNames], outputs: [...session.outputNames] };
    if (forRequest) await warmUp(session, manifest);
    return { session, measurable };
  }

  get(name: string, version?: string): LoadedModel | undefined {
    const model = this.models.get(name);
    return model && (version === undefined || model.manifest.version === version) ? model : undefined;
  }

  /** Every model this board serves, in memory or not. */
  list(): LoadedModel[] {
    return [...this.models.values()];
  }

  async close(): Promise<void> {
    this.models.clear();
    await this.residency.close();
  }
}
