/**
 * The catalogue index (models/catalog.ts): every manifest has its download sources, the sources
 * match the real files of the shared folder byte for byte (size and sha256, when it is there),
 * URLs are pinned, and a broken catalogue is refused with the file and entry named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KizunaError } from '../../mesh/errors.js';
import { CATALOG_DIR, findEntry, loadCatalog, sourceUrl, SOURCES_FILE } from '../../models/catalog.js';
import { modelFolders } from '../helpers/model-folders.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

const code = (c: string) => (err: unknown) => err instanceof KizunaError && err.code === c;

test('the catalogue: five real models, each with its sources; labels exactly where the manifest names a labels file', async () => {
  const catalog = await loadCatalog();
  assert.deepEqual(catalog.map((e) => e.name), ['mnist', 'mobilenetv2-fp32', 'mobilenetv2-int8', 'silero-vad', 'yolox-nano']);
  for (const e of catalog) {
    assert.equal(e.model.sha256, e.manifest.sha256);
    assert.equal(Boolean(e.labels), Boolean(e.manifest.labelsFile), e.name);
    assert.ok(e.manifest.license, `${e.name} has a licence`);
  }
  const mnist = findEntry(catalog, 'mnist').manifest;
  assert.deepEqual(mnist.inputs, [{ name: 'Input3', dtype: 'float32', shape: [1, 1, 28, 28] }]);
  assert.deepEqual(mnist.labels, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  const vad = findEntry(catalog, 'silero-vad').manifest;
  assert.deepEqual(vad.inputs.map((i) => `${i.name}:${i.dtype}${JSON.stringify(i.shape)}`), ['input:float32["batch","samples"]', 'sr:int64[]', 'h:float32[2,"batch",64]', 'c:float32[2,"batch",64]']);
  assert.deepEqual(vad.postprocess, { kind: 'none' });
  assert.equal(vad.preprocess, undefined);
});

test('public URLs are https and pinned to a commit or a package version; only the derived fp32 model has none', async () => {
  for (const e of await loadCatalog()) {
    for (const s of [e.model, ...(e.labels ? [e.labels] : [])]) {
      if (s.url === null) {
        assert.equal(e.name, 'mobilenetv2-fp32');
        assert.match(s.note ?? '', /no public copy/);
        continue;
      }
      assert.match(s.url, /^https:\/\/[^/]+\/.*(\/[0-9a-f]{40}\/|@\d+\.\d+\.\d+\/)/, `${e.name}: ${s.url}`);
    }
  }
});

test('every source matches the shared folder file at its mirror path: size and sha256', async (t) => {
  for (const e of await loadCatalog()) {
    for (const s of [e.model, ...(e.labels ? [e.labels] : [])]) {
      const file = sharedPath(...s.mirror.split('/'));
      if (!file) return t.skip(`shared folder missing: ${expectedSharedPath(...s.mirror.split('/'))}`);
      const bytes = fs.readFileSync(file);
      assert.equal(bytes.length, s.size, `${e.name}: size of ${s.mirror}`);
      assert.equal(createHash('sha256').update(bytes).digest('hex'), s.sha256, `${e.name}: sha256 of ${s.mirror}`);
    }
  }
});

test('sourceUrl: a base URL replaces the public URL with base + mirror path', () => {
  const s = { url: 'https://example.org/a/b.onnx', mirror: 'models/mnist-7/mnist.onnx', size: 1 };
  assert.equal(sourceUrl(s), 'https://example.org/a/b.onnx');
  assert.equal(sourceUrl(s, 'http://127.0.0.1:8080'), 'http://127.0.0.1:8080/models/mnist-7/mnist.onnx');
  assert.equal(sourceUrl(s, 'http://mirror.lan/kizuna/'), 'http://mirror.lan/kizuna/models/mnist-7/mnist.onnx');
  assert.equal(sourceUrl(s, 'http://mirror.lan/kizuna'), 'http://mirror.lan/kizuna/models/mnist-7/mnist.onnx');
  assert.equal(sourceUrl({ ...s, mirror: 'a b/c#d.onnx' }, 'http://m/'), 'http://m/a%20b/c%23d.onnx');
  assert.throws(() => sourceUrl(s, 'ftp://mirror.lan/'), code('KZ_ERR_CONFIG'));
  assert.throws(() => sourceUrl(s, 'not a url'), code('KZ_ERR_CONFIG'));
  assert.throws(() => sourceUrl({ ...s, url: null }), (err) => code('KZ_ERR_CONFIG')(err) && /no public download URL.*--base-url/.test((err as Error).message));
});

test('findEntry: an unknown name is KZ_ERR_UNKNOWN_MODEL listing the catalogue', async () => {
  const catalog = await loadCatalog();
  assert.throws(() => findEntry(catalog, 'resnet'), (err) => code('KZ_ERR_UNKNOWN_MODEL')(err) && /it has: mnist, mobilenetv2-fp32, mobilenetv2-int8, silero-vad, yolox-nano/.test((err as Error).message));
});

test('a broken catalogue is refused with KZ_ERR_MANIFEST naming what is wrong', async (t) => {
  const folders = modelFolders('catalog');
  t.after(() => folders.remove());
  const mnist = JSON.parse(fs.readFileSync(path.join(CATALOG_DIR, 'mnist.json'), 'utf8'));
  const source = { url: null, mirror: 'models/mnist-7/mnist.onnx', size: 26627 };
  const cases: [string, Record<string, object>, RegExp][] = [
    ['no sources entry', { 'mnist.json': mnist, [SOURCES_FILE]: { models: {} } }, /no entry for catalogue model mnist/],
    ['a mirror path climbing out', { 'mnist.json': mnist, [SOURCES_FILE]: { models: { mnist: { model: { ...source, mirror: '../x.onnx' } } } } }, /mirror path "..\/x.onnx" climbs out/],
    ['a source without a manifest', { 'mnist.json': mnist, [SOURCES_FILE]: { models: { mnist: { model: source }, other: { model: source } } } }, /entries without a catalogue manifest: other/],
    ['a labels source the manifest does not name', { 'mnist.json': mnist, [SOURCES_FILE]: { models: { mnist: { model: source, labels: source } } } }, /labels source is needed exactly when/],
    ['a manifest not named after its model', { 'digits.json': mnist, [SOURCES_FILE]: { models: { mnist: { model: source } } } }, /is NAME.json, and this one names mnist/],
    ['an http (not https) public URL', { 'mnist.json': mnist, [SOURCES_FILE]: { models: { mnist: { model: { ...source, url: 'http://x/y' } } } } }, /sources.json: \/models\/mnist\/model\/url/],
    ['an invalid manifest', { 'mnist.json': { ...mnist, sha256: 'nope' }, [SOURCES_FILE]: { models: { mnist: { model: source } } } }, /mnist.json: \/sha256/],
  ];
  for (const [what, files, message] of cases) {
    await assert.rejects(loadCatalog(folders.folder(files)), (err) => code('KZ_ERR_MANIFEST')(err) && message.test((err as Error).message), what);
  }
});
