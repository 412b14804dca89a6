/** The ONNX model seam (models/onnx): read, write, initializers, opsets, and what it refuses. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';
import { KizunaError } from '../../mesh/errors.js';
import type { Tensor } from '../../mesh/tensor.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { GraphIndex } from '../../models/onnx/graph.js';
import {
  DataType, dimsOf, floatValues, graphOf, initializerMap, int64Values, makeNode, makeTensor, opsetVersion, readModel, setOpsetVersion,
  tensorValueInfo, writeModel, type ModelProto,
} from '../../models/onnx/model.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

const BUILTIN = new URL('../../../models/builtin/', import.meta.url);
const isCode = (code: string, message?: RegExp) => (e: unknown): boolean =>
  e instanceof KizunaError && e.code === code && (!message || message.test(e.message));

/** A model of one Add: y = x + c, with c given as float_data or raw_data. */
function addModel(c: onnxProto.onnx.ITensorProto, opset = 13): ModelProto {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: 'add',
      node: [makeNode('Add', ['x', 'c'], ['y'])],
      initializer: [c],
      input: [tensorValueInfo('x', DataType.FLOAT, [2])],
      output: [tensorValueInfo('y', DataType.FLOAT, [2])],
    },
  };
}

/** Outputs of a model on the given feeds, by output name. */
async function outputs(bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session = await new OnnxEngine().load(bytes);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

for (const file of ['digits.onnx', 'digits-int8.onnx']) {
  test(`${file}: read then written back is byte-identical`, () => {
    const bytes = readFileSync(new URL(file, BUILTIN));
    const again = writeModel(readModel(bytes));
    assert.equal(Buffer.compare(Buffer.from(again), bytes), 0);
  });
}

test('digits.onnx: its graph, opset and initializers read as the generator wrote them', () => {
  const model = readModel(readFileSync(new URL('digits.onnx', BUILTIN)));
  assert.equal(opsetVersion(model), 13);
  const graph = graphOf(model);
  assert.deepEqual(graph.input?.map((v) => v.name), ['input']);
  assert.deepEqual(graph.output?.map((v) => v.name), ['logits']);
  assert.deepEqual(graph.node?.filter((n) => n.opType === 'MatMul').map((n) => n.input?.[1]), ['fc1.weight', 'fc2.weight']);
  const w = initializerMap(graph).get('fc1.weight');
  assert.ok(w);
  assert.deepEqual(dimsOf(w), [784, 128]);
  const values = floatValues(w);
  assert.equal(values.length, 784 * 128);
  assert.ok(values.every(Number.isFinite) && values.some((v) => v !== 0));
  const index = new GraphIndex(graph);
  assert.equal(index.producer.get('logits')?.opType, 'Identity');
  assert.deepEqual(index.readers('flat').map((n) => n.opType), ['MatMul']);
  assert.equal(index.fresh('flat'), 'flat_1');
  assert.equal(index.fresh('flat'), 'flat_2');
});

test('float initializers read alike from float_data and raw_data, and both models compute alike', async () => {
  const values = [1.5, -2.25];
  const viaFloat = addModel({ name: 'c', dims: [2], dataType: DataType.FLOAT, floatData: values });
  const viaRaw = addModel(makeTensor('c', [2], Float32Array.from(values)));
  for (const m of [viaFloat, viaRaw]) assert.deepEqual([...floatValues(initializerMap(graphOf(m)).get('c')!)], values);
  const x: Tensor = { dtype: 'float32', shape: [2], data: Float32Array.of(1, 1) };
  for (const m of [viaFloat, viaRaw]) {
    const y = (await outputs(writeModel(readModel(writeModel(m))), { x })).y!;
    assert.deepEqual([...(y.data as Float32Array)], [2.5, -1.25]);
  }
  const shape = makeTensor('s', [3], BigInt64Array.of(1n, -1n, 7n));
  assert.deepEqual(int64Values(shape), [1, -1, 7]);
  assert.deepEqual(int64Values({ name: 's', dims: [2], dataType: DataType.INT64, int64Data: [4, 5] }), [4, 5]);
  assert.throws(() => floatValues(shape), isCode('KZ_ERR_MODEL_LOAD', /not float32/));
  assert.throws(() => floatValues({ name: 'short', dims: [3], dataType: DataType.FLOAT, floatData: [1] }), isCode('KZ_ERR_MODEL_LOAD', /1 values/));
});

test('opsets: read and set, ai.onnx spelled either way', () => {
  const m = addModel(makeTensor('c', [2], new Float32Array(2)), 11);
  assert.equal(opsetVersion(m), 11);
  assert.equal(opsetVersion(m, 'com.microsoft'), 0);
  setOpsetVersion(m, 13);
  setOpsetVersion(m, 1, 'com.microsoft');
  const back = readModel(writeModel(m));
  assert.equal(opsetVersion(back), 13);
  assert.equal(opsetVersion(back, 'ai.onnx'), 13);
  assert.equal(opsetVersion(back, 'com.microsoft'), 1);
});

test('external data is refused with KZ_ERR_MODEL_LOAD, naming the tensors and the way out', () => {
  const external = {
    name: 'c', dims: [2], dataType: DataType.FLOAT,
    dataLocation: onnxProto.onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: '0' }, { key: 'length', value: '8' }],
  };
  const bytes = writeModel(addModel(external));
  assert.throws(() => readModel(bytes), isCode('KZ_ERR_MODEL_LOAD', /1 tensor\(s\) keep their data in external files \(c\).*save_as_external_data=False/));
  // Inside a Constant node too.
  const constant = addModel(makeTensor('c', [2], new Float32Array(2)));
  graphOf(constant).node!.unshift({ opType: 'Constant', output: ['k'], attribute: [{ name: 'value', type: 4, t: { ...external, name: 'k' } }] });
  assert.throws(() => readModel(writeModel(constant)), isCode('KZ_ERR_MODEL_LOAD', /external files \(k\)/));
});

test('bytes that are not ONNX are KZ_ERR_MODEL_LOAD', () => {
  assert.throws(() => readModel(new TextEncoder().encode('{"name": "digits"}')), isCode('KZ_ERR_MODEL_LOAD', /not an ONNX model/));
  assert.throws(() => readModel(new Uint8Array(0)), isCode('KZ_ERR_MODEL_LOAD', /no graph/));
  assert.throws(() => readModel(Uint8Array.of(0xff, 0xff, 0xff, 0xff)), isCode('KZ_ERR_MODEL_LOAD', /not an ONNX model/));
});

// Models written by other tools: the round trip may reorder or repack bytes, never change results.
const THIRD_PARTY: { file: string[]; input: string; shape: number[] }[] = [
  { file: ['models', 'mnist-7', 'mnist.onnx'], input: 'Input3', shape: [1, 1, 28, 28] },
  { file: ['models', 'mobilenetv2-12-int8', 'mobilenetv2-12-int8.onnx'], input: 'input', shape: [1, 3, 224, 224] },
];
for (const { file, input, shape } of THIRD_PARTY) {
  test(`${file.at(-1)}: read then written back computes the same outputs`, async (t) => {
    const path = sharedPath(...file);
    if (!path) return t.skip(`shared model missing: ${expectedSharedPath(...file)}`);
    const bytes = readFileSync(path);
    const again = writeModel(readModel(bytes));
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 1000;
    const feeds = { [input]: { dtype: 'float32' as const, shape, data } };
    const [a, b] = [await outputs(bytes, feeds), await outputs(again, feeds)];
    assert.deepEqual(Object.keys(b), Object.keys(a));
    for (const name of Object.keys(a)) assert.deepEqual(b[name]!.data, a[name]!.data, `output ${name}`);
    assert.equal(graphOf(readModel(again)).node?.length, graphOf(readModel(bytes)).node?.length);
  });
}
