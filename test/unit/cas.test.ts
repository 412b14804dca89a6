/**
 * The content-addressed model store (models/cas.ts) on a real file system: blobs appear whole or
 * not at all and only under their own sha256; manifests keep their text (so their signature);
 * a partial transfer resumes from the chunks on disk that still match, and becomes a blob only
 * when the whole file matches; verify quarantines a blob whose bytes changed; no name reaches a
 * path outside the store. Then the chunk fetcher (models/transfer.ts) with injected time.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { planChunks } from '../../mesh/catalog.js';
import { KizunaError } from '../../mesh/errors.js';
import { Cas, hashChunks, modelKey, writeAtomic } from '../../models/cas.js';
import { ChunkServer, Fetch, type Timers } from '../../models/transfer.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-cas-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const open = () => Cas.open(path.join(root, `store-${n++}`));
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');
/** Every file under `dir`, relative. */
const files = (dir: string): string[] => fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.relative(dir, path.join(d.parentPath, d.name))).sort();
const codeOf = async (p: Promise<unknown>) => p.then(() => 'ok', (err: unknown) => (err instanceof KizunaError ? err.code : `not a KizunaError: ${err}`));

test('blobs: stored under their sha256 only, read-only, no temporary file left; a wrong expected hash is refused', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(10_000);
  const id = await cas.putBlob(bytes);
  assert.equal(id, sha(bytes));
  assert.deepEqual(files(cas.root), [`blobs/${id}`]);
  assert.equal(fs.statSync(cas.blobPath(id)).mode & 0o777, 0o444);
  assert.deepEqual(await cas.readBlob(id), bytes);
  assert.equal(await codeOf(cas.putBlob(bytes, 'f'.repeat(64))), 'KZ_ERR_MODEL_INTEGRITY');
  // A file imported as a stream: the same blob, once.
  const file = path.join(root, 'model.onnx');
  fs.writeFileSync(file, bytes);
  assert.deepEqual(await cas.importFile(file), { sha256: id, size: 10_000 });
  assert.deepEqual(files(cas.root), [`blobs/${id}`]);
});

test('writeAtomic: the whole new file or the old one, never a temporary left behind', async () => {
  const dir = path.join(root, 'atomic');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'a.json');
  await writeAtomic(file, 'old');
  await writeAtomic(file, 'new');
  assert.equal(fs.readFileSync(file, 'utf8'), 'new');
  // The rename fails (a non-empty directory is in the way): nothing is changed, nothing left over.
  const blocked = path.join(dir, 'blocked');
  fs.mkdirSync(path.join(blocked, 'inside'), { recursive: true });
  await assert.rejects(writeAtomic(blocked, 'x'));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'blocked']);
});

test('manifests keep their text, signature and labels; rm removes them and the blobs nothing names', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(5000);
  const id = await cas.putBlob(bytes);
  const manifest = { name: 'm', version: '2', file: 'm.onnx', sha256: id, inputs: [], outputs: [] };
  const text = `{\n    "name": "m", "version": "2", "file": "m.onnx", "sha256": "${id}", "inputs": [], "outputs": []\n}\n`;
  await cas.putManifest({ manifest, text, sig: 'kzm1.abc\n', labels: 'cat\ndog\n' });
  const [stored] = await cas.models();
  assert.equal(stored!.key, 'm@2');
  assert.equal(fs.readFileSync(stored!.manifestPath, 'utf8'), text, 'the text as given');
  assert.equal(stored!.sig, 'kzm1.abc');
  assert.equal(stored!.labels, 'cat\ndog\n');
  const other = await cas.putBlob(crypto.randomBytes(10));
  assert.deepEqual(await cas.collect(), [other], 'a blob no manifest names is collected');
  assert.deepEqual((await cas.remove('m', '2')).map((m) => m.key), ['m@2']);
  assert.deepEqual(files(cas.root), []);
});

test('path safety: names, versions and hashes that could leave the store are refused before any path is made', async () => {
  const cas = await open();
  for (const [name, version] of [['../x', '1'], ['a/b', '1'], ['..', '1'], ['.', '1'], ['m', '../1'], ['m', '1/2'], ['m', ''], ['m\0', '1'], ['', '1']]) {
    assert.throws(() => modelKey(name!, version!), (err: unknown) => err instanceof KizunaError && err.code === 'KZ_ERR_MANIFEST', `${name}@${version}`);
  }
  for (const bad of ['../../etc/passwd', 'A'.repeat(64), 'a'.repeat(63), `${'a'.repeat(64)}/x`]) {
    assert.throws(() => cas.blobPath(bad), /not a sha256/);
    await assert.rejects(cas.partial({ sha256: bad, size: 1, chunkSize: 4096, chunks: ['a'.repeat(64)] }), /not a sha256/);
  }
  await assert.rejects(cas.putManifest({ manifest: { name: '../evil', version: '1', sha256: 'a'.repeat(64) } }), /not a model name/);
  // A manifest file whose content names another model than its file name is reported, not used.
  fs.writeFileSync(path.join(cas.root, 'manifests', 'a@1.json'), JSON.stringify({ name: 'b', version: '1', sha256: 'a'.repeat(64) }));
  const problems: string[] = [];
  assert.deepEqual(await cas.models((_f, why) => problems.push(why)), []);
  assert.match(problems[0]!, /names b@1, not a@1/);
});

test('verify: re-hashes every blob, quarantines the one whose bytes changed, reports the manifest left without its file', async () => {
  const cas = await open();
  const good = await cas.putBlob(crypto.randomBytes(3000));
  const bad = await cas.putBlob(crypto.randomBytes(3000));
  await cas.putManifest({ manifest: { name: 'bad', version: '1', sha256: bad } });
  fs.chmodSync(cas.blobPath(bad), 0o644);
  fs.writeFileSync(cas.blobPath(bad), 'bit rot');
  const report = await cas.verify();
  assert.deepEqual(report.ok.map((f) => f.sha256), [good]);
  assert.equal(report.bad.length, 1);
  assert.equal(report.bad[0]!.sha256, bad);
  assert.equal(report.bad[0]!.actual, sha(Buffer.from('bit rot')));
  assert.equal(fs.readFileSync(report.bad[0]!.quarantined, 'utf8'), 'bit rot');
  assert.equal(await cas.hasBlob(bad), false);
  assert.deepEqual(report.orphans, ['bad@1']);
  // Reading a blob that changed quarantines it too, and refuses it.
  fs.writeFileSync(path.join(cas.root, 'blobs', good), 'changed');
  assert.equal(await codeOf(cas.readBlob(good)), 'KZ_ERR_MODEL_INTEGRITY');
  assert.equal(await cas.hasBlob(good), false);
});

test('partial: chunks checked on the way in, resumed from what still matches on disk, a blob only when the whole file matches', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(5 * 4096 + 100);
  const p = planChunks(bytes, 4096);
  const chunk = (i: number) => bytes.subarray(i * 4096, (i + 1) * 4096);
  let part = await cas.partial(p);
  assert.deepEqual(part.missing(), [0, 1, 2, 3, 4, 5]);
  await part.write(0, chunk(0));
  await part.write(3, chunk(3));
  await part.write(5, chunk(5));
  assert.equal(await codeOf(part.write(1, chunk(2))), 'KZ_ERR_MODEL_INTEGRITY', 'another chunk\'s bytes');
  assert.equal(await codeOf(part.write(1, chunk(1).subarray(1))), 'KZ_ERR_MODEL_INTEGRITY', 'a short chunk');
  assert.equal(part.bytesDone, 2 * 4096 + 100);
  await part.close();
  assert.equal(await cas.hasBlob(p.sha256), false, 'not visible before it is whole');
  assert.deepEqual(await cas.partials(), [{ sha256: p.sha256, have: 3, of: 6 }]);

  // Chunk 3 rots on disk while the transfer is stopped: the resume asks for it again.
  const fd = fs.openSync(path.join(cas.root, 'partial', `${p.sha256}.part`), 'r+');
  fs.writeSync(fd, Buffer.from('rot'), 0, 3, 3 * 4096 + 10);
  fs.closeSync(fd);
  part = await cas.partial(p);
  assert.deepEqual(part.missing(), [1, 2, 3, 4]);
  for (const i of part.missing()) await part.write(i, chunk(i));
  assert.ok(part.complete);
  await part.finish();
  assert.deepEqual(await cas.readBlob(p.sha256), bytes);
  assert.deepEqual(fs.readdirSync(path.join(cas.root, 'partial')), [], 'no partial files left');

  // Another plan for the same file (another chunk size): the old progress is not reused.
  const other = planChunks(bytes, 8192);
  const again = await cas.partial({ ...other, sha256: sha(Buffer.from('x')) });
  assert.equal(again.have.size, 0);
  await again.discard();

  // Chunk hashes that make another file than the sha256 says: dropped at the end, never a blob.
  const liar = { ...p, sha256: sha(Buffer.from('something else')) };
  const lie = await cas.partial(liar);
  for (let i = 0; i < 6; i++) await lie.write(i, chunk(i));
  assert.equal(await codeOf(lie.finish()), 'KZ_ERR_MODEL_INTEGRITY');
  assert.equal(await cas.hasBlob(liar.sha256), false);
  assert.deepEqual(fs.readdirSync(path.join(cas.root, 'partial')), []);
});

test('hashChunks streams a file into the same plan as planChunks', async () => {
  const bytes = crypto.randomBytes(3 * 4096 + 7);
  const file = path.join(root, 'chunks.bin');
  fs.writeFileSync(file, bytes);
  const { sha256, size, chunks } = planChunks(bytes, 4096);
  assert.deepEqual(await hashChunks(file, 4096), { sha256, size, chunks });
});

// ---------------------------------------------------------------- the fetcher, with injected time

/** Timers driven by the test: advance(ms) fires what is due. */
function fakeTimers(): Timers & { advance(ms: number): void } {
  let now = 0;
  const due = new Map<number, { at: number; fn: () => void }>();
  let id = 0;
  return {
    now: () => now,
    setTimeout: (fn, ms) => (due.set(++id, { at: now + ms, fn }), id),
    clearTimeout: (h) => void due.delete(h as number),
    advance(ms) {
      now += ms;
      for (const [k, t] of [...due].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at > now || !due.has(k)) continue;
        due.delete(k);
        t.fn();
      }
    },
  };
}

const until = (emitter: NodeJS.EventEmitter, event: string) => new Promise<unknown>((resolve, reject) => {
  emitter.once(event, resolve);
  emitter.once('failed', reject);
});

test('fetch: a window of chunks over the holders in turn; a bad chunk is refused and asked of another; a holder sending bad ones twice is avoided', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(12 * 4096);
  const p = planChunks(bytes, 4096);
  const asked: { holder: string; chunks: number[] }[] = [];
  const timers = fakeTimers();
  const fetch = new Fetch(await cas.partial(p), { holders: () => ['good', 'rogue'], request: (holder, chunks) => asked.push({ holder, chunks }) }, { window: 4, batch: 2, timers });
  const bad: unknown[] = [];
  const avoided: unknown[] = [];
  fetch.on('bad-chunk', (b) => bad.push(b));
  fetch.on('avoid', (a) => avoided.push(a));
  const done = until(fetch, 'done');
  fetch.start();
  // The holders answer in order: "rogue" sends garbage of the right length, "good" the real bytes.
  const answer = () => {
    while (asked.length) {
      const { holder, chunks } = asked.shift()!;
      for (const i of chunks) fetch.onChunk(holder, i, holder === 'rogue' ? Buffer.alloc(4096, 7) : bytes.subarray(i * 4096, (i + 1) * 4096));
    }
  };
  while (!fetch.partial.complete) {
    answer();
    await new Promise((r) => setImmediate(r)); // the writes
  }
  await done;
  assert.deepEqual(await cas.readBlob(p.sha256), bytes);
  assert.equal(bad.length, 2, 'two bad chunks, then the rogue is avoided');
  assert.deepEqual(avoided, [{ holder: 'rogue', why: '2 bad chunks' }]);
});

test('fetch: chunks a holder does not send in time are asked again (of another holder when there is one); a holder gone from the list is not waited for', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(4 * 4096);
  const p = planChunks(bytes, 4096);
  const asked: { holder: string; chunks: number[] }[] = [];
  const timers = fakeTimers();
  let holders = ['silent'];
  const fetch = new Fetch(await cas.partial(p), { holders: () => holders, request: (holder, chunks) => asked.push({ holder, chunks }) }, { window: 4, batch: 4, timeoutMs: 1000, timers });
  const stalled = until(fetch, 'stalled');
  fetch.start();
  assert.deepEqual(asked.splice(0), [{ holder: 'silent', chunks: [0, 1, 2, 3] }]);
  timers.advance(999);
  assert.equal(asked.length, 0);
  timers.advance(1);
  assert.deepEqual(asked.splice(0), [{ holder: 'silent', chunks: [0, 1, 2, 3] }], 'the only holder is asked again');
  holders = ['other', 'silent'];
  fetch.holdersChanged();
  timers.advance(1000);
  assert.deepEqual(asked.splice(0), [{ holder: 'other', chunks: [0, 1, 2, 3] }], 'a late holder is asked last');
  holders = [];
  fetch.holdersChanged();
  await stalled;
  holders = ['back'];
  fetch.holdersChanged();
  const done = until(fetch, 'done');
  for (const i of asked.splice(0).flatMap((a) => a.chunks)) fetch.onChunk('back', i, bytes.subarray(i * 4096, (i + 1) * 4096));
  await done;
  assert.equal(await cas.hasBlob(p.sha256), true);
});

test('chunk server: sends what it holds, checked against the plan; "not here" (empty) for the rest; a chunk that no longer matches is reported', async () => {
  const bytes = crypto.randomBytes(3 * 4096);
  const p = planChunks(bytes, 4096);
  const disk = Buffer.from(bytes);
  const sent: { requester: string; index: number; bytes: number }[] = [];
  const corrupt: unknown[] = [];
  let pending = 0;
  let idle!: () => void;
  const server = new ChunkServer(
    (s) => (s === p.sha256 ? { plan: p, read: async (offset, length) => disk.subarray(offset, offset + length) } : undefined),
    async (requester, _sha, index, b) => {
      sent.push({ requester, index, bytes: b.length });
      if (--pending === 0) idle();
    },
  );
  server.on('corrupt', (c) => corrupt.push(c));
  const served = (count: number) => {
    pending = count;
    return new Promise<void>((resolve) => (idle = resolve));
  };
  let wait = served(2);
  server.request('pi-b', p.sha256, Buffer.from('{"v":1,"chunks":[2,0]}'));
  await wait;
  assert.deepEqual(sent.splice(0).sort((a, b) => a.index - b.index), [{ requester: 'pi-b', index: 0, bytes: 4096 }, { requester: 'pi-b', index: 2, bytes: 4096 }]);
  wait = served(1);
  server.request('pi-b', 'f'.repeat(64), Buffer.from('{"v":1,"chunks":[0]}'));
  await wait;
  assert.deepEqual(sent.splice(0), [{ requester: 'pi-b', index: 0, bytes: 0 }], 'not here');
  disk[4096] = disk[4096]! ^ 1;
  wait = served(1);
  server.request('pi-c', p.sha256, Buffer.from('{"v":1,"chunks":[1]}'));
  await wait;
  assert.deepEqual(sent.splice(0), [{ requester: 'pi-c', index: 1, bytes: 0 }], 'a bad chunk is never sent');
  assert.deepEqual(corrupt, [{ sha256: p.sha256, index: 1 }]);
  server.stop();
});

test('fetch: a holder that says "not here" is not asked for that chunk again before a timeout (no busy loop)', async () => {
  const cas = await open();
  const bytes = crypto.randomBytes(2 * 4096);
  const p = planChunks(bytes, 4096);
  const asked: { holder: string; chunks: number[] }[] = [];
  const timers = fakeTimers();
  const fetch = new Fetch(await cas.partial(p), { holders: () => ['lacking'], request: (holder, chunks) => asked.push({ holder, chunks }) }, { window: 2, batch: 2, timeoutMs: 1000, timers });
  fetch.start();
  assert.deepEqual(asked.splice(0), [{ holder: 'lacking', chunks: [0, 1] }]);
  fetch.onChunk('lacking', 0, Buffer.alloc(0));
  fetch.onChunk('lacking', 1, Buffer.alloc(0));
  assert.deepEqual(asked, [], 'not asked again at once');
  timers.advance(999);
  assert.deepEqual(asked, []);
  timers.advance(1);
  assert.deepEqual(asked.splice(0), [{ holder: 'lacking', chunks: [0, 1] }], 'asked again after the timeout');
  await fetch.stop();
});
