/**
 * int8 quantization (models/quantize) with the real onnxruntime: the built-in digit model, a
 * small Conv network written here, the ONNX zoo's MNIST CNN (skipped when ../shared is absent)
 * and `kizuna models quantize` end to end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KizunaError } from '../../mesh/errors.js';
import type { Tensor } from '../../mesh/tensor.js';
import { loadDigits, mulberry32, PIXELS, type Digit } from '../../models/builtin/digits-data.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { DataType, graphOf, makeNode, makeTensor, opsetVersion, readModel, tensorValueInfo, toNumber, writeModel, type IntLike, type NodeProto } from '../../models/onnx/model.js';
import { grayToPng } from '../../models/preprocess.js';
import { compareModels } from '../../models/quantize/evaluate.js';
import { quantizeModel, type Feeds } from '../../models/quantize/quantize.js';
import { loadSamples, parseNpy, sampleFiles } from '../../models/quantize/samples.js';
import { activationParams, quantizeBias, quantizeSymmetric } from '../../models/quantize/weights.js';
import { runCli } from '../helpers/cli.js';
import { expectedSharedPath, repoRoot, sharedPath } from '../helpers/shared.js';

const BUILTIN = path.join(repoRoot, 'models', 'builtin');
const { train, heldOut } = loadDigits();
const digitFeeds = (name: string, digits: readonly Digit[]): Feeds[] =>
  digits.map((d) => ({ [name]: { dtype: 'float32', shape: [1, 1, 28, 28], data: d.pixels } }));
const ops = (bytes: Uint8Array): string[] => (graphOf(readModel(bytes)).node ?? []).map((n) => n.opType ?? '');

/** Held-out accuracy of a digits model (input "input", output "logits"), one batch of 2,000. */
async function accuracy(bytes: Uint8Array): Promise<number> {
  const session = await new OnnxEngine().load(bytes);
  try {
    const data = new Float32Array(heldOut.length * PIXELS);
    heldOut.forEach((d, i) => data.set(d.pixels, i * PIXELS));
    const logits = (await session.run({ input: { dtype: 'float32', shape: [heldOut.length, 1, 28, 28], data } })).logits!.data as Float32Array;
    return heldOut.filter((d, i) => {
      const row = Array.from(logits.subarray(i * 10, i * 10 + 10));
      return row.indexOf(Math.max(...row)) === d.label;
    }).length / heldOut.length;
  } finally {
    await session.release();
  }
}

test('weights: symmetric per output channel in any layout, 7 or 8 bits; activations hold 0; bias int32 at input*weight scale', () => {
  // A Conv weight [2][1][1][2]: channel 0 holds 1 and -0.25, channel 1 holds 4 and 1.
  const w = Float32Array.of(1, -0.25, 4, 1);
  const conv = quantizeSymmetric(w, [2, 1, 1, 2], 0, { perChannel: true, bits: 7 });
  assert.deepEqual([...conv.scales], [Math.fround(1 / 63), Math.fround(4 / 63)]);
  assert.deepEqual([...conv.q], [63, -16, 63, 16]);
  const wide = quantizeSymmetric(w, [2, 1, 1, 2], 0, { perChannel: false, bits: 8 });
  assert.deepEqual([...wide.scales], [Math.fround(4 / 127)]);
  assert.deepEqual([...wide.q], [32, -8, 127, 32]);
  assert.deepEqual(activationParams(0, 6), { scale: Math.fround(6 / 255), zeroPoint: 0 });
  assert.deepEqual(activationParams(1, 2), { scale: Math.fround(2 / 255), zeroPoint: 0 }, 'a range always holds 0');
  assert.equal(activationParams(-1, 3).zeroPoint, 64);
  assert.deepEqual(activationParams(0, 0), { scale: 1, zeroPoint: 0 });
  const b = quantizeBias(Float32Array.of(0.5, -1), 0.01, Float32Array.of(0.1, 0.2));
  assert.deepEqual([...b.q], [500, -500]);
  assert.deepEqual([...b.scales], [Math.fround(0.01 * 0.1), Math.fround(0.01 * 0.2)]);
  assert.equal(quantizeBias(Float32Array.of(1e6), 1e-6, Float32Array.of(1e-6)).clamped, 1);
});

test('the built-in fp32 digits model quantized dynamically matches the shipped int8 model within 0.5 points on 2,000 held-out digits', async () => {
  const fp32 = readFileSync(path.join(BUILTIN, 'digits.onnx'));
  const { bytes, report } = await quantizeModel(fp32);
  assert.deepEqual(report.quantized, { static: {}, dynamic: { MatMul: 2 } });
  assert.deepEqual(report.skipped, []);
  assert.equal(report.calibration.samples, 0);
  assert.ok(ops(bytes).includes('MatMulInteger') && !ops(bytes).includes('MatMul'), ops(bytes).join(','));
  assert.ok(bytes.length < fp32.length * 0.3, `${bytes.length} vs ${fp32.length} bytes`);
  const [ours, shipped] = [await accuracy(bytes), await accuracy(readFileSync(path.join(BUILTIN, 'digits-int8.onnx')))];
  assert.ok(Math.abs(ours - shipped) <= 0.005, `quantized ${ours} vs shipped int8 ${shipped}`);
});

/** A small CNN: Conv+bias -> Clip(0,6) -> Conv -> Add(bias) -> Relu -> MaxPool -> Flatten -> Unsqueeze/Squeeze -> Gemm [-> Softmax]. */
function smallConvNet(opset: number, softmax: boolean): Uint8Array {
  const random = mulberry32(7);
  const values = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
  const initializers = [
    makeTensor('w1', [4, 1, 3, 3], values(36, 0.6)), makeTensor('b1', [4], values(4, 0.1)),
    makeTensor('lo', [], Float32Array.of(0)), makeTensor('hi', [], Float32Array.of(6)),
    makeTensor('w2', [6, 4, 3, 3], values(216, 0.3)), makeTensor('b2', [6, 1, 1], values(6, 0.1)),
    makeTensor('w3', [10, 96], values(960, 0.3)), makeTensor('b3', [10], values(10, 0.1)),
    ...(opset < 13 ? [] : [makeTensor('axes', [1], BigInt64Array.of(1n))]),
  ];
  const nodes: NodeProto[] = [
    makeNode('Conv', ['x', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }),
    makeNode('Clip', ['c1', 'lo', 'hi'], ['a1']),
    makeNode('Conv', ['a1', 'w2'], ['c2'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }),
    makeNode('Add', ['c2', 'b2'], ['z2']),
    makeNode('Relu', ['z2'], ['a2']),
    makeNode('MaxPool', ['a2'], ['p'], { kernel_shape: [2, 2], strides: [2, 2] }),
    makeNode('Flatten', ['p'], ['f']),
    // axes: an attribute before opset 13, an input from 13
    ...(opset < 13
      ? [makeNode('Unsqueeze', ['f'], ['u'], { axes: [1] }), makeNode('Squeeze', ['u'], ['s'], { axes: [1] })]
      : [makeNode('Unsqueeze', ['f', 'axes'], ['u']), makeNode('Squeeze', ['u', 'axes'], ['s'])]),
    makeNode('Gemm', ['s', 'w3', 'b3'], [softmax ? 'logits' : 'y'], { transB: 1, alpha: 0.5, beta: 2.5 }),
    ...(softmax ? [makeNode('Softmax', ['logits'], ['y'])] : []),
  ];
  return writeModel({
    irVersion: 7,
    opsetImport: [{ domain: '', version: opset }],
    graph: { name: 'small', node: nodes, initializer: initializers, input: [tensorValueInfo('x', DataType.FLOAT, ['N', 1, 8, 8])], output: [tensorValueInfo('y', DataType.FLOAT, ['N', 10])] },
  });
}

function randomFeeds(count: number, seed: number): Feeds[] {
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => ({ x: { dtype: 'float32', shape: [1, 1, 8, 8], data: Float32Array.from({ length: 64 }, random) } as Tensor }));
}

test('a small CNN at opset 11: Conv static QDQ (bias fused, Clip and Relu folded), Gemm dynamic (transB, alpha, beta), opset raised to 13', async () => {
  const fp32 = smallConvNet(11, false);
  const { bytes, report } = await quantizeModel(fp32, { samples: randomFeeds(64, 1) });
  assert.deepEqual(report.quantized, { static: { Conv: 2 }, dynamic: { Gemm: 1 } });
  assert.deepEqual(report.opset, { from: 11, to: 13 });
  assert.equal(report.foldedActivations, 2);
  assert.deepEqual(report.calibration, { method: 'minmax', samples: 64, tensors: 3 });
  assert.ok(report.notes.some((n) => /1 Conv -> Add\(constant\) pair/.test(n)), report.notes.join('; '));
  const model = readModel(bytes);
  assert.equal(opsetVersion(model), 13);
  const nodes = graphOf(model).node ?? [];
  assert.deepEqual(nodes.filter((n) => ['Relu', 'Clip', 'Gemm', 'Add'].includes(n.opType ?? '')).map((n) => n.opType), ['Add'], 'only the Gemm bias Add is left');
  assert.equal(nodes.filter((n) => n.opType === 'QuantizeLinear').length, 3);
  assert.ok(nodes.some((n) => n.opType === 'Unsqueeze' && n.input?.length === 2), 'Unsqueeze takes its axes as an input at opset 13');
  // Weights per output channel (axis 0), biases int32.
  const dq = nodes.filter((n) => n.opType === 'DequantizeLinear' && n.input?.[0]?.startsWith('w'));
  assert.equal(dq.length, 2);
  for (const n of dq) assert.equal(toNumber(n.attribute?.find((a) => a.name === 'axis')?.i as IntLike), 0);
  assert.ok((graphOf(model).initializer ?? []).some((t) => t.dataType === DataType.INT32), 'an int32 bias');
  assert.ok(!(graphOf(model).initializer ?? []).some((t) => ['w1', 'w2', 'w3', 'lo', 'hi', 'b2'].includes(t.name ?? '')), 'float weights dropped');
  const c = await compareModels(fp32, bytes, randomFeeds(200, 2), { runs: 20 });
  assert.ok(c.top1Agreement! >= 0.9, `top-1 agreement ${c.top1Agreement}`);
  assert.ok(c.maxAbsDiff! < 0.2, `max abs diff ${c.maxAbsDiff}`);
});

test('a model whose opset cannot be raised (Softmax at 11) is quantized with per-tensor weights and still agrees', async () => {
  const fp32 = smallConvNet(11, true);
  const { bytes, report } = await quantizeModel(fp32, { samples: randomFeeds(64, 1) });
  assert.deepEqual(report.opset, { from: 11, to: 11 });
  assert.ok(report.notes.some((n) => /opset stays 11: Softmax/.test(n)) && report.notes.some((n) => /per-tensor static weights/.test(n)), report.notes.join('; '));
  assert.deepEqual(report.quantized, { static: { Conv: 2 }, dynamic: { Gemm: 1 } });
  assert.ok(!(graphOf(readModel(bytes)).node ?? []).some((n) => n.attribute?.some((a) => a.name === 'axis') && n.opType === 'DequantizeLinear'));
  const c = await compareModels(fp32, bytes, randomFeeds(200, 2), { runs: 5 });
  assert.ok(c.top1Agreement! >= 0.9, `top-1 agreement ${c.top1Agreement}`);
});

test('static quantization without samples is refused (KZ_ERR_CONFIG); auto without samples leaves Conv in float and says why', async () => {
  await assert.rejects(quantizeModel(smallConvNet(13, false), { mode: 'static' }), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG');
  const { report } = await quantizeModel(smallConvNet(13, false));
  assert.deepEqual(report.quantized, { static: {}, dynamic: { Gemm: 1 } });
  assert.deepEqual(report.skipped.map((s) => s.op), ['Conv', 'Conv']);
  assert.match(report.skipped[0]!.reason, /calibration samples/);
});

/** A .npy file (format 1.0) of little-endian float32 values, as numpy.save writes it. */
function npy(shape: number[], data: Float32Array, descr = '<f4'): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head.writeUInt8(1, 6);
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

test('.npy samples: a folder of float32 arrays feeds the model input; other dtypes are refused', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-npy-'));
  try {
    const feeds = randomFeeds(3, 5);
    for (const [i, f] of feeds.entries()) await fs.writeFile(path.join(dir, `${i}.npy`), npy([1, 1, 8, 8], f.x!.data as Float32Array));
    await fs.writeFile(path.join(dir, 'notes.txt'), 'not a sample');
    const files = await sampleFiles(dir);
    assert.deepEqual(files.map((f) => path.basename(f)), ['0.npy', '1.npy', '2.npy']);
    const loaded = await loadSamples(files, 'x');
    assert.deepEqual(loaded, feeds);
    const { report } = await quantizeModel(smallConvNet(13, false), { samples: loaded });
    assert.equal(report.calibration.samples, 3);
    assert.throws(() => parseNpy(npy([2], Float32Array.of(1, 2), '<f8'), 'x.npy'), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG' && /'<f4'/.test(e.message));
    const png = path.join(dir, 'digit.png');
    await fs.writeFile(png, await grayToPng(new Uint8Array(28 * 28), 28, 28));
    await assert.rejects(loadSamples([png], 'x'), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG' && /give --manifest/.test(e.message));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('the ONNX zoo MNIST CNN (opset 7), static QDQ calibrated on 100 real digits, agrees with fp32 on >= 98% of 1,000 others', async (t) => {
  const file = sharedPath('models', 'mnist-7', 'mnist.onnx');
  if (!file) return t.skip(`shared model missing: ${expectedSharedPath('models', 'mnist-7', 'mnist.onnx')}`);
  const fp32 = readFileSync(file);
  const { bytes, report } = await quantizeModel(fp32, { samples: digitFeeds('Input3', train.slice(0, 100)) });
  assert.deepEqual(report.quantized.static, { Conv: 2 });
  assert.deepEqual(report.opset, { from: 7, to: 13 });
  assert.ok(ops(bytes).includes('QuantizeLinear') && ops(bytes).includes('DequantizeLinear'));
  const c = await compareModels(fp32, bytes, digitFeeds('Input3', heldOut.slice(0, 1000)), { runs: 50 });
  assert.ok(c.top1Agreement! >= 0.98, `top-1 agreement ${c.top1Agreement}`);
  assert.ok(c.int8.bytes < c.fp32.bytes);
});

test('kizuna models quantize: the digits model with PNG samples through its manifest, as JSON and as a table', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-quantize-'));
  try {
    const samples = path.join(dir, 'samples');
    await fs.mkdir(samples);
    for (const [i, d] of heldOut.slice(0, 100).entries()) {
      await fs.writeFile(path.join(samples, `${String(i).padStart(3, '0')}.png`), await grayToPng(Uint8Array.from(d.pixels, (v) => Math.round(v * 255)), 28, 28));
    }
    const out = path.join(dir, 'digits-q.onnx');
    const args = ['models', 'quantize', path.join(BUILTIN, 'digits.onnx'), out, '--samples', samples, '--manifest', path.join(BUILTIN, 'digits.json'), '--runs', '20'];
    const json = await runCli([...args, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const result = JSON.parse(json.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(result.report.quantized, { static: {}, dynamic: { MatMul: 2 } });
    assert.equal(result.comparison.samples, 100);
    assert.equal(result.comparison.output, 'logits');
    assert.ok(result.comparison.top1Agreement >= 0.98, JSON.stringify(result.comparison));
    assert.ok(result.comparison.fp32.p50Ms > 0 && result.comparison.int8.p50Ms > 0);
    const written = await fs.readFile(out);
    assert.equal(written.length, result.report.bytes.out);
    assert.ok(Math.abs((await accuracy(written)) - (await accuracy(readFileSync(path.join(BUILTIN, 'digits-int8.onnx'))))) <= 0.005);

    const text = await runCli([...args, '--per-tensor', '--no-reduce-range']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /MatMul x2 dynamic; opset 13, per-tensor 8-bit weights/);
    assert.match(text.stdout, /^fp32 +407746 +\d/m);
    assert.match(text.stdout, /agreement on 100 samples: top-1 \d+\.\d\d%/);

    const usage = await runCli(['models', 'quantize', path.join(BUILTIN, 'digits.onnx')]);
    assert.equal(usage.code, 2);
    assert.match(usage.stdout, /usage: kizuna models quantize IN OUT/);
    const noSamples = await runCli(['models', 'quantize', path.join(BUILTIN, 'digits.onnx'), out, '--mode', 'static']);
    assert.equal(noSamples.code, 1);
    assert.match(noSamples.stderr, /KZ_ERR_CONFIG: --mode static needs --samples/);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
