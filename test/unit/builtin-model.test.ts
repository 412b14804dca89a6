/** The committed built-in model: files match manifests, run in onnxruntime, and stay accurate. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { ManifestSchema, type Manifest } from '../../models/manifest.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { loadDigits, PIXELS } from '../../models/builtin/digits-data.js';
import { trainMlp } from '../../models/builtin/train.js';
import { decodeModel, DataType } from '../../models/builtin/onnx-writer.js';
import { quantizeWeights } from '../../models/builtin/quantize.js';

const DIR = new URL('../../../models/builtin/', import.meta.url);
// Measured by `npm run make-builtin`: fp32 97.55%, int8 97.55% on the 2,000 held-out digits.
const FP32_FLOOR = 0.97;
const INT8_MAX_LOSS = 0.005;

const { train, heldOut } = loadDigits();

function load(name: string): { manifest: Manifest; bytes: Buffer } {
  const manifest = JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8')) as Manifest;
  return { manifest, bytes: readFileSync(new URL(manifest.file, DIR)) };
}

async function accuracy(bytes: Uint8Array): Promise<number> {
  const session = await new OnnxEngine().load(bytes, { threads: 1 });
  const data = new Float32Array(heldOut.length * PIXELS);
  heldOut.forEach((d, i) => data.set(d.pixels, i * PIXELS));
  const out = await session.run({ input: { dtype: 'float32', shape: [heldOut.length, 1, 28, 28], data } });
  await session.release();
  const logits = out.logits;
  assert.ok(logits);
  assert.deepEqual(logits.shape, [heldOut.length, 10]);
  let correct = 0;
  heldOut.forEach((d, i) => {
    const row = Array.from(logits.data.subarray(i * 10, i * 10 + 10) as Float32Array);
    if (row.indexOf(Math.max(...row)) === d.label) correct++;
  });
  return correct / heldOut.length;
}

test('the split is fixed: 8,000 train and 2,000 held-out, white ink on black in 0..1', () => {
  assert.equal(train.length, 8000);
  assert.equal(heldOut.length, 2000);
  const again = loadDigits();
  assert.deepEqual(again.heldOut.map((d) => d.label), heldOut.map((d) => d.label));
  assert.deepEqual(again.heldOut[0]?.pixels, heldOut[0]?.pixels);
  const d = heldOut[0];
  assert.ok(d && d.pixels.length === PIXELS);
  assert.ok(d.pixels.every((v) => v >= 0 && v <= 1));
  assert.equal(d.pixels[0], 0, 'the corner is background, so background is 0 (ink is 1)');
});

for (const name of ['digits', 'digits-int8']) {
  test(`${name}: manifest validates and its sha256 matches the committed file`, () => {
    const { manifest, bytes } = load(name);
    assert.deepEqual([...Value.Errors(ManifestSchema, manifest)].map((e) => `${e.path} ${e.message}`), []);
    assert.equal(manifest.name, name);
    assert.equal(manifest.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.deepEqual(manifest.labels, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  });
}

test('both models run in onnxruntime and reach their accuracy floor on held-out digits', async () => {
  const fp32 = await accuracy(load('digits').bytes);
  const int8 = await accuracy(load('digits-int8').bytes);
  assert.ok(fp32 >= FP32_FLOOR, `fp32 accuracy ${fp32}`);
  assert.ok(int8 >= fp32 - INT8_MAX_LOSS, `int8 accuracy ${int8} vs fp32 ${fp32}`);
});

test('the int8 model uses integer ops, 7-bit weights, and is much smaller', () => {
  const fp32 = load('digits').bytes;
  const int8 = load('digits-int8').bytes;
  const graph = decodeModel(int8).graph;
  assert.ok(graph);
  const ops = (graph.node ?? []).map((n) => n.opType);
  assert.ok(ops.includes('MatMulInteger') && ops.includes('DynamicQuantizeLinear'), ops.join(','));
  assert.ok(!ops.includes('MatMul'), 'no float MatMul left');
  const weights = (graph.initializer ?? []).filter((t) => t.dataType === DataType.INT8);
  assert.ok(weights.length >= 2);
  for (const { rawData: raw } of weights) {
    assert.ok(raw);
    for (const v of new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength)) assert.ok(v >= -63 && v <= 63);
  }
  assert.ok(int8.length < fp32.length * 0.3, `${int8.length} vs ${fp32.length} bytes`);
});

test('quantizeWeights: symmetric per channel, reduce range, zero columns stay finite', () => {
  const w = Float32Array.from([0.9, -2, 0, 1.2, -0.3, 0]); // [3][2]: column 0 max 0.9, column 1 max 2
  const { q, scales } = quantizeWeights(w, 3, 2);
  assert.deepEqual([...q], [63, -63, 0, 38, -21, 0]);
  assert.deepEqual([...scales], [Math.fround(Math.fround(0.9) / 63), Math.fround(2 / 63)]);
  const zero = quantizeWeights(new Float32Array(4), 2, 2);
  assert.ok(zero.scales.every((s) => s > 0));
});

test('training is deterministic: two short runs give identical weights', () => {
  const opts = { epochs: 1, hidden: [32] };
  const a = trainMlp(train.slice(0, 500), opts);
  const b = trainMlp(train.slice(0, 500), opts);
  assert.equal(a.length, 2);
  a.forEach((layer, l) => {
    assert.deepEqual(layer.w, b[l]?.w);
    assert.deepEqual(layer.b, b[l]?.b);
  });
  const other = trainMlp(train.slice(0, 500), { ...opts, seed: 1 });
  assert.notDeepEqual(other[0]?.w, a[0]?.w);
});
