/**
 * Dynamic int8 quantization of MatMul and Gemm with constant weights, as onnxruntime's
 * quantize_dynamic does it: weights become int8 offline (symmetric, per output column or per
 * tensor); the activation is quantized to uint8 at run time by DynamicQuantizeLinear;
 * MatMulInteger multiplies; Cast + Mul by both scales go back to float. A Gemm's bias is added
 * back in float, so the replacement has float input and output and fits anywhere in a graph.
 */
import type { GraphIndex } from '../onnx/graph.js';
import { attrFloat, attrInt, DataType, dimsOf, floatValues, makeNode, makeTensor, type NodeProto, type TensorProto } from '../onnx/model.js';
import type { Rewrite } from './rewrite.js';
import { quantizeSymmetric, type QuantizedWeights, type WeightOptions } from './weights.js';

/**
 * The nodes and initializers of `output = input @ dequant(q)` for q of shape [inDim, outDim].
 * `name(suffix)` names each new tensor (the generator uses `${layer}.${suffix}`).
 */
export function dynamicMatMul(name: (suffix: string) => string, input: string, w: QuantizedWeights, inDim: number, outDim: number, output: string): { nodes: NodeProto[]; initializers: TensorProto[] } {
  const wq = name('weight_q');
  const ws = name('weight_scale');
  const [xq, xs, xz] = [name('x_q'), name('x_scale'), name('x_zero')];
  const [acc, accF, scale] = [name('acc'), name('acc_f'), name('scale')];
  const initializers = [makeTensor(wq, [inDim, outDim], w.q), makeTensor(ws, w.scales.length === 1 ? [] : [outDim], w.scales)];
  const nodes = [
    makeNode('DynamicQuantizeLinear', [input], [xq, xs, xz]),
    makeNode('MatMulInteger', [xq, wq, xz], [acc]),
    makeNode('Cast', [acc], [accF], { to: DataType.FLOAT }),
    makeNode('Mul', [xs, ws], [scale]),
    makeNode('Mul', [accF, scale], [output]),
  ];
  return { nodes, initializers };
}

/** Row-major [rows][cols] -> [cols][rows]. */
function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c] as number;
  return t;
}

export interface WeightedNode {
  /** The weight as [inDim][outDim] float values, as MatMul multiplies it. */
  w: Float32Array;
  inDim: number;
  outDim: number;
  /** Float input 0 of the node. */
  input: string;
}

/**
 * A MatMul or Gemm whose weight (input 1) is a constant 2-D float initializer, seen as
 * `input @ w` (+ bias), or the reason it cannot be quantized here.
 */
export function weightOf(n: NodeProto, index: GraphIndex, inits: Map<string, TensorProto>): WeightedNode | string {
  const [input, weight] = n.input ?? [];
  const t = weight ? inits.get(weight) : undefined;
  if (!input || inits.has(input)) return 'its input is a constant';
  if (!t) return 'its weight is not a constant initializer';
  if (t.dataType !== DataType.FLOAT) return `its weight is not float32 (data type ${t.dataType})`;
  const dims = dimsOf(t);
  if (dims.length !== 2) return `its weight has ${dims.length} dimensions, not 2`;
  if (index.graphInputs.has(weight!)) return 'its weight is also a graph input (it could be overridden at run time)';
  let [inDim, outDim] = dims as [number, number];
  let w = floatValues(t);
  if (n.opType === 'Gemm') {
    if (attrInt(n, 'transA', 0) !== 0) return 'Gemm with transA=1';
    if (attrInt(n, 'transB', 0) !== 0) {
      w = transpose(w, inDim, outDim);
      [inDim, outDim] = [outDim, inDim];
    }
    const alpha = attrFloat(n, 'alpha', 1);
    if (alpha !== 1) w = w.map((v) => v * alpha);
  }
  return { w, inDim, outDim, input };
}

/** Replaces one MatMul or Gemm by its dynamic int8 form; returns a reason when it cannot. */
export function quantizeDynamic(n: NodeProto, index: GraphIndex, inits: Map<string, TensorProto>, rewrite: Rewrite, options: WeightOptions): string | undefined {
  const found = weightOf(n, index, inits);
  if (typeof found === 'string') return found;
  const output = n.output?.[0];
  if (!output) return 'it has no output';
  const base = n.name || output;
  const name = (suffix: string): string => index.fresh(`${base}.${suffix}`);
  const bias = n.opType === 'Gemm' ? n.input?.[2] : undefined;
  const beta = attrFloat(n, 'beta', 1);
  let biasName = bias;
  const extra: TensorProto[] = [];
  if (bias && beta !== 1) {
    const c = inits.get(bias);
    if (!c || c.dataType !== DataType.FLOAT) return 'Gemm with beta != 1 and a bias that is not a float constant';
    biasName = name('bias');
    extra.push(makeTensor(biasName, dimsOf(c), floatValues(c).map((v) => v * beta)));
  }
  const product = bias ? name('matmul') : output;
  const q = quantizeSymmetric(found.w, [found.inDim, found.outDim], 1, options);
  const sub = dynamicMatMul(name, found.input, q, found.inDim, found.outDim, product);
  const nodes = bias ? [...sub.nodes, makeNode('Add', [product, biasName!], [output])] : sub.nodes;
  rewrite.replace.set(n, nodes);
  rewrite.initializers.push(...sub.initializers, ...extra);
  rewrite.replacedWeights.add(n.input![1]!);
  if (bias && beta !== 1) rewrite.replacedWeights.add(bias);
  return undefined;
}
