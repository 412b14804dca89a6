/**
 * The mesh catalogue on the wire: one retained message per model on
 * `kizuna/v1/<mesh>/catalog/<model>`, and the chunk protocol that moves model files between
 * boards (docs/PROTOCOL.md, "Models across the mesh"). Pure codecs: no I/O.
 *
 * A catalogue entry:
 *   {"v":1, "manifest":{...}, "sig":"kzm1...", "labels":"...", "size":N, "chunkSize":262144,
 *    "chunks":["<sha256 of chunk 0>", ...], "origin":"<who serves it first>"}
 * The manifest is the model's manifest as signed (models/manifest.ts; the store checks it whole);
 * `sig` is the mesh key's signature of it (models/signature.ts), required on a mesh with
 * credentials; `labels` is the text of its labels file, when it names one; the file is cut in
 * chunks of `chunkSize` bytes (the last may be shorter), each with its own sha256, so a bad chunk
 * is refused alone; `origin` is the board or app that published it and serves its chunks.
 *
 * A retraction: an empty payload (an open mesh), or a tombstone
 *   {"v":1, "retract":{"name":"<model>","sha256":"<its file>"}, "sig":"kzr1..."}
 * signed by the mesh key (required on a mesh with credentials, where an empty payload is refused).
 *
 * A chunk request, on blobreq/<holder>/<requester>/<sha256>: {"v":1,"chunks":[i, ...]}. Each
 * chunk comes back alone on blob/<requester>/<holder>/<sha256>/<i>, as raw bytes; an empty
 * payload there means "I do not have it".
 */
import crypto, { type KeyObject } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError } from './errors.js';
import { nestedDeeperThan } from './schemas.js';
import { SEGMENT_PATTERN } from './topics.js';

export const DEFAULT_CHUNK_BYTES = 256 * 1024;
export const MIN_CHUNK_BYTES = 4 * 1024;
export const MAX_CHUNK_BYTES = 4 * 1024 * 1024;
/** 16,384 chunks: a 4 GiB model at the default chunk size. */
export const MAX_CHUNKS = 16_384;
export const MAX_MODEL_BYTES = MAX_CHUNKS * DEFAULT_CHUNK_BYTES;
/** A labels file travels inside the entry. */
export const MAX_LABELS_CHARS = 1024 * 1024;
/** The largest catalogue message: MAX_CHUNKS hashes, the labels and a manifest. */
export const MAX_ENTRY_BYTES = 4 * 1024 * 1024;
/** Chunks one request may ask for. */
export const MAX_REQUEST_CHUNKS = 64;
/** A manifest nests about 4 levels; room for fields of newer versions, none for a stack overflow. */
const MAX_DEPTH = 16;

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Segment = Type.String({ pattern: SEGMENT_PATTERN });

const EntrySchema = Type.Object(
  {
    v: Type.Literal(1),
    // The fields the catalogue itself needs; the store checks the rest against the manifest schema.
    manifest: Type.Object({ name: Segment, version: Type.String({ pattern: '^[0-9A-Za-z.+-]{1,32}$' }), sha256: Sha256 }),
    sig: Type.Optional(Type.String({ maxLength: 256 })),
    labels: Type.Optional(Type.String({ maxLength: MAX_LABELS_CHARS })),
    size: Type.Integer({ minimum: 1, maximum: MAX_MODEL_BYTES }),
    chunkSize: Type.Integer({ minimum: MIN_CHUNK_BYTES, maximum: MAX_CHUNK_BYTES }),
    chunks: Type.Array(Sha256, { minItems: 1, maxItems: MAX_CHUNKS }),
    origin: Segment,
  },
  { additionalProperties: false },
);

const TombstoneSchema = Type.Object(
  {
    v: Type.Literal(1),
    retract: Type.Object({ name: Segment, sha256: Sha256 }, { additionalProperties: false }),
    sig: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);

const RequestSchema = Type.Object(
  { v: Type.Literal(1), chunks: Type.Array(Type.Integer({ minimum: 0, maximum: MAX_CHUNKS - 1 }), { minItems: 1, maxItems: MAX_REQUEST_CHUNKS }) },
  { additionalProperties: false },
);

export type CatalogEntry = Static<typeof EntrySchema> & { manifest: Record<string, unknown> };
export type Tombstone = Static<typeof TombstoneSchema>;

/** What a catalogue message says: a model to hold, or one withdrawn (by a tombstone, or an empty payload). */
export type CatalogMessage =
  | { kind: 'entry'; entry: CatalogEntry }
  | { kind: 'retract'; name: string; sha256?: string; tombstone?: Tombstone };

const checkEntry = TypeCompiler.Compile(EntrySchema);
const checkTombstone = TypeCompiler.Compile(TombstoneSchema);
const checkRequest = TypeCompiler.Compile(RequestSchema);

function firstError(check: { Errors(v: unknown): Iterable<{ path: string; message: string }> }, value: unknown): string {
  const e = [...check.Errors(value)][0];
  return `${e?.path || '/'} ${e?.message ?? 'invalid'}`;
}

function parseJsonObject(payload: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MALFORMED', `${what} is not JSON: ${(err as Error).message.slice(0, 200)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KizunaError('KZ_ERR_MALFORMED', `${what} is not a JSON object`);
  if (nestedDeeperThan(value, MAX_DEPTH)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `${what} nests deeper than ${MAX_DEPTH} levels`);
  return value as Record<string, unknown>;
}

/** How many chunks a file of `size` bytes has. */
export const chunkCount = (size: number, chunkSize: number): number => Math.ceil(size / chunkSize);

/** The length of chunk `index` of an entry (the last one may be shorter). */
export function chunkLength(entry: Pick<CatalogEntry, 'size' | 'chunkSize'>, index: number): number {
  return Math.min(entry.chunkSize, entry.size - index * entry.chunkSize);
}

/**
 * The message on the catalogue topic of `model`. Throws KizunaError: KZ_ERR_TOO_LARGE,
 * KZ_ERR_MALFORMED (not a JSON object), KZ_ERR_BAD_REQUEST (fields), KZ_ERR_BAD_NAME (an entry
 * for another model than its topic names).
 */
export function decodeCatalog(model: string, payload: Uint8Array): CatalogMessage {
  if (payload.length === 0) return { kind: 'retract', name: model };
  if (payload.length > MAX_ENTRY_BYTES) throw new KizunaError('KZ_ERR_TOO_LARGE', `catalogue message of ${payload.length} bytes (at most ${MAX_ENTRY_BYTES})`);
  const value = parseJsonObject(payload, 'catalogue message');
  if ('retract' in value) {
    if (!checkTombstone.Check(value)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `catalogue tombstone: ${firstError(checkTombstone, value)}`);
    if (value.retract.name !== model) throw new KizunaError('KZ_ERR_BAD_NAME', `a tombstone of ${value.retract.name} on the topic of ${model}`);
    return { kind: 'retract', name: model, sha256: value.retract.sha256, tombstone: value };
  }
  if (!checkEntry.Check(value)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `catalogue entry: ${firstError(checkEntry, value)}`);
  const entry = value as CatalogEntry;
  if (entry.manifest.name !== model) throw new KizunaError('KZ_ERR_BAD_NAME', `an entry of ${entry.manifest.name} on the topic of ${model}`);
  const expected = chunkCount(entry.size, entry.chunkSize);
  if (entry.chunks.length !== expected) {
    throw new KizunaError('KZ_ERR_BAD_REQUEST', `catalogue entry: ${entry.chunks.length} chunk hashes for ${entry.size} bytes in chunks of ${entry.chunkSize} (${expected} expected)`);
  }
  return { kind: 'entry', entry };
}

export function encodeCatalogEntry(entry: CatalogEntry): Buffer {
  return Buffer.from(JSON.stringify(entry), 'utf8');
}

export function encodeTombstone(t: Tombstone): Buffer {
  return Buffer.from(JSON.stringify(t), 'utf8');
}

const RETRACT_PREFIX = 'kzr1.';
const retractPayload = (name: string, sha256: string): Buffer => Buffer.from(`kizuna-retract-v1\n${name}\n${sha256}`, 'utf8');

/** A tombstone for `name` (whose file was `sha256`), signed by the mesh key. */
export function signTombstone(name: string, sha256: string, authorityKey: KeyObject): Tombstone {
  return { v: 1, retract: { name, sha256 }, sig: RETRACT_PREFIX + crypto.sign('sha256', retractPayload(name, sha256), authorityKey).toString('base64url') };
}

/** Whether the mesh key signed this tombstone. */
export function verifyTombstone(t: Tombstone, meshPublicKey: KeyObject): boolean {
  const sig = t.sig;
  if (!sig?.startsWith(RETRACT_PREFIX) || !/^[A-Za-z0-9_-]+$/.test(sig.slice(RETRACT_PREFIX.length))) return false;
  try {
    return crypto.verify('sha256', retractPayload(t.retract.name, t.retract.sha256), meshPublicKey, Buffer.from(sig.slice(RETRACT_PREFIX.length), 'base64url'));
  } catch {
    return false;
  }
}

export function encodeChunkRequest(chunks: readonly number[]): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, chunks }), 'utf8');
}

/** The chunk indexes a request asks for, each below `count`, without repeats; else KizunaError. */
export function decodeChunkRequest(payload: Uint8Array, count: number): number[] {
  if (payload.length > 4096) throw new KizunaError('KZ_ERR_TOO_LARGE', `chunk request of ${payload.length} bytes`);
  const value = parseJsonObject(payload, 'chunk request');
  if (!checkRequest.Check(value)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `chunk request: ${firstError(checkRequest, value)}`);
  const out = [...new Set(value.chunks)];
  const bad = out.find((i) => i >= count);
  if (bad !== undefined) throw new KizunaError('KZ_ERR_BAD_REQUEST', `chunk ${bad} of a file of ${count} chunks`);
  return out;
}

/** The chunk plan of bytes held in memory (models/cas.ts hashes files as streams). */
export function planChunks(bytes: Uint8Array, chunkSize = DEFAULT_CHUNK_BYTES): { size: number; chunkSize: number; chunks: string[]; sha256: string } {
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_BYTES || chunkSize > MAX_CHUNK_BYTES) {
    throw new KizunaError('KZ_ERR_CONFIG', `chunk size ${chunkSize} is not within ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`);
  }
  const chunks: string[] = [];
  for (let at = 0; at < bytes.length; at += chunkSize) chunks.push(crypto.createHash('sha256').update(bytes.subarray(at, at + chunkSize)).digest('hex'));
  return { size: bytes.length, chunkSize, chunks, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
}
