/**
 * Static int8 quantization in QDQ form: QuantizeLinear -> DequantizeLinear pairs around the
 * tensors of each quantized Conv (and, in static mode, MatMul/Gemm), so the file stays a float
 * graph any runtime can read, and onnxruntime fuses each DQ -> Conv -> Q group into QLinearConv.
 *
 * - Activations: uint8, asymmetric, ranges from calibration. The input of each quantized node and
 *   its output get one Q -> DQ pair right after their producer; every reader then takes the DQ.
 * - A Relu, or a Clip whose lower bound is <= 0, that is the only reader of a quantized node's
 *   output (or that produces a quantized input) is folded: the producer writes the activation's
 *   output directly and its calibrated range, saturated by uint8, does the clipping.
 * - Weights: int8, symmetric, per output channel (Conv axis 0, MatMul axis 1, Gemm by transB) or
 *   per tensor, 7-bit by default, stored as int8 initializers behind a DequantizeLinear.
 * - Bias: int32 at scale input_scale * weight_scale[c], zero point 0. Not float: onnxruntime fuses
 *   a QDQ Conv into QLinearConv only when every input comes from a DequantizeLinear, and
 *   QLinearConv adds an int32 bias at exactly that scale to its int32 accumulator. A bias that
 *   is not a 1-D float constant stays float (the node then runs in float between its Q/DQ).
 */
import type { GraphIndex } from '../onnx/graph.js';
import { attrFloat, attrInt, DataType, dimsOf, floatValues, makeNode, makeTensor, type NodeProto, type TensorProto } from '../onnx/model.js';
import type { Range } from './calibrate.js';
import type { Rewrite } from './rewrite.js';
import { activationParams, quantizeBias, quantizeSymmetric, type WeightOptions } from './weights.js';

const PASS_THROUGH = new Set(['MaxPool', 'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity']);

interface StaticNode {
  node: NodeProto;
  /** Channel axis of the weight (input 1). */
  axis: number;
  /** Its float input (input 0) in the float graph. */
  input: string;
}

interface Fold {
  act: NodeProto;
  producer: NodeProto;
  /** The producer's output that the activation reads. */
  from: string;
  /** The activation's output, which the producer will write instead. */
  to: string;
}

export interface StaticPlan {
  nodes: StaticNode[];
  /** Activation tensors to quantize: their names in the float graph, to calibrate. */
  tensors: Set<string>;
  folds: Fold[];
}

/** The weight's channel axis, or why the node cannot be quantized statically. */
function weightAxis(n: NodeProto, index: GraphIndex, inits: Map<string, TensorProto>): number | string {
  const [input, weight] = n.input ?? [];
  const w = weight ? inits.get(weight) : undefined;
  if (!input || inits.has(input)) return 'its input is a constant';
  if (!w) return 'its weight is not a constant initializer';
  if (w.dataType !== DataType.FLOAT) return `its weight is not float32 (data type ${w.dataType})`;
  if (index.graphInputs.has(weight!)) return 'its weight is also a graph input (it could be overridden at run time)';
  const rank = dimsOf(w).length;
  if (n.opType === 'Conv') return rank >= 3 ? 0 : `Conv weight of rank ${rank}`;
  if (rank !== 2) return `its weight has ${rank} dimensions, not 2`;
  if (n.opType === 'MatMul') return 1;
  if (attrInt(n, 'transA', 0) !== 0) return 'Gemm with transA=1';
  if (attrFloat(n, 'alpha', 1) !== 1 || attrFloat(n, 'beta', 1) !== 1) return 'Gemm with alpha or beta != 1';
  return attrInt(n, 'transB', 0) ? 0 : 1;
}

/** A Relu or Clip(lo <= 0) with constant bounds: its uint8 range can stand in for it. */
function foldable(n: NodeProto, inits: Map<string, TensorProto>): boolean {
  if (n.domain && n.domain !== 'ai.onnx') return false;
  if (n.opType === 'Relu') return true;
  if (n.opType !== 'Clip') return false;
  const minName = n.input?.[1];
  if (minName) {
    const t = inits.get(minName);
    if (!t || t.dataType !== DataType.FLOAT) return false;
    return (floatValues(t)[0] ?? 0) <= 0;
  }
  if ((n.input?.[2] ?? '') !== '' && !inits.has(n.input![2]!)) return false;
  return attrFloat(n, 'min', -3.4028234663852886e38) <= 0; // opset < 11: bounds are attributes
}

export function planStatic(candidates: readonly NodeProto[], index: GraphIndex, inits: Map<string, TensorProto>, skip: (n: NodeProto, reason: string) => void): StaticPlan {
  const plan: StaticPlan = { nodes: [], tensors: new Set(), folds: [] };
  const folded = new Set<NodeProto>();
  /** The tensor that will carry `t`'s quantized value: the output of a folded activation, or `t`. */
  const foldAfter = (t: string, producer: NodeProto): string => {
    const readers = index.readers(t);
    const act = readers[0];
    if (readers.length !== 1 || !act || folded.has(act) || index.graphOutputs.has(t) || !foldable(act, inits)) return t;
    const to = act.output?.[0];
    if (!to || index.graphOutputs.has(to)) return t;
    folded.add(act);
    plan.folds.push({ act, producer, from: t, to });
    return to;
  };
  for (const n of candidates) {
    const axis = weightAxis(n, index, inits);
    if (typeof axis === 'string') {
      skip(n, axis);
      continue;
    }
    plan.nodes.push({ node: n, axis, input: n.input![0]! });
    plan.tensors.add(n.input![0]!);
    const out = n.output?.[0];
    if (out && !index.graphOutputs.has(out)) plan.tensors.add(foldAfter(out, n));
  }
  // A quantized input produced by a foldable activation (Add -> Clip -> Conv): fold it too.
  for (const t of [...plan.tensors]) {
    const act = index.producer.get(t);
    const from = act?.input?.[0];
    const producer = from ? index.producer.get(from) : undefined;
    if (act && from && producer && !folded.has(act)) foldAfter(from, producer);
  }
  return plan;
}

export interface StaticResult {
  notes: string[];
}

/** Applies the plan with calibrated ranges: Q/DQ pairs, int8 weights, int32 biases, folds. */
export function applyStatic(plan: StaticPlan, ranges: Map<string, Range>, index: GraphIndex, inits: Map<string, TensorProto>, rewrite: Rewrite, options: WeightOptions): StaticResult {
  const notes: string[] = [];
  for (const f of plan.folds) {
    rewrite.removed.add(f.act);
    for (const bound of (f.act.input ?? []).slice(1)) if (bound) rewrite.replacedWeights.add(bound); // a Clip's min/max
    f.producer.output = (f.producer.output ?? []).map((o) => (o === f.from ? f.to : o));
  }
  const producerOf = (t: string): NodeProto | null => plan.folds.find((f) => f.to === t)?.producer ?? index.producer.get(t) ?? null;

  // A tensor made from a quantized one by an operator that only moves or selects values
  // (MaxPool, Reshape...) takes its range: with equal Q/DQ parameters on both sides onnxruntime
  // drops the pair and runs the operator on uint8.
  const rangeOf = (t: string, depth = 0): Range | undefined => {
    const p = producerOf(t);
    const x = p?.input?.[0];
    const passes = p && PASS_THROUGH.has(p.opType ?? '') && (p.output ?? []).filter(Boolean).length === 1;
    return passes && x && plan.tensors.has(x) && depth < 1000 ? rangeOf(x, depth + 1) : ranges.get(t);
  };

  // Activations: one Q -> DQ pair per tensor, after its producer; readers take the DQ.
  const params = new Map<string, { scale: number }>();
  for (const t of plan.tensors) {
    const range = rangeOf(t);
    if (!range) throw new Error(`calibration gave no range for tensor ${t}`);
    const { scale, zeroPoint } = activationParams(range.min, range.max);
    const [s, z, q, dq] = [`${t}_scale`, `${t}_zero_point`, `${t}_quantized`, `${t}_dequantized`].map((x) => index.fresh(x)) as [string, string, string, string];
    rewrite.initializers.push(makeTensor(s, [], Float32Array.of(scale)), makeTensor(z, [], Uint8Array.of(zeroPoint)));
    for (const reader of index.readers(t)) {
      if (rewrite.removed.has(reader)) continue;
      reader.input = (reader.input ?? []).map((i) => (i === t ? dq : i));
    }
    rewrite.insertAfter(producerOf(t), [makeNode('QuantizeLinear', [t, s, z], [q]), makeNode('DequantizeLinear', [q, s, z], [dq])]);
    params.set(t, { scale });
  }

  let clamped = 0;
  for (const { node: n, axis, input: floatInput } of plan.nodes) {
    const [input, weight, bias] = n.input as [string, string, string | undefined];
    const inScale = params.get(floatInput)?.scale;
    if (inScale === undefined) throw new Error(`node ${n.name}: its input ${floatInput} was not quantized`);
    const wt = inits.get(weight)!;
    const dims = dimsOf(wt);
    const w = quantizeSymmetric(floatValues(wt), dims, axis, options);
    const perChannel = w.scales.length > 1;
    const [wq, ws, wz, wdq] = ['quantized', 'scale', 'zero_point', 'dequantized'].map((x) => index.fresh(`${weight}_${x}`)) as [string, string, string, string];
    const scaleDims = perChannel ? [w.scales.length] : [];
    rewrite.initializers.push(makeTensor(wq, dims, w.q), makeTensor(ws, scaleDims, w.scales), makeTensor(wz, scaleDims, new Int8Array(w.scales.length)));
    const axisAttr: Record<string, number> = perChannel ? { axis } : {};
    rewrite.insertAfter(null, [makeNode('DequantizeLinear', [wq, ws, wz], [wdq], axisAttr)]);
    rewrite.replacedWeights.add(weight);
    const inputs = [input, wdq];

    const bt = bias ? inits.get(bias) : undefined;
    const channels = dims[axis] as number;
    if (bias && bt && bt.dataType === DataType.FLOAT && dimsOf(bt).length === 1 && dimsOf(bt)[0] === channels) {
      const b = quantizeBias(floatValues(bt), inScale, w.scales);
      clamped += b.clamped;
      const uniform = !perChannel;
      const [bq, bs, bz, bdq] = ['quantized', 'scale', 'zero_point', 'dequantized'].map((x) => index.fresh(`${bias}_${x}`)) as [string, string, string, string];
      const bDims = uniform ? [] : [channels];
      rewrite.initializers.push(makeTensor(bq, [channels], b.q), makeTensor(bs, bDims, uniform ? b.scales.slice(0, 1) : b.scales), makeTensor(bz, bDims, new Int32Array(uniform ? 1 : channels)));
      rewrite.insertAfter(null, [makeNode('DequantizeLinear', [bq, bs, bz], [bdq], uniform ? {} : { axis: 0 })]);
      rewrite.replacedWeights.add(bias);
      inputs.push(bdq);
    } else if (bias) {
      notes.push(`${n.opType} ${n.name || n.output?.[0]}: bias ${bias} left in float (not a 1-D float constant of ${channels} values)`);
      inputs.push(bias);
    }
    n.input = inputs;
  }
  if (clamped) notes.push(`${clamped} bias value(s) clamped to int32: their input or weight scale is very small`);
  return { notes };
}
