/**
 * Dynamic int8 quantization of a MatMul's weights, as onnxruntime's quantize_dynamic does it:
 * weights become int8 offline (symmetric, zero point 0); activations are quantized to uint8 at run
 * time by DynamicQuantizeLinear; MatMulInteger multiplies; Cast + Mul by both scales go back to float.
 *
 * Weights use 7 bits ([-63, 63], "reduce range"): x86 AVX2 without VNNI sums pairs of u8*s8
 * products in int16 (vpmaddubsw), and 255*127*2 overflows it while 255*63*2 does not.
 */
import { DataType, node, tensor, type NodeProto, type TensorProto } from './onnx-writer.js';

export interface QuantizeOptions {
  /** One scale per output column (better accuracy) or one for the whole tensor. */
  perChannel: boolean;
  /** Bits of the weights, sign included: 7 = reduce range, [-63, 63]. */
  bits: number;
}
export const DEFAULT_QUANTIZE: QuantizeOptions = { perChannel: true, bits: 7 };

export interface QuantizedWeights {
  /** int8 values, same [inDim][outDim] layout as the float weights. */
  q: Int8Array;
  /** float = q * scale; length outDim (per channel) or 1 (per tensor). */
  scales: Float32Array;
}

/** Symmetric quantization of a row-major [inDim][outDim] weight matrix. */
export function quantizeWeights(w: Float32Array, inDim: number, outDim: number, options: QuantizeOptions = DEFAULT_QUANTIZE): QuantizedWeights {
  if (w.length !== inDim * outDim) throw new Error(`weights: ${w.length} values for [${inDim},${outDim}]`);
  const qmax = 2 ** (options.bits - 1) - 1;
  const maxAbs = new Float32Array(options.perChannel ? outDim : 1);
  for (let i = 0; i < w.length; i++) {
    const c = options.perChannel ? i % outDim : 0;
    maxAbs[c] = Math.max(maxAbs[c] as number, Math.abs(w[i] as number));
  }
  // An all-zero column still needs a positive scale (ONNX forbids 0; it would make NaNs).
  const scales = maxAbs.map((m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const s = scales[options.perChannel ? i % outDim : 0] as number;
    q[i] = Math.max(-qmax, Math.min(qmax, Math.round((w[i] as number) / s)));
  }
  return { q, scales };
}

export interface Subgraph {
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** The float output of the subgraph. */
  output: string;
}

/**
 * The int8 replacement of `output = input @ w (+ bias)`, with float input and output, so it can
 * stand in for a float MatMul (+ Add) anywhere in a graph. Names are prefixed by `name`.
 */
export function int8MatMul(name: string, input: string, w: Float32Array, inDim: number, outDim: number, bias?: Float32Array, options: QuantizeOptions = DEFAULT_QUANTIZE): Subgraph {
  const { q, scales } = quantizeWeights(w, inDim, outDim, options);
  const scaleDims = scales.length === 1 ? [] : [outDim];
  const initializers = [tensor(`${name}.weight_q`, [inDim, outDim], q), tensor(`${name}.weight_scale`, scaleDims, scales)];
  const out = bias ? `${name}.matmul` : `${name}.out`;
  const nodes = [
    node('DynamicQuantizeLinear', [input], [`${name}.x_q`, `${name}.x_scale`, `${name}.x_zero`]),
    node('MatMulInteger', [`${name}.x_q`, `${name}.weight_q`, `${name}.x_zero`], [`${name}.acc`]),
    node('Cast', [`${name}.acc`], [`${name}.acc_f`], { to: DataType.FLOAT }),
    node('Mul', [`${name}.x_scale`, `${name}.weight_scale`], [`${name}.scale`]),
    node('Mul', [`${name}.acc_f`, `${name}.scale`], [out]),
  ];
  if (bias) {
    initializers.push(tensor(`${name}.bias`, [outDim], bias));
    nodes.push(node('Add', [out, `${name}.bias`], [`${name}.out`]));
  }
  return { nodes, initializers, output: `${name}.out` };
}

/** The float original, with the same interface, so graphs are built once for both precisions. */
export function floatMatMul(name: string, input: string, w: Float32Array, inDim: number, outDim: number, bias?: Float32Array): Subgraph {
  const initializers = [tensor(`${name}.weight`, [inDim, outDim], w)];
  const out = bias ? `${name}.matmul` : `${name}.out`;
  const nodes = [node('MatMul', [input, `${name}.weight`], [out])];
  if (bias) {
    initializers.push(tensor(`${name}.bias`, [outDim], bias));
    nodes.push(node('Add', [out, `${name}.bias`], [`${name}.out`]));
  }
  return { nodes, initializers, output: `${name}.out` };
}
