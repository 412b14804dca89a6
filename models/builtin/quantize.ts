/**
 * Dynamic int8 quantization of the generator's MatMul layers, as onnxruntime's quantize_dynamic
 * does it. The arithmetic and the int8 subgraph live in models/quantize/ (weights.ts, dynamic.ts),
 * shared with `kizuna models quantize`; this file keeps the generator's layer-shaped interface.
 */
import { node, tensor, type NodeProto, type TensorProto } from './onnx-writer.js';
import { dynamicMatMul } from '../quantize/dynamic.js';
import { DEFAULT_WEIGHTS, quantizeSymmetric, type QuantizedWeights, type WeightOptions } from '../quantize/weights.js';

/** One scale per output column or per tensor, and the bits of the weights (7 = reduce range). */
export type QuantizeOptions = WeightOptions;
export const DEFAULT_QUANTIZE: QuantizeOptions = DEFAULT_WEIGHTS;
export type { QuantizedWeights };

/** Symmetric quantization of a row-major [inDim][outDim] weight matrix. */
export function quantizeWeights(w: Float32Array, inDim: number, outDim: number, options: QuantizeOptions = DEFAULT_QUANTIZE): QuantizedWeights {
  return quantizeSymmetric(w, [inDim, outDim], 1, options);
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
  const out = bias ? `${name}.matmul` : `${name}.out`;
  const sub = dynamicMatMul((suffix) => `${name}.${suffix}`, input, quantizeWeights(w, inDim, outDim, options), inDim, outDim, out);
  const { nodes, initializers } = sub;
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
