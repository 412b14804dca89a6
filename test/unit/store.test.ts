import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';
import { KizunaError } from '../../mesh/errors.js';
import type { Engine, ModelSession, SessionOptions } from '../../models/engine.js';
import type { Manifest } from '../../models/manifest.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { ModelStore, sha256 } from '../../models/store.js';
import { modelFolders } from '../helpers/model-folders.js';

const builtin = (file: string) => fs.readFileSync(path.join(BUILTIN_MODELS_DIR, file));
const DIGITS = JSON.parse(builtin('digits.json').toString()) as Manifest;
const INT8 = JSON.parse(builtin('digits-int8.json').toString()) as Manifest;
const ONNX = builtin('digits.onnx');
const ONNX_INT8 = builtin('digits-int8.onnx');

const folders = modelFolders('store');
test.after(() => folders.remove());
const { folder, root } = folders;

/** The real OnnxEngine, counting the sessions it opens and releases. */
class CountingEngine implements Engine {
  readonly name = 'counting-onnx';
  readonly inner = new OnnxEngine();
  loads = 0;
  releases = 0;
  async load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession> {
    const s = await this.inner.load(onnx, options);
    this.loads++;
    return {
      inputNames: s.inputNames,
      outputNames: s.outputNames,
      run: (feeds) => s.run(feeds),
      release: async () => {
        this.releases++;
        await s.release();
      },
    };
  }
}

/** The store's problems as { manifest file name: code }. */
const problemCodes = (store: ModelStore) => Object.fromEntries(store.problems.map((p) => [path.basename(p.manifest), p.code]));
const problemOf = (store: ModelStore, file: string) => store.problems.find((p) => path.basename(p.manifest) === file)?.message ?? '';
const names = (store: ModelStore) => store.list().map((m) => m.manifest.name).sort();

test('a model copied into a folder loads with its labels and runs', async (t) => {
  const store = new ModelStore(new OnnxEngine());
  t.after(() => store.close());
  await store.loadFolders([folder({ 'digits.json': DIGITS, 'digits.onnx': ONNX })]);
  assert.deepEqual(store.problems, []);
  const model = store.get('digits');
  assert.ok(model);
  assert.equal(model.bytes, ONNX.length);
  assert.deepEqual(model.labels, DIGITS.labels);
  assert.deepEqual(model.session.inputNames, ['input']);
  const out = await model.session.run({ input: { dtype: 'float32', shape: [2, 1, 28, 28], data: new Float32Array(2 * 784) } });
  assert.deepEqual(out.logits?.shape, [2, 10]);
});

test('get(name, version) honours the version', async (t) => {
  const store = new ModelStore(new OnnxEngine());
  t.after(() => store.close());
  await store.loadFolders([folder({ 'd.json': { ...DIGITS, version: '2.1.0-rc.1' }, 'digits.onnx': ONNX })]);
  assert.deepEqual(store.problems, []);
  assert.equal(store.get('digits')?.manifest.version, '2.1.0-rc.1');
  assert.equal(store.get('digits', '2.1.0-rc.1'), store.get('digits'));
  assert.equal(store.get('digits', '1.0.0'), undefined);
  assert.equal(store.get('digits', ''), undefined);
  assert.equal(store.get('digit'), undefined);
  assert.equal(store.get('nope', '2.1.0-rc.1'), undefined);
});

test('a tampered .onnx (one byte flipped) is refused and recorded; the other models still load', async (t) => {
  const engine = new CountingEngine();
  const store = new ModelStore(engine);
  t.after(() => store.close());
  const tampered = Buffer.from(ONNX);
  tampered[tampered.length >> 1]! ^= 0x01;
  const dir = folder({ 'digits.json': DIGITS, 'digits.onnx': tampered, 'digits-int8.json': INT8, 'digits-int8.onnx': ONNX_INT8 });
  await store.loadFolders([dir]);
  assert.deepEqual(problemCodes(store), { 'digits.json': 'KZ_ERR_MODEL_INTEGRITY' });
  assert.equal(store.problems[0]?.manifest, path.join(dir, 'digits.json'));
  assert.match(problemOf(store, 'digits.json'), new RegExp(`sha256 is ${sha256(tampered)}, the manifest says ${DIGITS.sha256}`));
  assert.equal(store.get('digits'), undefined, 'never served');
  assert.deepEqual(names(store), ['digits-int8']);
  assert.equal(engine.loads, 1, 'the tampered bytes never reached the runtime');
  await assert.rejects(store.load(path.join(dir, 'digits.json')), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_MODEL_INTEGRITY');
});

test('each bad manifest is KZ_ERR_MANIFEST, recorded and skipped, while a good one loads', async (t) => {
  const engine = new CountingEngine();
  const store = new ModelStore(engine);
  t.after(() => store.close());
  const { labels: _labels, ...unlabelled } = DIGITS;
  const dir = folder({
    'digits.onnx': ONNX,
    'digits.json': DIGITS,
    'bad-name.json': { ...DIGITS, name: 'bad name!' },
    'bad-sha.json': { ...DIGITS, name: 'bad-sha', sha256: DIGITS.sha256.slice(1) },
    'no-inputs.json': { ...DIGITS, name: 'no-inputs', inputs: [] },
    'extra-key.json': { ...DIGITS, name: 'extra-key', colour: 'red' },
    'not-json.json': '{"name": "digits",',
    'lost-file.json': { ...DIGITS, name: 'lost-file', file: 'lost.onnx' },
    'lost-labels.json': { ...unlabelled, name: 'lost-labels', labelsFile: 'absent.txt' },
    'z-duplicate.json': { ...DIGITS, version: '9.9.9' },
    'wrong-input.json': { ...DIGITS, name: 'wrong-input', inputs: [{ ...DIGITS.inputs[0]!, name: 'pixels' }] },
    'labelled.json': { ...unlabelled, name: 'labelled', labelsFile: 'labels.txt' },
    'labels.txt': 'zero\none\ntwo\n',
    'notes.txt': 'not a manifest',
  });
  await store.loadFolders([dir, path.join(root, 'no-such-folder')]);
  const bad = ['bad-name', 'bad-sha', 'no-inputs', 'extra-key', 'not-json', 'lost-file', 'lost-labels', 'z-duplicate', 'wrong-input'];
  assert.deepEqual(problemCodes(store), {
    ...Object.fromEntries(bad.map((b) => [`${b}.json`, 'KZ_ERR_MANIFEST'])),
    'no-such-folder': 'KZ_ERR_MANIFEST',
  });
  assert.deepEqual(names(store), ['digits', 'labelled']);
  assert.equal(store.get('digits')?.manifest.version, '1.0.0', 'the first of two same-named models stays');
  assert.deepEqual(store.get('labelled')?.labels, ['zero', 'one', 'two']);
  assert.match(problemOf(store, 'bad-name.json'), /\/name/);
  assert.match(problemOf(store, 'lost-file.json'), /lost\.onnx/);
  assert.match(problemOf(store, 'lost-labels.json'), /labels file .*absent\.txt/);
  assert.match(problemOf(store, 'z-duplicate.json'), /digits is already loaded/);
  assert.match(problemOf(store, 'wrong-input.json'), /has no input pixels/);
  assert.match(problemOf(store, 'no-such-folder'), /model folder/);
  // The session opened to check wrong-input's input names was released at once.
  assert.equal(engine.loads - engine.releases, 2);
});

test('close() releases every session and empties the store', async () => {
  const engine = new CountingEngine();
  const store = new ModelStore(engine, { threads: 1 });
  await store.loadFolders([BUILTIN_MODELS_DIR]);
  assert.deepEqual(names(store), ['digits', 'digits-int8']);
  assert.equal(engine.loads, 2);
  await store.close();
  assert.equal(engine.releases, 2);
  assert.deepEqual(store.list(), []);
  assert.equal(store.get('digits'), undefined);
  await store.close();
  assert.equal(engine.releases, 2, 'a second close releases nothing twice');
});

test('a model file onnxruntime cannot parse is refused with KZ_ERR_MODEL_LOAD', async (t) => {
  const store = new ModelStore(new OnnxEngine());
  t.after(() => store.close());
  const junk = Buffer.from('not an onnx model');
  await store.loadFolders([folder({ 'junk.onnx': junk, 'junk.json': { ...DIGITS, name: 'junk', file: 'junk.onnx', sha256: sha256(junk) } })]);
  assert.deepEqual(problemCodes(store), { 'junk.json': 'KZ_ERR_MODEL_LOAD' });
});

test('a manifest naming an output the model lacks is refused at load', async (t) => {
  const store = new ModelStore(new OnnxEngine());
  t.after(() => store.close());
  const manifest = { ...DIGITS, postprocess: { kind: 'classify', output: 'probs', softmax: true, topK: 3 } };
  await store.loadFolders([folder({ 'digits.onnx': ONNX, 'digits.json': manifest })]);
  assert.deepEqual(problemCodes(store), { 'digits.json': 'KZ_ERR_MANIFEST' });
});
