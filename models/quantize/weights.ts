/**
 * The arithmetic of int8 quantization, shared by the dynamic and the static passes and by the
 * built-in model generator.
 *
 * Weights: symmetric int8 (zero point 0), one scale per output channel or per tensor. By default
 * they use 7 bits ([-63, 63], "reduce range"): x86 AVX2 without VNNI sums pairs of u8*s8 products
 * in int16 (vpmaddubsw), and 255*127*2 overflows it while 255*63*2 does not.
 *
 * Activations: asymmetric uint8 over a range that always holds 0 (so zero padding and ReLU's zeros
 * are exact): scale = (max - min) / 255, zero point = round(-min / scale).
 */

export interface WeightOptions {
  /** One scale per output channel (better accuracy) or one for the whole tensor. */
  perChannel: boolean;
  /** Bits of the weights, sign included: 7 = reduce range, [-63, 63]; 8 = [-127, 127]. */
  bits: number;
}
export const DEFAULT_WEIGHTS: WeightOptions = { perChannel: true, bits: 7 };

export interface QuantizedWeights {
  /** int8 values, same layout as the float weights. */
  q: Int8Array;
  /** float = q * scale; one per channel of `axis`, or one. */
  scales: Float32Array;
}

/** Size of dims[axis] and the product of the dims after it (the stride of one channel step). */
function channelLayout(dims: readonly number[], axis: number): { channels: number; inner: number } {
  if (axis < 0 || axis >= dims.length) throw new Error(`axis ${axis} outside shape [${dims.join(',')}]`);
  return { channels: dims[axis] as number, inner: dims.slice(axis + 1).reduce((a, b) => a * b, 1) };
}

/** Symmetric quantization of `w` (shape `dims`) with one scale per index of `axis`, or one in all. */
export function quantizeSymmetric(w: Float32Array, dims: readonly number[], axis: number, options: WeightOptions = DEFAULT_WEIGHTS): QuantizedWeights {
  const count = dims.reduce((a, b) => a * b, 1);
  if (w.length !== count) throw new Error(`weights: ${w.length} values for [${dims.join(',')}]`);
  const { channels, inner } = channelLayout(dims, axis);
  const channelOf = options.perChannel ? (i: number) => Math.floor(i / inner) % channels : () => 0;
  const qmax = 2 ** (options.bits - 1) - 1;
  const maxAbs = new Float32Array(options.perChannel ? channels : 1);
  for (let i = 0; i < w.length; i++) {
    const c = channelOf(i);
    maxAbs[c] = Math.max(maxAbs[c] as number, Math.abs(w[i] as number));
  }
  // An all-zero channel still needs a positive scale (ONNX forbids 0; it would make NaNs).
  const scales = maxAbs.map((m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const s = scales[channelOf(i)] as number;
    q[i] = Math.max(-qmax, Math.min(qmax, Math.round((w[i] as number) / s)));
  }
  return { q, scales };
}

export interface ActivationParams {
  scale: number;
  zeroPoint: number;
}

/** uint8 asymmetric parameters for values observed in [min, max] (0 is always representable). */
export function activationParams(min: number, max: number): ActivationParams {
  const lo = Math.min(0, min);
  const hi = Math.max(0, max);
  if (!(hi > lo) || !Number.isFinite(hi - lo)) return { scale: 1, zeroPoint: 0 };
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.max(0, Math.min(255, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/**
 * int32 bias at scale input_scale * weight_scale[c], zero point 0: what QLinearConv and
 * QLinearMatMul-style kernels add to their int32 accumulators. Returns the scales too (the
 * bias's DequantizeLinear needs them), and how many values had to be clamped to int32.
 */
export function quantizeBias(bias: Float32Array, inputScale: number, weightScales: Float32Array): { q: Int32Array; scales: Float32Array; clamped: number } {
  const scales = new Float32Array(bias.length);
  const q = new Int32Array(bias.length);
  let clamped = 0;
  for (let c = 0; c < bias.length; c++) {
    const s = Math.fround(inputScale * (weightScales.length === 1 ? (weightScales[0] as number) : (weightScales[c] as number)));
    scales[c] = s;
    const v = Math.round((bias[c] as number) / s);
    const limit = 2 ** 31 - 1;
    if (Math.abs(v) > limit) clamped++;
    q[c] = Math.max(-limit, Math.min(limit, v));
  }
  return { q, scales, clamped };
}
