/**
 * Image pre-processing: encoded images (JPEG, PNG, WebP...) -> one normalised input tensor.
 * The only module that touches sharp; it is imported on first use so agents serving
 * tensor-only models never load libvips.
 *
 * Choices, and why:
 * - Alpha is flattened on WHITE: a drawing on a transparent canvas (a digit, a logo) keeps its
 *   dark strokes, which a black background would swallow.
 * - The resize kernel is 'linear' (antialiased bilinear), as in PIL/torchvision, which most
 *   classifiers were trained with; it is also cheaper than sharp's default lanczos3 on a Pi.
 * - Geometry is computed here, not left to sharp's fit modes: sharp crops (cover) and resizes,
 *   padding (contain, letterbox) happens in the pixel loop, so `sources` is exactly what was applied.
 * - `pad` is the value the model sees before normalisation: it is not inverted by `invert`.
 * - SVG and PDF are refused: a sender-controlled renderer has no place on the request path.
 */
import type { Sharp, SharpOptions } from 'sharp';
import { KizunaError } from '../mesh/errors.js';
import type { Tensor } from '../mesh/tensor.js';
import type { ImagePreprocess } from './manifest.js';

/** Maps model pixels back to the original (upright) image: orig = (model - pad) * scale. */
export interface ImageSource {
  width: number;
  height: number;
  /** Horizontal factor; for `fill` the vertical one differs, see scaleY. */
  scale: number;
  /** Vertical factor (equal to `scale` up to rounding, except for `fill`). */
  scaleY: number;
  /** Offset of the image in model pixels: > 0 when padded, < 0 when cropped (cover). */
  padX: number;
  padY: number;
}

export interface PreparedBatch {
  tensor: Tensor;
  sources: ImageSource[];
}

type SharpFactory = (input: Uint8Array, options: SharpOptions) => Sharp;
let sharpLoading: Promise<SharpFactory> | undefined;
function loadSharp(): Promise<SharpFactory> {
  sharpLoading ??= import('sharp').then((m) => m.default as unknown as SharpFactory);
  return sharpLoading;
}

const REFUSED_FORMATS = new Set(['svg', 'pdf']);
const WHITE = { r: 255, g: 255, b: 255 };

type Region = { left: number; top: number; width: number; height: number };

/** How one image becomes W x H model pixels. */
interface Plan {
  /** cover crops, before resizing when the resized image would be big (a thin strip), else after. */
  cropBefore?: Region;
  resizeTo: { width: number; height: number };
  cropAfter?: Region;
  /** Size of what sharp returns, and its offset in the model input (> 0: padded). */
  rw: number;
  rh: number;
  offX: number;
  offY: number;
  source: ImageSource;
}

interface Decoded extends Plan {
  data: Uint8Array;
  channels: number;
}

function plan(w: number, h: number, recipe: ImagePreprocess): Plan {
  const W = recipe.width;
  const H = recipe.height;
  const source = (scale: number, scaleY: number, padX: number, padY: number) => ({ width: w, height: h, scale, scaleY, padX, padY });
  const placed = (rw: number, rh: number, offX: number, offY: number): Plan =>
    ({ resizeTo: { width: rw, height: rh }, rw, rh, offX, offY, source: source(w / rw, h / rh, offX, offY) });
  if (recipe.resize === 'fill') return placed(W, H, 0, 0);
  if (recipe.resize === 'cover') {
    const s = Math.max(W / w, H / h);
    const rw = Math.max(W, Math.round(w * s));
    const rh = Math.max(H, Math.round(h * s));
    // `|| 0` below: an uncropped side reports 0, not -0.
    const cropped = { resizeTo: { width: W, height: H }, rw: W, rh: H, offX: 0, offY: 0 };
    if (rw * rh <= 4 * W * H) {
      // Resize whole, then crop: keeps JPEG shrink-on-load, the fast path for photos.
      const cropAfter = { left: Math.floor((rw - W) / 2), top: Math.floor((rh - H) / 2), width: W, height: H };
      return { ...cropped, resizeTo: { width: rw, height: rh }, cropAfter, source: source(w / rw, h / rh, -cropAfter.left || 0, -cropAfter.top || 0) };
    }
    const width = Math.min(w, Math.max(1, Math.round(W / s)));
    const height = Math.min(h, Math.max(1, Math.round(H / s)));
    const cropBefore = { left: Math.floor((w - width) / 2), top: Math.floor((h - height) / 2), width, height };
    const [sx, sy] = [width / W, height / H];
    return { ...cropped, cropBefore, source: source(sx, sy, -cropBefore.left / sx || 0, -cropBefore.top / sy || 0) };
  }
  const s = Math.min(W / w, H / h);
  const rw = Math.min(W, Math.max(1, Math.round(w * s)));
  const rh = Math.min(H, Math.max(1, Math.round(h * s)));
  // letterbox: top-left, as YOLOX expects; contain: centred.
  return recipe.resize === 'letterbox' ? placed(rw, rh, 0, 0) : placed(rw, rh, Math.floor((W - rw) / 2), Math.floor((H - rh) / 2));
}

function codedError(index: number, err: unknown): KizunaError {
  if (err instanceof KizunaError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = /pixel limit/i.test(message) ? 'KZ_ERR_IMAGE_TOO_LARGE' : 'KZ_ERR_IMAGE_CORRUPT';
  return new KizunaError(code, `image ${index}: ${message}`, { cause: err });
}

async function decode(sharp: SharpFactory, bytes: Uint8Array, index: number, recipe: ImagePreprocess, maxPixels: number): Promise<Decoded> {
  try {
    // 'warning' is sharp's advice for untrusted input: truncated or damaged data fails.
    const options: SharpOptions = { limitInputPixels: maxPixels, failOn: 'warning' };
    // Only the header is read here: a huge image is refused, with its size, before any decoding.
    const meta = await sharp(bytes, { ...options, limitInputPixels: false }).metadata();
    if (REFUSED_FORMATS.has(meta.format)) throw new KizunaError('KZ_ERR_IMAGE_CORRUPT', `image ${index}: ${meta.format} is not accepted`);
    const { width: w, height: h } = meta.autoOrient ?? meta;
    if (!(w > 0 && h > 0)) throw new KizunaError('KZ_ERR_IMAGE_CORRUPT', `image ${index}: no size in header`);
    if (w * h > maxPixels) {
      throw new KizunaError('KZ_ERR_IMAGE_TOO_LARGE', `image ${index}: ${w}x${h} is more than ${maxPixels} pixels`);
    }
    const p = plan(w, h, recipe);
    let pipeline = sharp(bytes, options).rotate().flatten({ background: WHITE });
    // For sharp, extract before resize crops the (oriented) input, after resize its output.
    if (p.cropBefore) pipeline = pipeline.extract(p.cropBefore);
    pipeline = pipeline.resize(p.resizeTo.width, p.resizeTo.height, { fit: 'fill', kernel: 'linear' });
    if (p.cropAfter) pipeline = pipeline.extract(p.cropAfter);
    pipeline = recipe.channels === 'gray' ? pipeline.grayscale() : pipeline.toColourspace('srgb');
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.width !== p.rw || info.height !== p.rh) {
      throw new KizunaError('KZ_ERR_IMAGE_CORRUPT', `image ${index}: decoded to ${info.width}x${info.height}`);
    }
    return { ...p, data, channels: info.channels };
  } catch (err) {
    throw codedError(index, err);
  }
}

/** Per-channel 256-entry lookup tables: one load per value, invert and normalisation folded in. */
function lookupTables(recipe: ImagePreprocess, C: number): { lut: Float32Array | Uint8Array; pad: number[] } {
  const raw = recipe.dtype === 'uint8';
  const lut = raw ? new Uint8Array(256 * C) : new Float32Array(256 * C);
  const pad: number[] = [];
  const padPixel = Math.round(recipe.pad ?? 0);
  const invert = recipe.invert === true && recipe.channels === 'gray';
  for (let c = 0; c < C; c++) {
    const mean = recipe.mean?.[c] ?? recipe.mean?.[0] ?? 0;
    const std = recipe.std?.[c] ?? recipe.std?.[0] ?? 1;
    const a = raw ? 1 : 1 / (recipe.scale * std);
    const b = raw ? 0 : -mean / std;
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = (invert ? 255 - v : v) * a + b;
    pad.push(raw ? padPixel : (recipe.pad ?? 0) * a + b);
  }
  return { lut, pad };
}

/** Writes one image into the batch tensor: one pass over the output, padding by offset. */
function fill(out: Float32Array | Uint8Array, base: number, img: Decoded, recipe: ImagePreprocess, lut: ArrayLike<number>, pad: number[]): void {
  const W = recipe.width;
  const H = recipe.height;
  const C = pad.length;
  const nchw = recipe.layout === 'nchw';
  const chStride = nchw ? W * H : 1;
  const pxStride = nchw ? 1 : C;
  const { data, channels: sc, rw, rh, offX, offY } = img;
  // Which decoded channel feeds each model channel (bgr swaps; a 1-channel decode feeds all).
  const from = Array.from({ length: C }, (_, c) => Math.min(recipe.channels === 'bgr' ? 2 - c : c, sc - 1));
  const x0 = Math.max(0, offX);
  const x1 = Math.min(W, offX + rw);
  for (let y = 0; y < H; y++) {
    const sy = y - offY;
    const row = base + y * W * pxStride;
    const inside = sy >= 0 && sy < rh;
    for (let c = 0; c < C; c++) {
      const o = row + c * chStride;
      const p = pad[c] as number;
      const lc = c * 256;
      const fc = from[c] as number;
      if (!inside) {
        for (let x = 0; x < W; x++) out[o + x * pxStride] = p;
        continue;
      }
      for (let x = 0; x < x0; x++) out[o + x * pxStride] = p;
      let s = (sy * rw + (x0 - offX)) * sc + fc;
      for (let x = x0; x < x1; x++, s += sc) out[o + x * pxStride] = lut[lc + (data[s] as number)] as number;
      for (let x = x1; x < W; x++) out[o + x * pxStride] = p;
    }
  }
}

/** Decodes, orients, resizes and normalises N images into one [N,C,H,W] or [N,H,W,C] tensor. */
export async function preprocessImages(images: Uint8Array[], recipe: ImagePreprocess, limits: { maxPixels: number }): Promise<PreparedBatch> {
  if (images.length === 0) throw new KizunaError('KZ_ERR_BAD_REQUEST', 'no image in the request');
  const sharp = await loadSharp();
  // Decodes run in parallel on libuv's pool; each is bounded by maxPixels.
  const decoded = await Promise.all(images.map((bytes, i) => decode(sharp, bytes, i, recipe, limits.maxPixels)));
  const C = recipe.channels === 'gray' ? 1 : 3;
  const { width: W, height: H } = recipe;
  const per = C * H * W;
  const out = recipe.dtype === 'uint8' ? new Uint8Array(per * images.length) : new Float32Array(per * images.length);
  const { lut, pad } = lookupTables(recipe, C);
  decoded.forEach((img, n) => fill(out, n * per, img, recipe, lut, pad));
  const shape = recipe.layout === 'nchw' ? [images.length, C, H, W] : [images.length, H, W, C];
  return { tensor: { dtype: recipe.dtype ?? 'float32', shape, data: out }, sources: decoded.map((d) => d.source) };
}

/** Encodes raw gray pixels as PNG (demos and tests send images the way a camera app would). */
export async function grayToPng(pixels: Uint8Array, width: number, height: number): Promise<Buffer> {
  const sharp = await loadSharp();
  return sharp(pixels, { raw: { width, height, channels: 1 } }).png({ compressionLevel: 1 }).toBuffer();
}
