/**
 * Post-processing for single-stage detectors: raw grid predictions -> scored, labelled boxes.
 * Decode, score threshold, class-aware non-maximum suppression, then the boxes are mapped back
 * through the pre-processing (resize and padding) to the original image's pixels and clipped to
 * it. Pure: no sharp, no runtime; the recipe is data in the manifest (DetectPostprocess).
 *
 * Costs: one pass over the output (anchors x classes multiply-compares), a box decoded only for
 * anchors with a class over the threshold, candidates in growable typed arrays (no object per
 * box until the kept ones are answered), and a greedy NMS over candidates sorted by score that
 * stops at maxDetections.
 */
import { KizunaError } from '../mesh/errors.js';
import type { Tensor } from '../mesh/tensor.js';
import type { DetectPostprocess, Manifest } from './manifest.js';
import type { ImageSource } from './preprocess.js';

export const DETECT_DEFAULTS = { scoreThreshold: 0.3, iouThreshold: 0.45, maxDetections: 100 } as const;

/** [x1, y1, x2, y2]: left, top, right, bottom, in pixels. */
export type Box = [number, number, number, number];

export interface Detection {
  label: string;
  /** The class index (the label's index in the manifest's labels). */
  index: number;
  score: number;
  box: Box;
}

/** Anchors of a grid detector: one per cell of each stride (floor(W / s) x floor(H / s), as YOLOX). */
export function gridAnchors(width: number, height: number, strides: readonly number[]): number {
  return strides.reduce((n, s) => n + Math.floor(width / s) * Math.floor(height / s), 0);
}

/** The model input size a detect recipe decodes against: its own, else the image recipe's. */
export function detectInputSize(manifest: Pick<Manifest, 'preprocess'>, recipe: DetectPostprocess): { width: number; height: number } | undefined {
  const width = recipe.width ?? manifest.preprocess?.width;
  const height = recipe.height ?? manifest.preprocess?.height;
  return width && height ? { width, height } : undefined;
}

/** Intersection over union of two [x1, y1, x2, y2] boxes stored at offsets a and b of `boxes`. */
function iouAt(boxes: Float32Array, a: number, b: number): number {
  const w = Math.min(boxes[a + 2]!, boxes[b + 2]!) - Math.max(boxes[a]!, boxes[b]!);
  const h = Math.min(boxes[a + 3]!, boxes[b + 3]!) - Math.max(boxes[a + 1]!, boxes[b + 1]!);
  if (!(w > 0 && h > 0)) return 0;
  const inter = w * h;
  const union = (boxes[a + 2]! - boxes[a]!) * (boxes[a + 3]! - boxes[a + 1]!) + (boxes[b + 2]! - boxes[b]!) * (boxes[b + 3]! - boxes[b + 1]!) - inter;
  return union > 0 ? inter / union : 0;
}

/** Intersection over union of two boxes (0 when they do not overlap or are empty). */
export function iou(a: readonly number[], b: readonly number[]): number {
  return iouAt(Float32Array.from([...a.slice(0, 4), ...b.slice(0, 4)]), 0, 4);
}

/** Boxes over the score threshold, one per (anchor, class): growable typed arrays, reused across images. */
class Candidates {
  n = 0;
  cls = new Int32Array(64);
  score = new Float32Array(64);
  box = new Float32Array(256);

  push(cls: number, score: number, x1: number, y1: number, x2: number, y2: number): void {
    if (this.n === this.cls.length) this.grow();
    const i = this.n++;
    this.cls[i] = cls;
    this.score[i] = score;
    const o = i * 4;
    this.box[o] = x1;
    this.box[o + 1] = y1;
    this.box[o + 2] = x2;
    this.box[o + 3] = y2;
  }

  private grow(): void {
    const size = this.cls.length * 2;
    const more = <T extends Int32Array | Float32Array>(a: T, n: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.set(a);
      return b;
    };
    this.cls = more(this.cls, size);
    this.score = more(this.score, size);
    this.box = more(this.box, size * 4);
  }
}

/**
 * YOLOX: anchors in grid order (each stride's cells row by row), each row
 * [cx, cy, w, h, obj, class scores...] relative to its cell. A box whose decoded edges are not
 * finite numbers is dropped; NaN scores never pass the threshold.
 */
function decodeYolox(
  data: Float32Array | Float64Array, base: number, d: number, size: { width: number; height: number },
  strides: readonly number[], threshold: number, out: Candidates,
): void {
  out.n = 0;
  let o = base;
  for (const s of strides) {
    const cols = Math.floor(size.width / s);
    const rows = Math.floor(size.height / s);
    for (let gy = 0; gy < rows; gy++) {
      for (let gx = 0; gx < cols; gx++, o += d) {
        const obj = data[o + 4]!;
        // Class scores are probabilities (<= 1): an anchor whose objectness is not over the threshold has no box.
        if (!(obj > threshold)) continue;
        let x1 = NaN;
        let y1 = 0;
        let x2 = 0;
        let y2 = 0;
        for (let c = 5; c < d; c++) {
          const score = obj * data[o + c]!;
          if (!(score > threshold)) continue;
          if (Number.isNaN(x1)) {
            const cx = (data[o]! + gx) * s;
            const cy = (data[o + 1]! + gy) * s;
            const hw = (Math.exp(data[o + 2]!) * s) / 2;
            const hh = (Math.exp(data[o + 3]!) * s) / 2;
            x1 = cx - hw;
            y1 = cy - hh;
            x2 = cx + hw;
            y2 = cy + hh;
            if (!(Number.isFinite(x1) && Number.isFinite(y1) && Number.isFinite(x2) && Number.isFinite(y2))) break;
          }
          out.push(c - 5, score, x1, y1, x2, y2);
        }
      }
    }
  }
}

/**
 * Greedy NMS per class over candidates, best score first (ties: earlier anchor, then lower
 * class): a box goes when it overlaps a kept box of its class by more than `iouThreshold`.
 * Returns the kept candidates' indices, best first, at most `max`.
 */
function suppress(c: Candidates, iouThreshold: number, max: number): number[] {
  const order = new Uint32Array(c.n);
  for (let i = 0; i < c.n; i++) order[i] = i;
  const score = c.score;
  order.sort((a, b) => score[b]! - score[a]! || a - b);
  const kept: number[] = [];
  for (let k = 0; k < order.length && kept.length < max; k++) {
    const i = order[k]!;
    const cls = c.cls[i]!;
    let alive = true;
    for (const j of kept) {
      if (c.cls[j] === cls && iouAt(c.box, i * 4, j * 4) > iouThreshold) {
        alive = false;
        break;
      }
    }
    if (alive) kept.push(i);
  }
  return kept;
}

const round2 = (v: number): number => Math.round(v * 100) / 100;
const clip = (v: number, max: number): number => round2(Math.min(Math.max(v, 0), max));

/** Batch size and values per anchor of an output shaped [N, anchors, D] or [anchors, D]. */
function layout(t: Tensor, anchors: number, name: string): { n: number; d: number } {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new KizunaError('KZ_ERR_INFERENCE', `detector output "${name}" must be float, not ${t.dtype}`);
  const s = t.shape;
  const ok = (s.length === 2 || s.length === 3) && s.every((x) => Number.isSafeInteger(x) && x >= 0);
  const n = s.length === 3 ? s[0]! : 1;
  const [a, d] = s.slice(-2) as [number, number];
  if (!ok || a !== anchors || d < 6 || n * a * d !== t.data.length) {
    throw new KizunaError('KZ_ERR_INFERENCE', `detector output "${name}" of shape [${s.join(',')}] is not [N, ${anchors}, 5 + classes]`);
  }
  return { n, d };
}

/**
 * One list of detections per batch item, best first. `sources[b]` maps item b's boxes to its
 * original image (orig = (model - pad) * scale), clipped to the image; without it (a tensor
 * request) boxes stay in model-input pixels, clipped to the input. Boxes empty after clipping
 * are dropped. Labels fall back to the class index as a string. A malformed output is
 * KZ_ERR_INFERENCE; NaN or infinite values give no boxes.
 */
export function detect(
  output: Tensor, recipe: DetectPostprocess, size: { width: number; height: number },
  labels?: readonly string[], sources?: readonly (ImageSource | undefined)[],
): Detection[][] {
  const anchors = gridAnchors(size.width, size.height, recipe.strides);
  const { n, d } = layout(output, anchors, recipe.output);
  const data = output.data as Float32Array | Float64Array;
  const threshold = recipe.scoreThreshold ?? DETECT_DEFAULTS.scoreThreshold;
  const iouThreshold = recipe.iouThreshold ?? DETECT_DEFAULTS.iouThreshold;
  const max = recipe.maxDetections ?? DETECT_DEFAULTS.maxDetections;
  const candidates = new Candidates();
  const answers: Detection[][] = [];
  for (let b = 0; b < n; b++) {
    decodeYolox(data, b * anchors * d, d, size, recipe.strides, threshold, candidates);
    const src = sources?.[b];
    const [sx, sy, px, py] = src ? [src.scale, src.scaleY, src.padX, src.padY] : [1, 1, 0, 0];
    const [w, h] = src ? [src.width, src.height] : [size.width, size.height];
    const found: Detection[] = [];
    for (const i of suppress(candidates, iouThreshold, max)) {
      const o = i * 4;
      const box: Box = [
        clip((candidates.box[o]! - px) * sx, w), clip((candidates.box[o + 1]! - py) * sy, h),
        clip((candidates.box[o + 2]! - px) * sx, w), clip((candidates.box[o + 3]! - py) * sy, h),
      ];
      if (!(box[2] > box[0] && box[3] > box[1])) continue;
      const index = candidates.cls[i]!;
      found.push({ label: labels?.[index] || String(index), index, score: candidates.score[i]!, box });
    }
    answers.push(found);
  }
  return answers;
}
