/**
 * A model given on the command line (`kizuna models add|push FILE|MANIFEST`), read and checked as
 * the store would read it, and its mesh catalogue entry:
 *  - MANIFEST (a .json): the manifest, its model file (inside its folder, matching its sha256),
 *    its signature (`MANIFEST.sig`) and labels file when it has them;
 *  - FILE with --manifest M: M describes FILE (FILE's bytes must match M's sha256);
 *  - FILE alone: a tensor-only manifest made from the inputs and outputs the file declares
 *    (read with the runtime), named after the file or --name.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DTYPES } from '../mesh/tensor.js';
import { KizunaError } from '../mesh/errors.js';
import { DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MAX_LABELS_CHARS, MAX_MODEL_BYTES, MIN_CHUNK_BYTES, type CatalogEntry } from '../mesh/catalog.js';
import { hashChunks } from './cas.js';
import type { Engine, ValueInfo } from './engine.js';
import { parseManifest, unsafePath, type Manifest, type TensorSpec } from './manifest.js';
import { signaturePath } from './signature.js';
import { readModel } from './store.js';

export interface ModelPackage {
  manifest: Manifest;
  /** The manifest's text as given (kept as is in the store), when it came from a file. */
  text?: string;
  sig?: string;
  /** The labels file's text, when the manifest names one. */
  labels?: string;
  /** The model file on this machine. */
  file: string;
  size: number;
  chunkSize: number;
  chunks: string[];
}

const readIf = (file: string) => fs.readFile(file, 'utf8').then((t) => t.trim(), () => undefined);

async function labelsOf(manifestPath: string, manifest: Manifest): Promise<string | undefined> {
  if (!manifest.labelsFile) return undefined;
  // readModel has checked that the path stays in the manifest's folder.
  const text = await fs.readFile(path.resolve(path.dirname(manifestPath), manifest.labelsFile), 'utf8');
  if (text.length > MAX_LABELS_CHARS) throw new KizunaError('KZ_ERR_MANIFEST', `${manifest.labelsFile}: labels over ${MAX_LABELS_CHARS} characters cannot travel in the catalogue`);
  return text;
}

/** A name for a model from its file name: the characters a manifest name allows. */
export function nameFromFile(file: string): string {
  const base = path.basename(file).replace(/\.onnx$/i, '').replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9_]+/, '').replace(/\.{2,}/g, '.');
  return (base || 'model').slice(0, 64);
}

function spec(v: ValueInfo, where: string): TensorSpec {
  if (!Object.hasOwn(DTYPES, v.dtype)) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${where} ${v.name} is ${v.dtype}, which Kizuna does not carry: write a manifest (--manifest) for this model`);
  }
  const shape = (v.shape ?? []).map((d, i) => (typeof d === 'number' && d >= 0 ? d : typeof d === 'string' && d ? d.slice(0, 32) : i === 0 ? 'N' : `d${i}`));
  return { name: v.name, dtype: v.dtype as TensorSpec['dtype'], shape };
}

/** Reads a model (see the file's comment); `engine` describes a file that has no manifest. */
export async function readModelPackage(
  input: string,
  options: { name?: string; manifest?: string; version?: string; chunkSize?: number; engine: () => Promise<Engine> },
): Promise<ModelPackage> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_BYTES || chunkSize > MAX_CHUNK_BYTES) {
    throw new KizunaError('KZ_ERR_CONFIG', `--chunk-size ${chunkSize} is not within ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`);
  }
  const isManifest = input.toLowerCase().endsWith('.json');
  let pkg: Omit<ModelPackage, 'size' | 'chunkSize' | 'chunks'>;
  let sha256: string;
  if (isManifest || options.manifest) {
    const manifestPath = isManifest ? input : options.manifest!;
    const text = await fs.readFile(manifestPath, 'utf8').catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${err.message}`);
    });
    let manifest: Manifest;
    let file: string;
    if (isManifest) {
      // The store's own checks: schema, paths inside the folder, the bytes against the sha256.
      manifest = (await readModel(manifestPath)).manifest;
      file = path.resolve(path.dirname(manifestPath), manifest.file);
    } else {
      try {
        manifest = parseManifest(JSON.parse(text), manifestPath);
      } catch (err) {
        throw err instanceof KizunaError ? err : new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${(err as Error).message}`);
      }
      if (manifest.labelsFile && unsafePath(manifest.labelsFile)) throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: labels file ${manifest.labelsFile} ${unsafePath(manifest.labelsFile)}`);
      file = input;
    }
    if (options.name && options.name !== manifest.name) {
      throw new KizunaError('KZ_ERR_CONFIG', `--name ${options.name} differs from the manifest's name ${manifest.name} (a signed manifest cannot be renamed: edit it and sign it again)`);
    }
    const sig = await readIf(signaturePath(manifestPath));
    const labels = await labelsOf(manifestPath, manifest);
    pkg = { manifest, text, file, ...(sig ? { sig } : {}), ...(labels !== undefined ? { labels } : {}) };
    sha256 = manifest.sha256;
  } else {
    const bytes = await fs.readFile(input).catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MANIFEST', `${input}: ${err.message}`);
    });
    const session = await (await options.engine()).load(bytes).catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MODEL_LOAD', `${input}: the runtime cannot load it: ${err.message}`, { cause: err });
    });
    try {
      const io = session.describe?.();
      if (!io) throw new KizunaError('KZ_ERR_MANIFEST', `${input}: the runtime does not describe its inputs: write a manifest (--manifest)`);
      const { sha256: sha } = await hashChunks(input, chunkSize);
      const manifest = parseManifest(
        {
          name: options.name ?? nameFromFile(input),
          version: options.version ?? '1',
          file: path.basename(input),
          sha256: sha,
          description: `${path.basename(input)}, added with kizuna models add (tensor inputs and outputs only)`,
          inputs: io.inputs.map((v) => spec(v, 'input')),
          outputs: io.outputs.map((v) => spec(v, 'output')),
          postprocess: { kind: 'none' },
        },
        input,
      );
      pkg = { manifest, file: input };
      sha256 = sha;
    } finally {
      await session.release();
    }
  }
  const plan = await hashChunks(pkg.file, chunkSize);
  if (plan.sha256 !== sha256) throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${pkg.file}: sha256 is ${plan.sha256}, the manifest says ${sha256}`);
  if (plan.size === 0 || plan.size > MAX_MODEL_BYTES) throw new KizunaError('KZ_ERR_MANIFEST', `${pkg.file}: ${plan.size} bytes (1..${MAX_MODEL_BYTES} can travel)`);
  return { ...pkg, size: plan.size, chunkSize, chunks: plan.chunks };
}

/** The catalogue entry of a package, published by `origin` (who serves it first). */
export function entryOf(pkg: ModelPackage, origin: string): CatalogEntry {
  return {
    v: 1,
    manifest: pkg.text ? (JSON.parse(pkg.text) as CatalogEntry['manifest']) : (pkg.manifest as unknown as CatalogEntry['manifest']),
    ...(pkg.sig ? { sig: pkg.sig } : {}),
    ...(pkg.labels !== undefined ? { labels: pkg.labels } : {}),
    size: pkg.size,
    chunkSize: pkg.chunkSize,
    chunks: pkg.chunks,
    origin,
  };
}
