/**
 * ModelStore: the models of one agent, read from model folders. A model is a manifest (`*.json`)
 * naming an .onnx file and its sha256; a file whose bytes do not match is refused, never served.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError, asKizunaError } from '../mesh/errors.js';
import { ManifestSchema, type Manifest } from './manifest.js';
import type { Engine, ModelSession, SessionOptions } from './engine.js';
import { parseLabels } from './labels.js';

const checkManifest = TypeCompiler.Compile(ManifestSchema);

export interface LoadedModel {
  manifest: Manifest;
  labels?: readonly string[];
  session: ModelSession;
  bytes: number;
}

export interface StoreProblem {
  manifest: string;
  code: string;
  message: string;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads and checks one manifest and its model file; throws KZ_ERR_MANIFEST or KZ_ERR_MODEL_INTEGRITY. */
export async function readModel(manifestPath: string): Promise<{ manifest: Manifest; onnx: Buffer; labels?: string[] }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fs.readFile(manifestPath, 'utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${(err as Error).message}`);
  }
  if (!checkManifest.Check(parsed)) {
    const first = [...checkManifest.Errors(parsed)][0];
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${first?.path || '/'} ${first?.message ?? 'invalid'}`);
  }
  const manifest = parsed;
  const dir = path.dirname(manifestPath);
  const file = path.resolve(dir, manifest.file);
  let onnx: Buffer;
  try {
    onnx = await fs.readFile(file);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: model file ${file}: ${(err as Error).message}`);
  }
  const actual = sha256(onnx);
  if (actual !== manifest.sha256) {
    throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${file}: sha256 is ${actual}, the manifest says ${manifest.sha256}; refusing to load it`);
  }
  let labels = manifest.labels;
  if (!labels && manifest.labelsFile) {
    const labelsPath = path.resolve(dir, manifest.labelsFile);
    const text = await fs.readFile(labelsPath, 'utf8').catch((err: Error) => {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: labels file ${labelsPath}: ${err.message}`);
    });
    labels = parseLabels(text);
  }
  return { manifest, onnx, ...(labels ? { labels } : {}) };
}

export class ModelStore {
  private readonly models = new Map<string, LoadedModel>();
  readonly problems: StoreProblem[] = [];

  constructor(
    private readonly engine: Engine,
    private readonly options: SessionOptions = {},
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
    const { manifest, onnx, labels } = await readModel(manifestPath);
    if (this.models.has(manifest.name)) {
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: a model named ${manifest.name} is already loaded`);
    }
    let session: ModelSession;
    try {
      session = await this.engine.load(onnx, this.options);
    } catch (err) {
      throw new KizunaError('KZ_ERR_MODEL_LOAD', `${manifestPath}: the runtime cannot load ${manifest.file}: ${(err as Error).message}`, { cause: err });
    }
    const missing = [
      ...manifest.inputs.map((i) => i.name).filter((n) => !session.inputNames.includes(n)).map((n) => `input ${n}`),
      ...manifest.outputs.map((o) => o.name).filter((n) => !session.outputNames.includes(n)).map((n) => `output ${n}`),
    ];
    const post = manifest.postprocess;
    if (post?.kind === 'classify' && !manifest.outputs.some((o) => o.name === post.output)) missing.push(`output ${post.output} (postprocess)`);
    if (missing.length) {
      await session.release();
      throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: the model has no ${missing.join(', ')}`);
    }
    const model: LoadedModel = { manifest, session, bytes: onnx.length, ...(labels ? { labels } : {}) };
    this.models.set(manifest.name, model);
    return model;
  }

  get(name: string, version?: string): LoadedModel | undefined {
    const model = this.models.get(name);
    return model && (version === undefined || model.manifest.version === version) ? model : undefined;
  }

  list(): LoadedModel[] {
    return [...this.models.values()];
  }

  async close(): Promise<void> {
    const all = [...this.models.values()];
    this.models.clear();
    await Promise.all(all.map((m) => m.session.release()));
  }
}
