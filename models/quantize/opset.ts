/**
 * Raising a model's ai.onnx opset to 13, which per-channel QuantizeLinear/DequantizeLinear (the
 * `axis` attribute) needs; DynamicQuantizeLinear needs 11. An opset import applies to every node,
 * so the upgrade is allowed only when each node means the same at 13 as at the model's opset:
 * a table gives, for each operator, the first opset from which its meaning (with its default
 * attributes) has not changed up to 13, from the ONNX operator changelog (MaxPool 8 only added an
 * optional Indices output and AveragePool 7 a count_include_pad whose default keeps version 1's
 * averaging, so both count from 1). Two changes are
 * converted: Squeeze/Unsqueeze `axes` attribute -> input (13), and Dropout, an identity at
 * inference, -> Identity. Anything else (Softmax, Split, ReduceSum before 13, Clip or Pad before
 * 11, an unknown operator, a subgraph) keeps the model at its opset, and the caller falls back.
 */
import { attrInt, attrInts, makeNode, makeTensor, opsetVersion, setOpsetVersion, toNumber, type GraphProto, type IntLike, type ModelProto, type NodeProto } from '../onnx/model.js';
import type { GraphIndex } from '../onnx/graph.js';

export const QDQ_OPSET = 13;

const SAME_SINCE: Record<string, number> = {
  Conv: 1, ConvTranspose: 11, MatMul: 1, Gemm: 7, Add: 7, Sub: 7, Mul: 7, Div: 7, Pow: 7, Sum: 8, Max: 8, Min: 8, Mean: 8,
  Relu: 6, LeakyRelu: 6, PRelu: 7, Elu: 6, Selu: 6, Celu: 12, Sigmoid: 6, HardSigmoid: 6, Tanh: 6, Softplus: 1, Softsign: 1, ThresholdedRelu: 10,
  Exp: 6, Log: 6, Sqrt: 6, Neg: 6, Abs: 6, Floor: 6, Ceil: 6, Reciprocal: 6, Erf: 9, Sign: 9, Round: 11, Sin: 7, Cos: 7, Tan: 7, Atan: 7,
  MaxPool: 1, AveragePool: 1, GlobalAveragePool: 1, GlobalMaxPool: 1, LRN: 1, InstanceNormalization: 6, BatchNormalization: 9, LpNormalization: 1,
  MeanVarianceNormalization: 9, Flatten: 1, Reshape: 5, Transpose: 1, Identity: 1, Shape: 1, Size: 1, Gather: 1, GatherElements: 11, GatherND: 11,
  Concat: 4, Constant: 1, ConstantOfShape: 9, Cast: 6, Clip: 11, Pad: 11, Slice: 10, Resize: 11, Expand: 8, Tile: 6, Range: 11, Where: 9,
  Equal: 7, Greater: 7, Less: 7, Not: 1, And: 7, Or: 7, Xor: 7, NonZero: 9, TopK: 11, ArgMax: 1, ArgMin: 1, Einsum: 12, DepthToSpace: 1, SpaceToDepth: 1,
  ReduceMean: 1, ReduceMax: 1, ReduceMin: 1, ReduceProd: 1, ReduceL1: 1, ReduceL2: 1, ReduceLogSumExp: 1, ReduceSumSquare: 1, CumSum: 11, OneHot: 11,
  QuantizeLinear: 10, DequantizeLinear: 10, DynamicQuantizeLinear: 11, MatMulInteger: 10, ConvInteger: 10, QLinearConv: 10, QLinearMatMul: 10,
  NonMaxSuppression: 11, ReverseSequence: 10, RoiAlign: 10, ScatterElements: 11, ScatterND: 11, LSTM: 7, GRU: 7, RNN: 7,
};

const isDefaultDomain = (n: NodeProto): boolean => !n.domain || n.domain === 'ai.onnx';

/** Why `n` cannot move from opset `from` to 13 as it is, or how to convert it. */
function check(n: NodeProto, from: number): 'same' | 'convert' | string {
  if (!isDefaultDomain(n)) return 'same'; // other domains have their own opset import
  if ((n.attribute ?? []).some((a) => a.g || a.graphs?.length)) return `${n.opType} has a subgraph`;
  const op = n.opType ?? '';
  if ((op === 'Squeeze' || op === 'Unsqueeze') && attrInts(n, 'axes')) return 'convert';
  if (op === 'Squeeze' || op === 'Unsqueeze') return from >= 13 ? 'same' : 'convert'; // Squeeze without axes: same meaning
  if (op === 'Dropout') return (n.output ?? []).filter(Boolean).length === 1 ? 'convert' : 'Dropout with a mask output';
  if (op === 'BatchNormalization' && from >= 7 && attrInt(n, 'spatial', 1) === 1) return 'convert';
  const since = SAME_SINCE[op];
  if (since === undefined) return `${op} is not on the list of operators known to keep their meaning up to opset ${QDQ_OPSET}`;
  return from >= since ? 'same' : `${op} changed meaning between opset ${from} and ${QDQ_OPSET}`;
}

/** Why the model cannot be raised to opset 13, or undefined when it can (or already is). */
export function opsetBlocker(model: ModelProto): string | undefined {
  const from = opsetVersion(model);
  if (from >= QDQ_OPSET) return undefined;
  for (const n of model.graph?.node ?? []) {
    const verdict = check(n, from);
    if (verdict !== 'same' && verdict !== 'convert') return verdict;
  }
  return undefined;
}

/** Raises the model to opset 13 (and IR 7, which opset 13 needs), converting what must be. */
export function raiseOpset(model: ModelProto, index: GraphIndex): void {
  const from = opsetVersion(model);
  if (from >= QDQ_OPSET) return;
  const graph = model.graph as GraphProto;
  graph.node = (graph.node ?? []).map((n) => (check(n, from) === 'convert' ? convert(n, graph, index) : n));
  setOpsetVersion(model, QDQ_OPSET);
  if (toNumber(model.irVersion as IntLike) < 7) model.irVersion = 7;
}

function convert(n: NodeProto, graph: GraphProto, index: GraphIndex): NodeProto {
  const op = n.opType ?? '';
  if (op === 'Dropout') return makeNode('Identity', [n.input?.[0] ?? ''], [n.output?.[0] ?? ''], {}, n.name ?? undefined);
  if (op === 'BatchNormalization') return { ...n, attribute: (n.attribute ?? []).filter((a) => a.name !== 'spatial') };
  // Squeeze/Unsqueeze: the axes attribute becomes an int64 input.
  const axes = attrInts(n, 'axes');
  if (!axes) return n;
  const name = index.fresh(`${n.name || n.output?.[0] || op}.axes`);
  graph.initializer = [...(graph.initializer ?? []), makeTensor(name, [axes.length], BigInt64Array.from(axes.map(BigInt)))];
  return { ...n, input: [n.input?.[0] ?? '', name], attribute: (n.attribute ?? []).filter((a) => a.name !== 'axes') };
}
