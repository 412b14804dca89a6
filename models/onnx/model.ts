/**
 * The ONNX model seam: any ModelProto in, any ModelProto out, with onnx-proto's codecs (ONNX 1.10
 * schema). The quantizer and the tests go through here, never through onnx-proto directly.
 *
 * What a round trip keeps: every field of the ONNX 1.10 schema, so a model this project wrote
 * comes back byte for byte. Fields newer than ONNX 1.10 are dropped by the decoder, and another
 * writer's field order or packing may differ, so other models come back semantically equal (the
 * same graph, the same outputs), not always byte-identical.
 *
 * Weights kept in external files (models over 2 GB, or saved with save_as_external_data) are
 * refused with KZ_ERR_MODEL_LOAD: the bytes handed in are all we have.
 */
import onnxProto from 'onnx-proto';
import { KizunaError } from '../../mesh/errors.js';

const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;
export const DataType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;

/** protobufjs gives int64 fields as Long objects (or numbers); every size we read fits 2^53. */
export type IntLike = number | { toNumber(): number } | null | undefined;
export const toNumber = (v: IntLike): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber());

/** Decodes a model; KZ_ERR_MODEL_LOAD when the bytes are not ONNX or keep weights outside. */
export function readModel(bytes: Uint8Array): ModelProto {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MODEL_LOAD', `not an ONNX model: ${(err as Error).message}`, { cause: err });
  }
  // Random bytes can decode as an empty message: a model has a graph with at least one node.
  if (!model.graph || !model.graph.node?.length) throw new KizunaError('KZ_ERR_MODEL_LOAD', 'not an ONNX model: no graph nodes');
  const external = externalTensors(model.graph);
  if (external.length) {
    const names = external.slice(0, 3).join(', ') + (external.length > 3 ? ', ...' : '');
    throw new KizunaError(
      'KZ_ERR_MODEL_LOAD',
      `${external.length} tensor(s) keep their data in external files (${names}); save the model as one file first ` +
        '(onnx.save_model(model, path, save_as_external_data=False)), which works below 2 GB',
    );
  }
  return model;
}

export function writeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/** A deep copy (through the codec), for edits that must not touch the original. */
export function cloneModel(model: ModelProto): ModelProto {
  return onnx.ModelProto.decode(writeModel(model));
}

/** Names of tensors stored outside the file, in the graph, its Constant nodes and subgraphs. */
function externalTensors(graph: GraphProto): string[] {
  const out: string[] = [];
  const isExternal = (t: TensorProto | null | undefined): boolean => !!t && (t.dataLocation === EXTERNAL || (t.externalData?.length ?? 0) > 0);
  for (const t of graph.initializer ?? []) if (isExternal(t)) out.push(t.name ?? '?');
  for (const s of graph.sparseInitializer ?? []) if (isExternal(s.values)) out.push(s.values?.name ?? '?');
  for (const n of graph.node ?? []) {
    for (const a of n.attribute ?? []) {
      if (isExternal(a.t)) out.push(a.t?.name || `${n.name}.${a.name}`);
      for (const t of a.tensors ?? []) if (isExternal(t)) out.push(t.name ?? '?');
      for (const g of [a.g, ...(a.graphs ?? [])]) if (g) out.push(...externalTensors(g));
    }
  }
  return out;
}

/** The version of an operator set the model imports ('' is the default ai.onnx domain), or 0. */
export function opsetVersion(model: ModelProto, domain = ''): number {
  const wanted = domain === 'ai.onnx' ? '' : domain;
  const entry = (model.opsetImport ?? []).find((o) => (o.domain ?? '') === wanted || (wanted === '' && o.domain === 'ai.onnx'));
  return entry ? toNumber(entry.version as IntLike) : 0;
}

export function setOpsetVersion(model: ModelProto, version: number, domain = ''): void {
  const list = (model.opsetImport ??= []);
  const entry = list.find((o) => (o.domain ?? '') === domain || (domain === '' && o.domain === 'ai.onnx'));
  if (entry) entry.version = version;
  else list.push({ domain, version });
}

export function graphOf(model: ModelProto): GraphProto {
  if (!model.graph) throw new KizunaError('KZ_ERR_MODEL_LOAD', 'not an ONNX model: no graph');
  return model.graph;
}

export function initializerMap(graph: GraphProto): Map<string, TensorProto> {
  return new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
}

export const dimsOf = (t: TensorProto): number[] => (t.dims ?? []).map((d) => toNumber(d as IntLike));

/** A FLOAT tensor's values, from raw_data (little-endian, copied so it is aligned) or float_data. */
export function floatValues(t: TensorProto): Float32Array {
  if (t.dataType !== DataType.FLOAT) throw new KizunaError('KZ_ERR_MODEL_LOAD', `tensor ${t.name}: data type ${t.dataType} is not float32`);
  const count = dimsOf(t).reduce((a, b) => a * b, 1);
  const raw = t.rawData;
  const values = raw && raw.byteLength > 0 ? new Float32Array(Uint8Array.from(raw).buffer) : Float32Array.from(t.floatData ?? []);
  if (values.length !== count) throw new KizunaError('KZ_ERR_MODEL_LOAD', `tensor ${t.name}: ${values.length} values for shape [${dimsOf(t).join(',')}]`);
  return values;
}

/** An INT64 tensor's values as numbers (shapes, axes), from raw_data or int64_data. */
export function int64Values(t: TensorProto): number[] {
  if (t.dataType !== DataType.INT64) throw new KizunaError('KZ_ERR_MODEL_LOAD', `tensor ${t.name}: data type ${t.dataType} is not int64`);
  const raw = t.rawData;
  if (raw && raw.byteLength > 0) return [...new BigInt64Array(Uint8Array.from(raw).buffer)].map(Number);
  return (t.int64Data ?? []).map((v) => toNumber(v as IntLike));
}

type TypedData = Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;
const DATA_TYPE_OF = (data: TypedData): number =>
  data instanceof Float32Array ? DataType.FLOAT
  : data instanceof Int8Array ? DataType.INT8
  : data instanceof Uint8Array ? DataType.UINT8
  : data instanceof Int32Array ? DataType.INT32
  : DataType.INT64;

/** An initializer from a typed array, stored as little-endian raw bytes. */
export function makeTensor(name: string, dims: readonly number[], data: TypedData): TensorProto {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`tensor ${name}: ${data.length} values for shape [${dims.join(',')}]`);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dims: [...dims], dataType: DATA_TYPE_OF(data), rawData: Uint8Array.from(bytes) };
}

/** A value info with a known element type and, optionally, no shape (graph outputs for calibration). */
export function tensorValueInfo(name: string, elemType: number, shape?: readonly (number | string)[]): ValueInfoProto {
  const tensorType: onnxProto.onnx.TypeProto.ITensor = { elemType };
  if (shape) tensorType.shape = { dim: shape.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) };
  return { name, type: { tensorType } };
}

export function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}
export const attrInt = (node: NodeProto, name: string, fallback: number): number => {
  const a = attribute(node, name);
  return a ? toNumber(a.i as IntLike) : fallback;
};
export const attrFloat = (node: NodeProto, name: string, fallback: number): number => attribute(node, name)?.f ?? fallback;
export const attrInts = (node: NodeProto, name: string): number[] | undefined => attribute(node, name)?.ints?.map((v) => toNumber(v as IntLike));

type AttrValue = number | string | number[];

/** A node; integer-valued numbers become INT attributes, other numbers FLOAT, arrays INTS. */
export function makeNode(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string, domain?: string): NodeProto {
  const attribute = Object.entries(attrs).map(([key, v]): AttributeProto => {
    if (typeof v === 'string') return { name: key, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
    if (Array.isArray(v)) return { name: key, type: AttributeType.INTS, ints: v };
    return Number.isInteger(v) ? { name: key, type: AttributeType.INT, i: v } : { name: key, type: AttributeType.FLOAT, f: v };
  });
  return { opType, input: inputs, output: outputs, attribute, name: name ?? outputs[0] ?? opType, ...(domain ? { domain } : {}) };
}
