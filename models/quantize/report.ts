/** What a quantization did, for the CLI's table, its --json and the benchmark. */
import type { Tensor } from '../../mesh/tensor.js';

export type QuantizeMode = 'auto' | 'dynamic' | 'static';

/** One set of model inputs, by input name (one calibration or evaluation sample). */
export type Feeds = Record<string, Tensor>;

export interface QuantizeOptions {
  /** auto (default): Conv static when samples are given, MatMul/Gemm dynamic; static: all static. */
  mode?: QuantizeMode;
  /** Per output channel weight scales (default) or one per tensor. */
  perChannel?: boolean;
  /** 7-bit weights (default; see weights.ts) or full 8-bit. */
  reduceRange?: boolean;
  /** Calibration inputs for static quantization. */
  samples?: readonly Feeds[];
}

export interface SkippedNode {
  node: string;
  op: string;
  reason: string;
}

export interface QuantizeReport {
  mode: QuantizeMode;
  perChannel: boolean;
  reduceRange: boolean;
  /** ai.onnx opset before and after (raised to 13 when per-channel QDQ or dynamic ops need it). */
  opset: { from: number; to: number };
  /** Activation ranges: min/max over every calibration sample (no percentile clipping). */
  calibration: { method: 'minmax'; samples: number; tensors: number };
  /** Nodes quantized, by how and op type, e.g. { static: { Conv: 52 }, dynamic: { MatMul: 1 } }. */
  quantized: { static: Record<string, number>; dynamic: Record<string, number> };
  /** Relu/Clip nodes folded into the uint8 range of the tensor they produce. */
  foldedActivations: number;
  skipped: SkippedNode[];
  notes: string[];
  bytes: { in: number; out: number };
}

export const count = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
