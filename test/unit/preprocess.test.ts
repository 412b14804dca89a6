import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fakePng } from '../helpers/images.js';
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { KizunaError, type ErrorCode } from '../../mesh/errors.js';
import type { ImagePreprocess } from '../../models/manifest.js';
import { preprocessImages } from '../../models/preprocess.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

const limits = { maxPixels: 1_000_000 };
const recipe = (over: Partial<ImagePreprocess>): ImagePreprocess =>
  ({ kind: 'image', input: 'x', width: 4, height: 2, resize: 'fill', channels: 'rgb', layout: 'nchw', scale: 1, ...over });
const png = (w: number, h: number, channels: 1 | 2 | 3 | 4, px: number[]) =>
  sharp(Buffer.from(px), { raw: { width: w, height: h, channels } }).png().toBuffer();
const solid = (w: number, h: number, rgb: number[]) => png(w, h, 3, Array.from({ length: w * h }, () => rgb).flat());
const values = (a: ArrayLike<number | bigint>) => Array.from(a, Number);
async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp) {
  await assert.rejects(p, (e: unknown) => e instanceof KizunaError && e.code === code && (!message || message.test(e.message)));
}

// A 4x2 image whose pixel (x, y) is [10i+1, 10i+2, 10i+3] with i = 4y + x.
const PX = Array.from({ length: 8 }, (_, i) => [10 * i + 1, 10 * i + 2, 10 * i + 3]);
const at = (i: number, c: number) => (PX[i] as number[])[c] as number;
const grid = () => png(4, 2, 3, PX.flat());

test('fill at the same size keeps every pixel in place (rgb, nchw)', async () => {
  const { tensor, sources } = await preprocessImages([await grid()], recipe({}), limits);
  assert.equal(tensor.dtype, 'float32');
  assert.deepEqual(tensor.shape, [1, 3, 2, 4]);
  assert.deepEqual(values(tensor.data as Float32Array), [0, 1, 2].flatMap((c) => PX.map((_, i) => at(i, c))));
  assert.deepEqual(sources, [{ width: 4, height: 2, scale: 1, scaleY: 1, padX: 0, padY: 0 }]);
});

test('bgr and nhwc reorder channels and axes', async () => {
  const { tensor } = await preprocessImages([await grid()], recipe({ channels: 'bgr', layout: 'nhwc' }), limits);
  assert.deepEqual(tensor.shape, [1, 2, 4, 3]);
  assert.deepEqual(values(tensor.data as Float32Array), PX.flatMap((_, i) => [at(i, 2), at(i, 1), at(i, 0)]));
});

test('gray, invert, scale and a one-element mean/std', async () => {
  const gray = await png(4, 2, 1, [0, 50, 100, 150, 200, 250, 255, 5]);
  const { tensor } = await preprocessImages([gray], recipe({ channels: 'gray', invert: true, scale: 255, mean: [0.5], std: [0.5] }), limits);
  assert.deepEqual(tensor.shape, [1, 1, 2, 4]);
  const expected = [0, 50, 100, 150, 200, 250, 255, 5].map((v) => Math.fround(((255 - v) / 255 - 0.5) / 0.5));
  values(tensor.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - (expected[i] as number)) < 1e-6, `${i}: ${v}`));
});

test('per-channel mean/std; uint8 output ignores normalisation', async () => {
  const r = recipe({ scale: 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  const { tensor } = await preprocessImages([await grid()], r, limits);
  const f = tensor.data as Float32Array;
  const expected = (i: number, c: number) => (at(i, c) / 255 - (r.mean?.[c] as number)) / (r.std?.[c] as number);
  for (const c of [0, 1, 2]) for (let i = 0; i < 8; i++) assert.ok(Math.abs((f[c * 8 + i] as number) - expected(i, c)) < 1e-5);
  const raw = await preprocessImages([await grid()], { ...r, dtype: 'uint8', layout: 'nhwc' }, limits);
  assert.equal(raw.tensor.dtype, 'uint8');
  assert.ok(raw.tensor.data instanceof Uint8Array);
  assert.deepEqual(values(raw.tensor.data), PX.flat());
});

test('cover crops the centre; sources report the crop as a negative pad', async () => {
  const { tensor, sources } = await preprocessImages([await grid()], recipe({ width: 2, resize: 'cover' }), limits);
  assert.deepEqual(tensor.shape, [1, 3, 2, 2]);
  assert.deepEqual(values(tensor.data as Float32Array).slice(0, 4), [at(1, 0), at(2, 0), at(5, 0), at(6, 0)]);
  assert.deepEqual(sources[0], { width: 4, height: 2, scale: 1, scaleY: 1, padX: -1, padY: 0 });
  // Vertically: rows 2..5 of a 1x8 column of gray levels 0, 10, .. 70.
  const column = await png(1, 8, 1, [0, 10, 20, 30, 40, 50, 60, 70]);
  const tall = await preprocessImages([column], recipe({ width: 1, height: 4, resize: 'cover', channels: 'gray' }), limits);
  assert.deepEqual(values(tall.tensor.data), [20, 30, 40, 50]);
  assert.equal(tall.sources[0]?.padY, -2);
});

test('contain centres the image in pad; letterbox puts it top-left', async () => {
  const row = (y: number) => (y >= 0 && y < 2 ? [0, 1, 2, 3].map((x) => at(4 * y + x, 0)) : [7, 7, 7, 7]);
  const contain = await preprocessImages([await grid()], recipe({ height: 4, resize: 'contain', pad: 7 }), limits);
  assert.deepEqual(values(contain.tensor.data as Float32Array).slice(0, 16), [-1, 0, 1, 2].flatMap(row));
  assert.equal(contain.sources[0]?.padY, 1);
  const box = await preprocessImages([await grid()], recipe({ height: 4, resize: 'letterbox', pad: 7 }), limits);
  assert.deepEqual(values(box.tensor.data as Float32Array).slice(0, 16), [0, 1, 2, 3].flatMap(row));
  assert.deepEqual(box.sources[0], { width: 4, height: 2, scale: 1, scaleY: 1, padX: 0, padY: 0 });
});

test('scaled modes report the transform back to original pixels', async () => {
  const blue = [50, 100, 150];
  const contain = await preprocessImages([await solid(1, 1, blue)], recipe({ resize: 'contain', pad: 0 }), limits);
  assert.deepEqual(values(contain.tensor.data as Float32Array), [0, 1, 2].flatMap((c) => [0, blue[c], blue[c], 0, 0, blue[c], blue[c], 0]));
  assert.deepEqual(contain.sources[0], { width: 1, height: 1, scale: 0.5, scaleY: 0.5, padX: 1, padY: 0 });
  const box = await preprocessImages([await solid(2, 1, blue)], recipe({ height: 4, resize: 'letterbox', pad: 114 }), limits);
  assert.deepEqual(values(box.tensor.data as Float32Array).slice(0, 16), [...Array(8).fill(50), ...Array(8).fill(114)]);
  assert.deepEqual(box.sources[0], { width: 2, height: 1, scale: 0.5, scaleY: 0.5, padX: 0, padY: 0 });
  const cover = await preprocessImages([await solid(2, 4, blue)], recipe({ height: 4, resize: 'cover' }), limits);
  assert.deepEqual(cover.sources[0], { width: 2, height: 4, scale: 0.5, scaleY: 0.5, padX: 0, padY: -2 });
  // A 1x20000 strip (stored 20000x1, EXIF-rotated) is cropped upright before resizing:
  // never a 224x4480000 intermediate.
  const raw = { raw: { width: 20000, height: 1, channels: 3 as const } };
  const jpeg = await sharp(Buffer.alloc(60000, 128), raw).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  const start = performance.now();
  const strip = await preprocessImages([jpeg], recipe({ width: 224, height: 224, resize: 'cover' }), limits);
  assert.ok(performance.now() - start < 500);
  assert.deepEqual(strip.sources[0], { width: 1, height: 20000, scale: 1 / 224, scaleY: 1 / 224, padX: 0, padY: -9999 * 224 });
  const fill = await preprocessImages([await solid(4, 2, blue)], recipe({ width: 2, height: 4 }), limits);
  assert.deepEqual(fill.sources[0], { width: 4, height: 2, scale: 2, scaleY: 0.5, padX: 0, padY: 0 });
  assert.ok(values(fill.tensor.data as Float32Array).every((v, i) => v === blue[Math.floor(i / 8)]));
});

test('a batch of two images of different sizes is one [2,C,H,W] tensor', async () => {
  // The second image is a view inside a larger buffer, as images inside an MQTT packet are.
  const second = await solid(3, 1, [200, 210, 220]);
  const packet = new Uint8Array(second.length + 11);
  packet.set(second, 5);
  const images = [await solid(5, 3, [10, 20, 30]), packet.subarray(5, 5 + second.length)];
  const { tensor, sources } = await preprocessImages(images, recipe({ width: 2, height: 2 }), limits);
  assert.deepEqual(tensor.shape, [2, 3, 2, 2]);
  assert.deepEqual(values(tensor.data as Float32Array), [10, 20, 30, 200, 210, 220].flatMap((v) => [v, v, v, v]));
  assert.deepEqual(sources.map((s) => [s.width, s.height]), [[5, 3], [3, 1]]);
});

test('alpha on white, gray and palette inputs become rgb, 16-bit becomes 8-bit', async () => {
  const rgba = await png(2, 1, 4, [255, 0, 0, 0, 0, 0, 255, 255]);
  const r = recipe({ width: 2, height: 1, layout: 'nhwc' });
  assert.deepEqual(values((await preprocessImages([rgba], r, limits)).tensor.data), [255, 255, 255, 0, 0, 255]);
  const gray = await png(2, 1, 1, [10, 200]);
  assert.deepEqual(values((await preprocessImages([gray], r, limits)).tensor.data), [10, 10, 10, 200, 200, 200]);
  const palette = await sharp(Buffer.from([16, 160, 240, 16, 160, 240]), { raw: { width: 2, height: 1, channels: 3 } }).png({ palette: true }).toBuffer();
  assert.deepEqual(values((await preprocessImages([palette], r, limits)).tensor.data), [16, 160, 240, 16, 160, 240]);
  const deep = await sharp(Buffer.from([255, 0, 0, 0, 0, 255]), { raw: { width: 2, height: 1, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
  assert.deepEqual(values((await preprocessImages([deep], r, limits)).tensor.data), [255, 0, 0, 0, 0, 255]);
});

test('EXIF orientation is applied before resizing', async () => {
  // Left half red, right half blue; orientation 6 shows it turned 90 degrees clockwise.
  const px = [0, 1].flatMap(() => [[255, 0, 0], [255, 0, 0], [0, 0, 255], [0, 0, 255]].flat());
  const jpeg = await sharp(Buffer.from(px), { raw: { width: 4, height: 2, channels: 3 } })
    .jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).withMetadata({ orientation: 6 }).toBuffer();
  const { tensor, sources } = await preprocessImages([jpeg], recipe({ width: 2, height: 4, layout: 'nhwc' }), limits);
  assert.deepEqual([sources[0]?.width, sources[0]?.height], [2, 4]);
  const d = tensor.data as Float32Array;
  assert.ok((d[0] as number) > 200 && (d[2] as number) < 60, `top is red: ${values(d.slice(0, 3))}`);
  assert.ok((d[21] as number) < 60 && (d[23] as number) > 200, `bottom is blue: ${values(d.slice(21))}`);
  // cover crops the upright image: its middle rows, red then blue.
  const cover = await preprocessImages([jpeg], recipe({ width: 2, height: 2, resize: 'cover', layout: 'nhwc' }), limits);
  const c = values(cover.tensor.data);
  assert.ok((c[0] as number) > 200 && (c[2] as number) < 60 && (c[6] as number) < 60 && (c[8] as number) > 200, `${c}`);
  assert.equal(cover.sources[0]?.padY, -1);
});

/** A valid PNG signature and header claiming w x h, with a tiny body. */

test('a 50000x50000 header is refused fast, without decoding', async () => {
  const before = process.memoryUsage().rss;
  const start = performance.now();
  await rejectsWith(preprocessImages([fakePng(50000, 50000)], recipe({}), { maxPixels: 4096 * 4096 }), 'KZ_ERR_IMAGE_TOO_LARGE', /50000x50000/);
  assert.ok(performance.now() - start < 1000, 'refused within a second');
  assert.ok(process.memoryUsage().rss - before < 64 * 2 ** 20, 'no large allocation');
  // A real image over a small limit is refused the same way.
  await rejectsWith(preprocessImages([await solid(10, 10, [1, 2, 3])], recipe({}), { maxPixels: 99 }), 'KZ_ERR_IMAGE_TOO_LARGE');
});

test('garbage, truncated, empty and vector inputs are corrupt; no image is a bad request', async () => {
  const r = recipe({});
  await rejectsWith(preprocessImages([new TextEncoder().encode('not an image at all')], r, limits), 'KZ_ERR_IMAGE_CORRUPT');
  await rejectsWith(preprocessImages([new Uint8Array(0)], r, limits), 'KZ_ERR_IMAGE_CORRUPT');
  const good = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } }).png({ compressionLevel: 0 }).toBuffer();
  await rejectsWith(preprocessImages([good.subarray(0, good.length >> 1)], r, limits), 'KZ_ERR_IMAGE_CORRUPT');
  const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  await rejectsWith(preprocessImages([jpeg.subarray(0, jpeg.length >> 1)], r, limits), 'KZ_ERR_IMAGE_CORRUPT');
  await rejectsWith(preprocessImages([fakePng(8, 8)], r, limits), 'KZ_ERR_IMAGE_CORRUPT');
  const svg = new TextEncoder().encode('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="2"/>');
  await rejectsWith(preprocessImages([svg], r, limits), 'KZ_ERR_IMAGE_CORRUPT', /svg/);
  await rejectsWith(preprocessImages([good, new Uint8Array([1, 2, 3])], r, limits), 'KZ_ERR_IMAGE_CORRUPT', /image 1/);
  await rejectsWith(preprocessImages([], r, limits), 'KZ_ERR_BAD_REQUEST');
});

test('the ImageNet recipe on the real kitten', async (t) => {
  const path = sharedPath('samples', 'imagenet', 'kitten_224.png');
  if (!path) return t.skip(`sample missing: ${expectedSharedPath('samples', 'imagenet', 'kitten_224.png')}`);
  const imagenet = recipe({ width: 224, height: 224, scale: 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  const { tensor, sources } = await preprocessImages([readFileSync(path)], imagenet, limits);
  assert.deepEqual(tensor.shape, [1, 3, 224, 224]);
  assert.deepEqual(sources[0], { width: 224, height: 224, scale: 1, scaleY: 1, padX: 0, padY: 0 });
  const d = tensor.data as Float32Array;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of d) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  // Normalised values of 0..255 lie in [-2.12, 2.64]; a photo spreads over much of it.
  assert.ok(min >= -2.2 && max <= 2.7, `range ${min}..${max}`);
  assert.ok(max - min > 2, `spread ${min}..${max}`);
  assert.ok(Math.abs(sum / d.length) < 1.5, `mean ${sum / d.length}`);
});
