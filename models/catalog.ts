/**
 * The catalogue of real, well-known models: one manifest per model in models/catalog/NAME.json
 * (sha256, pre/post-processing recipe) and, in models/catalog/sources.json, where each file can
 * be downloaded (its public URL and its path in a mirror) and its size. Manifests stay pure
 * manifests (ManifestSchema); download locations are data beside them.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError } from '../mesh/errors.js';
import { parseManifest, unsafePath, type Manifest } from './manifest.js';

/** models/catalog/ of the package (this file compiles to dist/models/catalog.js). */
export const CATALOG_DIR = fileURLToPath(new URL('../../models/catalog/', import.meta.url));
export const SOURCES_FILE = 'sources.json';

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const SourceFileSchema = Type.Object(
  {
    /** The public copy whose bytes match the sha256, or null when there is none (mirror only). */
    url: Type.Union([Type.String({ pattern: '^https://' }), Type.Null()]),
    /** Path of the file in a mirror laid out like the shared folder: --base-url URL fetches URL/mirror. */
    mirror: Type.String({ minLength: 1, maxLength: 1024 }),
    size: Type.Integer({ minimum: 1 }),
    sha256: Type.Optional(Sha256),
    note: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
const SourcesSchema = Type.Object(
  {
    about: Type.Optional(Type.String()),
    models: Type.Record(Type.String(), Type.Object({ model: SourceFileSchema, labels: Type.Optional(SourceFileSchema) }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
const checkSources = TypeCompiler.Compile(SourcesSchema);

export type SourceFile = Static<typeof SourceFileSchema>;
/** A file to download: where from, how big, and the sha256 its bytes must have. */
export type VerifiedSource = SourceFile & { sha256: string };

export interface CatalogEntry {
  name: string;
  manifest: Manifest;
  model: VerifiedSource;
  /** The labels file the manifest names (labelsFile), when it names one. */
  labels?: VerifiedSource;
}

/** Every catalogue model, by name; KZ_ERR_MANIFEST when a manifest or its sources entry is wrong. */
export async function loadCatalog(dir: string = CATALOG_DIR): Promise<CatalogEntry[]> {
  const sourcesPath = path.join(dir, SOURCES_FILE);
  const sources = await readJson(sourcesPath);
  if (!checkSources.Check(sources)) {
    const first = [...checkSources.Errors(sources)][0];
    throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: ${first?.path || '/'} ${first?.message ?? 'invalid'}`);
  }
  const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.json') && f !== SOURCES_FILE).sort();
  const entries: CatalogEntry[] = [];
  for (const file of files) {
    const manifestPath = path.join(dir, file);
    const manifest = parseManifest(await readJson(manifestPath), manifestPath);
    const name = manifest.name;
    if (`${name}.json` !== file) throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: a catalogue manifest is NAME.json, and this one names ${name}`);
    const where = Object.hasOwn(sources.models, name) ? sources.models[name] : undefined;
    if (!where) throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: no entry for catalogue model ${name}`);
    const bad = [where.model, where.labels].find((s) => s && unsafePath(s.mirror));
    if (bad) throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: ${name}: mirror path ${JSON.stringify(bad.mirror)} ${unsafePath(bad.mirror)}`);
    if (Boolean(manifest.labelsFile) !== Boolean(where.labels)) {
      throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: ${name}: a labels source is needed exactly when the manifest names a labelsFile`);
    }
    if (where.labels && !where.labels.sha256) throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: ${name}: the labels source needs a sha256`);
    entries.push({
      name,
      manifest,
      model: { ...where.model, sha256: manifest.sha256 },
      ...(where.labels ? { labels: where.labels as VerifiedSource } : {}),
    });
  }
  const unused = Object.keys(sources.models).filter((n) => !entries.some((e) => e.name === n));
  if (unused.length) throw new KizunaError('KZ_ERR_MANIFEST', `${sourcesPath}: entries without a catalogue manifest: ${unused.join(', ')}`);
  return entries;
}

/** The entry of that name, or KZ_ERR_UNKNOWN_MODEL listing the catalogue. */
export function findEntry(catalog: readonly CatalogEntry[], name: string): CatalogEntry {
  const entry = catalog.find((e) => e.name === name);
  if (!entry) {
    throw new KizunaError('KZ_ERR_UNKNOWN_MODEL', `no model named ${JSON.stringify(name)} in the catalogue; it has: ${catalog.map((e) => e.name).join(', ')} (kizuna models catalog)`);
  }
  return entry;
}

/**
 * Where to download a file from: `baseUrl` + its mirror path when a base URL is given (a mirror
 * or a test server), else its public URL; KZ_ERR_CONFIG when it has none.
 */
export function sourceUrl(source: SourceFile, baseUrl?: string): string {
  if (baseUrl) {
    let base: URL;
    try {
      base = new URL(baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
    } catch {
      throw new KizunaError('KZ_ERR_CONFIG', `base URL ${JSON.stringify(baseUrl)} is not a URL`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new KizunaError('KZ_ERR_CONFIG', `base URL ${baseUrl}: only http: and https: are supported`);
    return new URL(source.mirror.split('/').map(encodeURIComponent).join('/'), base).href;
  }
  if (!source.url) {
    throw new KizunaError('KZ_ERR_CONFIG', `${source.mirror} has no public download URL${source.note ? ` (${source.note})` : ''}; give a mirror with --base-url or KIZUNA_MODELS_BASE_URL`);
  }
  return source.url;
}

/** Size in bytes of everything a pull downloads for this entry. */
export function downloadSize(entry: CatalogEntry): number {
  return entry.model.size + (entry.labels?.size ?? 0);
}

/** 14.0 MB, 26.6 kB: sizes as the CLI prints them (SI units). */
export function formatBytes(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${file}: ${(err as Error).message}`);
  }
}
