/**
 * Small helpers to write ONNX models with onnx-proto: tensors, nodes, value infos with symbolic
 * dimensions, and the encoded ModelProto. Enough for the built-in model and the int8 quantizer.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export const DataType = onnx.TensorProto.DataType;

/** ONNX IR 8 with opset 13: loads in onnxruntime 1.30 and in every runtime of the last years. */
export const IR_VERSION = 8;
export const OPSET = 13;

type Dims = readonly (number | string)[];
type TypedData = Float32Array | Int8Array | Uint8Array | Int32Array;

const DATA_TYPE_OF = (data: TypedData): number =>
  data instanceof Float32Array ? DataType.FLOAT
  : data instanceof Int8Array ? DataType.INT8
  : data instanceof Uint8Array ? DataType.UINT8
  : DataType.INT32;

/** An initializer from a typed array, stored as little-endian raw bytes (ONNX's own layout). */
export function tensor(name: string, dims: readonly number[], data: TypedData): TensorProto {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`tensor ${name}: ${data.length} values for shape [${dims.join(',')}]`);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dims: [...dims], dataType: DATA_TYPE_OF(data), rawData: Uint8Array.from(bytes) };
}

type AttrValue = number | string | number[];

/** A node; integer-valued numbers become INT attributes, other numbers FLOAT. */
export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): NodeProto {
  const attribute = Object.entries(attrs).map(([key, v]) => {
    const A = onnx.AttributeProto.AttributeType;
    if (typeof v === 'string') return { name: key, type: A.STRING, s: new TextEncoder().encode(v) };
    if (Array.isArray(v)) return { name: key, type: A.INTS, ints: v };
    return Number.isInteger(v) ? { name: key, type: A.INT, i: v } : { name: key, type: A.FLOAT, f: v };
  });
  return { opType, input: inputs, output: outputs, attribute, name: name ?? outputs[0] ?? opType };
}

/** A graph input or output; string dimensions are symbolic (e.g. the batch "N"). */
export function valueInfo(name: string, elemType: number, shape: Dims): ValueInfoProto {
  const dim = shape.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

export interface ModelSpec {
  name: string;
  doc?: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  opset?: number;
  /** Extra opset domains, e.g. { 'com.microsoft': 1 } for onnxruntime's contrib ops. */
  domains?: Record<string, number>;
  producer?: string;
}

export function encodeModel(spec: ModelSpec): Uint8Array {
  const opsetImport = [
    { domain: '', version: spec.opset ?? OPSET },
    ...Object.entries(spec.domains ?? {}).map(([domain, version]) => ({ domain, version })),
  ];
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport,
    producerName: spec.producer ?? 'kizuna',
    producerVersion: '0.1.0',
    docString: spec.doc ?? '',
    graph: {
      name: spec.name,
      node: spec.nodes,
      initializer: spec.initializers,
      input: spec.inputs,
      output: spec.outputs,
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The parsed model, for checks and (later) for quantizing models written elsewhere. */
export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
