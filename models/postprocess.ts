/** Post-processing for classifiers: scores -> the top classes of each batch item. */
import { KizunaError } from '../mesh/errors.js';
import type { Tensor } from '../mesh/tensor.js';
import type { ClassifyPostprocess } from './manifest.js';

export interface ClassScore {
  label: string;
  index: number;
  score: number;
}

export interface ClassAnswer extends ClassScore {
  /** The best `k` classes, best first; top[0] is the answer itself. */
  top: ClassScore[];
}

/** Softmax, stable for large logits: the maximum is subtracted before exp. */
export function softmax(values: ArrayLike<number>): Float32Array {
  const out = new Float32Array(values.length);
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (Number.isNaN(v)) return out.fill(NaN); // a broken output stays visibly broken
    if (v > max) max = v;
  }
  if (!Number.isFinite(max)) {
    // exp(inf - inf) is NaN: share the mass among the entries at +inf (or all, if all are -inf).
    const hits = (v: number) => max === -Infinity || v === max;
    let n = 0;
    for (let i = 0; i < values.length; i++) if (hits(values[i] as number)) n++;
    for (let i = 0; i < values.length; i++) out[i] = hits(values[i] as number) ? 1 / n : 0;
    return out;
  }
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const e = Math.exp((values[i] as number) - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < values.length; i++) out[i] = (out[i] as number) / sum;
  return out;
}

/** The k largest values, best first; ties keep the lower index first; NaN never ranks. */
export function topK(values: ArrayLike<number>, k: number): { index: number; score: number }[] {
  const n = Math.min(Math.max(0, Math.floor(k)), values.length);
  const best: { index: number; score: number }[] = [];
  if (n === 0) return best;
  for (let i = 0; i < values.length; i++) {
    const score = values[i] as number;
    if (Number.isNaN(score)) continue;
    if (best.length === n && !(score > (best[n - 1] as { score: number }).score)) continue;
    // Insertion into a short sorted list: k is small (5) next to the class count (1000).
    let j = best.length < n ? best.length : n - 1;
    while (j > 0 && score > (best[j - 1] as { score: number }).score) {
      best[j] = best[j - 1] as { index: number; score: number };
      j--;
    }
    best[j] = { index: i, score };
  }
  return best;
}

/** Batch size and class count of an output shaped [C], [N,C] or [N,C,1,1...]. */
function batchShape(t: Tensor): { n: number; classes: number } {
  const s = t.shape;
  const usable = s.length >= 1 && s.every((d) => Number.isSafeInteger(d) && d >= 0) && s.slice(2).every((d) => d === 1);
  const n = s.length === 1 ? 1 : (s[0] as number);
  const classes = s.length === 1 ? (s[0] as number) : (s[1] as number);
  if (!usable || classes < 1 || n * classes !== t.data.length) {
    throw new KizunaError('KZ_ERR_INFERENCE', `a classifier output of shape [${s.join(',')}] is not [N,C]`);
  }
  return { n, classes };
}

/** One answer per batch item; labels fall back to the class index as a string. */
export function classify(output: Tensor, recipe: ClassifyPostprocess, labels: readonly string[] | undefined, k?: number): ClassAnswer[] {
  if (output.dtype !== 'float32' && output.dtype !== 'float64') {
    throw new KizunaError('KZ_ERR_INFERENCE', `a classifier output must be float, not ${output.dtype}`);
  }
  const data = output.data as Float32Array | Float64Array;
  const { n, classes } = batchShape(output);
  const answers: ClassAnswer[] = [];
  for (let b = 0; b < n; b++) {
    const row = data.subarray(b * classes, (b + 1) * classes);
    const scores = recipe.softmax ? softmax(row) : row;
    const top = topK(scores, Math.max(1, k ?? recipe.topK)).map(({ index, score }) => ({ label: labels?.[index] || String(index), index, score }));
    const first = top[0];
    if (!first) throw new KizunaError('KZ_ERR_INFERENCE', `batch item ${b} has no score that is a number`);
    answers.push({ ...first, top });
  }
  return answers;
}
