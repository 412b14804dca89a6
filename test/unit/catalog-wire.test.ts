/**
 * The mesh catalogue's wire format (mesh/catalog.ts) and its topics: entries, tombstones and
 * chunk requests round-trip; every malformed one gets its code; tombstone signatures verify
 * only for the mesh key and the file they name. Then fast-check (fixed seeds, about 10,000 cases
 * in all): for random bytes, random JSON and near-valid messages (a valid entry with a field
 * changed, removed or added, truncated), each decoder returns a well-formed value or throws a
 * KizunaError with one of its documented codes: never a TypeError, never a slow case.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fc from 'fast-check';
import {
  chunkLength, decodeCatalog, decodeChunkRequest, encodeCatalogEntry, encodeChunkRequest, encodeTombstone, MAX_CHUNKS, MAX_ENTRY_BYTES,
  MAX_REQUEST_CHUNKS, planChunks, signTombstone, verifyTombstone, type CatalogEntry, type CatalogMessage,
} from '../../mesh/catalog.js';
import { KizunaError, type ErrorCode } from '../../mesh/errors.js';
import { parseBlobChunkTopic, parseBlobRequestTopic, parseCatalogTopic, topics } from '../../mesh/topics.js';

const CATALOG_CODES: ErrorCode[] = ['KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_TOO_LARGE', 'KZ_ERR_BAD_NAME'];
const REQUEST_CODES: ErrorCode[] = ['KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_TOO_LARGE'];
const SLOW_MS = 1000;

const bytes = crypto.randomBytes(40_000);
const plan = planChunks(bytes, 16 * 1024);
const manifest = {
  name: 'digits-copy', version: '1.0.0', file: 'digits.onnx', sha256: plan.sha256,
  inputs: [{ name: 'input', dtype: 'float32', shape: ['N', 1, 28, 28] }], outputs: [{ name: 'logits', dtype: 'float32', shape: ['N', 10] }],
};
const entry: CatalogEntry = { v: 1, manifest, size: plan.size, chunkSize: plan.chunkSize, chunks: plan.chunks, origin: 'pi-a' };

function code(f: () => unknown): ErrorCode | 'ok' {
  try {
    f();
    return 'ok';
  } catch (err) {
    assert.ok(err instanceof KizunaError, `threw ${(err as Error).name}: ${(err as Error).message}`);
    return err.code;
  }
}

test('planChunks cuts a file in chunks of chunkSize (the last shorter), each with its sha256', () => {
  assert.equal(plan.chunks.length, 3);
  assert.equal(chunkLength(plan, 0), 16384);
  assert.equal(chunkLength(plan, 2), 40_000 - 2 * 16384);
  assert.equal(plan.chunks[1], crypto.createHash('sha256').update(bytes.subarray(16384, 32768)).digest('hex'));
  assert.equal(plan.sha256, crypto.createHash('sha256').update(bytes).digest('hex'));
  assert.equal(code(() => planChunks(bytes, 100)), 'KZ_ERR_CONFIG');
});

test('an entry round-trips; one for another model, with the wrong number of chunks or a bad field is refused with its code', () => {
  const msg = decodeCatalog('digits-copy', encodeCatalogEntry(entry));
  assert.equal(msg.kind, 'entry');
  assert.deepEqual((msg as Extract<CatalogMessage, { kind: 'entry' }>).entry, entry);
  const bad = (e: unknown, model = 'digits-copy') => code(() => decodeCatalog(model, Buffer.from(JSON.stringify(e))));
  assert.equal(bad(entry, 'digits'), 'KZ_ERR_BAD_NAME');
  assert.equal(bad({ ...entry, chunks: plan.chunks.slice(1) }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, size: 0 }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, chunkSize: 100 }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, chunks: ['x', 'y', 'z'] }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, origin: '../x' }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, extra: 1 }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, manifest: { ...manifest, sha256: 'ab' } }), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad({ ...entry, manifest: { ...manifest, name: 'a/b' } }, 'a'), 'KZ_ERR_BAD_REQUEST');
  assert.equal(bad([1, 2]), 'KZ_ERR_MALFORMED');
  assert.equal(code(() => decodeCatalog('x', Buffer.from('{"v":1,'))), 'KZ_ERR_MALFORMED');
  assert.equal(code(() => decodeCatalog('x', Buffer.alloc(MAX_ENTRY_BYTES + 1, 0x20))), 'KZ_ERR_TOO_LARGE');
  // Nesting deep enough to overflow a recursive walk is refused, not followed.
  assert.equal(code(() => decodeCatalog('x', Buffer.from(`{"v":1,"manifest":${'['.repeat(5000)}${']'.repeat(5000)}}`))), 'KZ_ERR_BAD_REQUEST');
});

test('an empty payload retracts; a tombstone verifies only with the mesh key, for its model and file', () => {
  assert.deepEqual(decodeCatalog('digits-copy', Buffer.alloc(0)), { kind: 'retract', name: 'digits-copy' });
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const t = signTombstone('digits-copy', plan.sha256, privateKey);
  const msg = decodeCatalog('digits-copy', encodeTombstone(t));
  assert.equal(msg.kind, 'retract');
  assert.ok(msg.kind === 'retract' && msg.tombstone && verifyTombstone(msg.tombstone, publicKey));
  assert.equal(verifyTombstone(t, other.publicKey), false, 'another key');
  assert.equal(verifyTombstone({ ...t, retract: { ...t.retract, sha256: 'f'.repeat(64) } }, publicKey), false, 'another file');
  assert.equal(verifyTombstone({ ...t, retract: { ...t.retract, name: 'digits' } }, publicKey), false, 'another model');
  assert.equal(verifyTombstone({ v: 1, retract: t.retract }, publicKey), false, 'no signature');
  assert.equal(verifyTombstone({ ...t, sig: 'kzr1.!!' }, publicKey), false, 'garbage');
  assert.equal(code(() => decodeCatalog('digits', encodeTombstone(t))), 'KZ_ERR_BAD_NAME');
  assert.equal(code(() => decodeCatalog('digits-copy', Buffer.from(JSON.stringify({ v: 1, retract: { name: 'digits-copy' } })))), 'KZ_ERR_BAD_REQUEST');
});

test('chunk requests: indexes below the file\'s count, no repeats, at most 64', () => {
  assert.deepEqual(decodeChunkRequest(encodeChunkRequest([0, 2, 2, 1]), 3), [0, 2, 1]);
  assert.equal(code(() => decodeChunkRequest(encodeChunkRequest([3]), 3)), 'KZ_ERR_BAD_REQUEST');
  assert.equal(code(() => decodeChunkRequest(encodeChunkRequest([]), 3)), 'KZ_ERR_BAD_REQUEST');
  assert.equal(code(() => decodeChunkRequest(encodeChunkRequest(Array.from({ length: MAX_REQUEST_CHUNKS + 1 }, (_, i) => i)), MAX_CHUNKS)), 'KZ_ERR_BAD_REQUEST');
  assert.equal(code(() => decodeChunkRequest(Buffer.from('{"v":1,"chunks":[-1]}'), 3)), 'KZ_ERR_BAD_REQUEST');
  assert.equal(code(() => decodeChunkRequest(Buffer.from('{"v":1,"chunks":[0.5]}'), 3)), 'KZ_ERR_BAD_REQUEST');
  assert.equal(code(() => decodeChunkRequest(Buffer.from('nope'), 3)), 'KZ_ERR_MALFORMED');
  assert.equal(code(() => decodeChunkRequest(Buffer.alloc(5000, 0x20), 3)), 'KZ_ERR_TOO_LARGE');
});

test('topics: catalogue, chunk requests and chunks parse back; anything else does not', () => {
  const sha = plan.sha256;
  assert.deepEqual(parseCatalogTopic(topics.catalog('home', 'digits')), { mesh: 'home', model: 'digits' });
  assert.deepEqual(parseBlobRequestTopic(topics.blobRequest('home', 'pi-a', 'pi-b', sha)), { holder: 'pi-a', requester: 'pi-b', sha256: sha });
  assert.deepEqual(parseBlobChunkTopic(topics.blobChunk('home', 'pi-b', 'pi-a', sha, 12)), { requester: 'pi-b', holder: 'pi-a', sha256: sha, index: 12 });
  assert.throws(() => topics.catalog('home', 'a/b'), /model/);
  for (const t of [
    'kizuna/v1/home/catalog', 'kizuna/v1/home/catalog/a/b', 'kizuna/v2/home/catalog/a', 'kizuna/v1/home/catalog/..x',
    `kizuna/v1/home/blobreq/pi-a/pi-b/${sha.toUpperCase()}`, `kizuna/v1/home/blobreq/pi-a/pi-b/${sha}/x`, `kizuna/v1/home/blob/pi-b/pi-a/${sha}/01`,
    `kizuna/v1/home/blob/pi-b/pi-a/${sha}/-1`, `kizuna/v1/home/blob/pi-b/pi-a/${sha}`, `kizuna/v1/home/blob/pi-b/+/${sha}/1`,
  ]) {
    assert.equal(parseCatalogTopic(t) ?? parseBlobRequestTopic(t) ?? parseBlobChunkTopic(t), undefined, t);
  }
});

// ---------------------------------------------------------------- fuzzing

function outcome<T>(f: () => T, allowed: readonly ErrorCode[]): T | ErrorCode {
  const started = performance.now();
  let result: T | ErrorCode;
  try {
    result = f();
  } catch (err) {
    if (!(err instanceof KizunaError)) throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
    if (!allowed.includes(err.code)) throw new Error(`threw ${err.code}, not one of ${allowed.join(' ')}: ${err.message}`);
    result = err.code;
  }
  const ms = performance.now() - started;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return result;
}

const check = <Ts>(property: fc.IRawProperty<Ts>, seed: number, numRuns: number) => fc.assert(property, { seed, numRuns, includeErrorInReport: true });

/** A decoded message must be what the catalogue promises its readers. */
function assertMessage(model: string, m: CatalogMessage): void {
  if (m.kind === 'retract') {
    assert.equal(m.name, model);
    if (m.sha256 !== undefined) assert.match(m.sha256, /^[0-9a-f]{64}$/);
    return;
  }
  const e = m.entry;
  assert.equal(e.manifest.name, model);
  assert.match(e.manifest.sha256, /^[0-9a-f]{64}$/);
  assert.ok(Number.isSafeInteger(e.size) && e.size > 0);
  assert.equal(e.chunks.length, Math.ceil(e.size / e.chunkSize));
  assert.ok(e.chunks.every((c) => /^[0-9a-f]{64}$/.test(c)));
  assert.ok(chunkLength(e, e.chunks.length - 1) > 0);
}

const jsonValue = fc.jsonValue({ maxDepth: 4 });
const fieldNames = ['v', 'manifest', 'sig', 'labels', 'size', 'chunkSize', 'chunks', 'origin', 'retract', 'name', 'sha256', '__proto__', 'constructor'];

/** A valid entry with one field replaced by random JSON, removed, or a new one added. */
const nearEntry = fc.tuple(fc.constantFrom(...fieldNames), fc.option(jsonValue), fc.boolean()).map(([field, value, nested]) => {
  const e: Record<string, unknown> = JSON.parse(JSON.stringify(entry));
  const target = nested ? (e.manifest as Record<string, unknown>) : e;
  if (value === null) delete target[field];
  else target[field] = value;
  return Buffer.from(JSON.stringify(e));
});

test('fuzz: decodeCatalog on random bytes, random JSON and near-valid entries (6,000 cases)', () => {
  const model = fc.constantFrom('digits-copy', 'x', '_');
  check(fc.property(model, fc.uint8Array({ maxLength: 200 }), (m, b) => {
    const r = outcome(() => decodeCatalog(m, b), CATALOG_CODES);
    if (typeof r === 'object') assertMessage(m, r);
  }), 0xca7a1, 2000);
  check(fc.property(model, jsonValue, (m, v) => {
    const r = outcome(() => decodeCatalog(m, Buffer.from(JSON.stringify(v) ?? '')), CATALOG_CODES);
    if (typeof r === 'object') assertMessage(m, r);
  }), 0xca7a2, 2000);
  check(fc.property(nearEntry, fc.nat({ max: 1000 }), (b, cut) => {
    for (const payload of [b, b.subarray(0, Math.min(cut, b.length))]) {
      const r = outcome(() => decodeCatalog('digits-copy', payload), CATALOG_CODES);
      if (typeof r === 'object') assertMessage('digits-copy', r);
    }
  }), 0xca7a3, 2000);
});

test('fuzz: decodeChunkRequest and the topic parsers (4,000 cases)', () => {
  check(fc.property(fc.oneof(fc.uint8Array({ maxLength: 100 }), jsonValue.map((v) => Buffer.from(JSON.stringify({ v: 1, chunks: v }) ?? ''))), fc.integer({ min: 1, max: MAX_CHUNKS }), (b, count) => {
    const r = outcome(() => decodeChunkRequest(b, count), REQUEST_CODES);
    if (Array.isArray(r)) {
      assert.ok(r.length >= 1 && r.length <= MAX_REQUEST_CHUNKS);
      assert.equal(new Set(r).size, r.length);
      assert.ok(r.every((i) => Number.isInteger(i) && i >= 0 && i < count));
    }
  }), 0xc4a1, 2000);
  const level = fc.oneof(fc.constantFrom('kizuna', 'v1', 'home', 'catalog', 'blobreq', 'blob', 'pi-a', plan.sha256, '0', '01', '+', '#', '', '..', 'a..b'), fc.string({ maxLength: 8 }));
  check(fc.property(fc.array(level, { minLength: 1, maxLength: 9 }), (parts) => {
    const t = parts.join('/');
    const c = outcome(() => parseCatalogTopic(t), []);
    if (c && typeof c === 'object') assert.equal(topics.catalog(c.mesh, c.model), t);
    const q = outcome(() => parseBlobRequestTopic(t), []);
    if (q && typeof q === 'object') assert.equal(topics.blobRequest(t.split('/')[2]!, q.holder, q.requester, q.sha256), t);
    const k = outcome(() => parseBlobChunkTopic(t), []);
    if (k && typeof k === 'object') assert.equal(topics.blobChunk(t.split('/')[2]!, k.requester, k.holder, k.sha256, k.index), t);
  }), 0xc4a2, 2000);
});

test('the broker\'s check on a mesh with credentials (catalogGate): signed entries in their origin\'s name, signed tombstones of the file listed now', async () => {
  const { catalogGate } = await import('../../agent/distribution.js');
  const { signManifest } = await import('../../models/signature.js');
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  let listed: string | undefined = plan.sha256;
  const gate = catalogGate(publicKey, () => listed);
  const board = { kind: 'board', node: 'pi-a' } as const;
  const app = { kind: 'app', name: 'laptop' } as const;
  const signed = { ...entry, sig: signManifest(manifest, privateKey) };
  const verdict = (e: unknown, id: { kind: 'board'; node: string } | { kind: 'app'; name: string } = board) => gate('digits-copy', Buffer.from(JSON.stringify(e)), id);
  assert.deepEqual(verdict(signed), { ok: true });
  assert.deepEqual(verdict({ ...signed, origin: 'laptop' }, app), { ok: true });
  assert.match(JSON.stringify(verdict(entry)), /not signed by the mesh key/);
  assert.match(JSON.stringify(verdict({ ...entry, sig: signManifest(manifest, other.privateKey) })), /not signed by the mesh key/);
  assert.match(JSON.stringify(verdict({ ...signed, manifest: { ...manifest, version: '1.0.1' } })), /not signed by the mesh key/, 'a field changed after signing');
  assert.match(JSON.stringify(verdict(signed, app)), /names pi-a as its origin, not its publisher laptop/);
  assert.match(JSON.stringify(verdict({ ...signed, manifest: { ...manifest, inputs: 'x' } })), /inputs/, 'the whole manifest schema');
  assert.match(JSON.stringify(gate('digits-copy', Buffer.alloc(0), board)), /unsigned retraction/);
  const tomb = signTombstone('digits-copy', plan.sha256, privateKey);
  assert.deepEqual(gate('digits-copy', encodeTombstone(tomb), board), { ok: true });
  assert.match(JSON.stringify(gate('digits-copy', encodeTombstone(signTombstone('digits-copy', plan.sha256, other.privateKey)), board)), /not signed by the mesh key/);
  listed = 'e'.repeat(64);
  assert.match(JSON.stringify(gate('digits-copy', encodeTombstone(tomb), board)), /the catalogue lists eeeeeeeeeeee/, 'an old tombstone replayed against a newer version');
  assert.match(JSON.stringify(gate('digits-copy', Buffer.from('{'), board)), /not JSON/);
});
