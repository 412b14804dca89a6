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
 */
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

export interface LoadedModel {
  manifest: Manifest;
  labels?: readonly string[];
  session: ModelSession;
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

/** A replaced or unloaded model's session is released this long after (an inference may still run on it). */
const RETIRE_MS = 10_000;

export class ModelStore {
  private readonly models = new Map<string, LoadedModel>();
  private readonly retiring = new Set<ModelSession>();
  readonly problems: StoreProblem[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly options: SessionOptions = {},
    /** Absent: an open mesh, every well-formed model loads. */
    private readonly trust?: TrustPolicy,
  ) {}

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

  async load(manifestPath: string): Promise<LoadedModel> {
    const { manifest, onnx, labels, trust } = await readModel(manifestPath, this.trust);
    if (this.models.has(manifest.name)) {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: a model named ${manifest.name} is already loaded`);
    }
    const model = await this.open(manifestPath, manifest, onnx, labels, trust, 'folder');
    this.models.set(manifest.name, model);
    return model;
  }

  /**
   * Loads a model of the content-addressed store: its manifest (and, under a trust policy, the
   * mesh's signature of it: nothing in the store is built in), its bytes checked against the
   * sha256. A model of the same name loaded from the store before is replaced once this one
   * loads; one from a configured folder is not (KZ_ERR_MANIFEST: the folder wins).
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
    const model = await this.open(where, manifest, onnx, labels, trusted, 'store');
    // The name may have been taken while this one loaded: the newest load wins, the other is released.
    const before = this.models.get(manifest.name);
    if (before && before.source !== 'store') {
      await model.session.release();
      throw new KizunaError('KZ_ERR_MANIFEST', `${where}: a model named ${manifest.name} is already loaded from a model folder`);
    }
    this.models.set(manifest.name, model);
    if (before) this.retire(before.session);
    return model;
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

  /** Stops serving `name` and releases its session; returns whether it was loaded. */
  async unload(name: string): Promise<boolean> {
    const model = this.models.get(name);
    if (!model) return false;
    this.models.delete(name);
    this.retire(model.session);
    return true;
  }

  private retire(session: ModelSession): void {
    this.retiring.add(session);
    setTimeout(() => {
      if (this.retiring.delete(session)) void session.release().catch(() => undefined);
    }, RETIRE_MS).unref();
  }

  private async open(where: string, manifest: Manifest, onnx: Buffer, labels: readonly string[] | undefined, trust: ModelTrust, source: 'folder' | 'store'): Promise<LoadedModel> {
    let session: ModelSession;
    try {
      session = await this.engine.load(onnx, this.options);
    } catch (err) {
      throw new KizunaError('KZ_ERR_MODEL_LOAD', `${where}: the runtime cannot load ${manifest.file}: ${(err as Error).message}`, { cause: err });
    }
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
    return { manifest, session, bytes: onnx.length, trust, source, ...(labels ? { labels } : {}) };
  }

  get(name: string, version?: string): LoadedModel | undefined {
    const model = this.models.get(name);
    return model && (version === undefined || model.manifest.version === version) ? model : undefined;
  }

  list(): LoadedModel[] {
    return [...this.models.values()];
  }

  async close(): Promise<void> {
    const all = [...this.models.values()].map((m) => m.session).concat([...this.retiring]);
    this.models.clear();
    this.retiring.clear();
    await Promise.all(all.map((s) => s.release()));
  }
}
