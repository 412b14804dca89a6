/** Detector post-processing (models/detect.ts) on hand-made grids: decode, thresholds, NMS, the letterbox mapping, bad outputs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { KizunaError } from '../../mesh/errors.js';
import type { Tensor } from '../../mesh/tensor.js';
import { DETECT_DEFAULTS, detect, gridAnchors, iou, type Detection } from '../../models/detect.js';
import { parseManifest, type DetectPostprocess, type ImagePreprocess } from '../../models/manifest.js';
import { answer } from '../../models/pipeline.js';
import { preprocessImages, type ImageSource } from '../../models/preprocess.js';
import type { LoadedModel } from '../../models/store.js';
import { repoRoot } from '../helpers/shared.js';

// A 64x64 input with strides 16 and 32: a 4x4 grid (anchors 0..15) then a 2x2 grid (16..19).
const SIZE = { width: 64, height: 64 };
const STRIDES = [16, 32];
const CLASSES = 3;
const D = 5 + CLASSES;
const LABELS = ['person', 'bicycle', 'car'];
const recipe = (over: Partial<DetectPostprocess> = {}): DetectPostprocess => ({ kind: 'detect', family: 'yolox', output: 'output', strides: STRIDES, ...over });

/** Each anchor's cell and stride, in the output's order. */
function cells(size: { width: number; height: number }, strides: number[]): { gx: number; gy: number; s: number }[] {
  return strides.flatMap((s) => Array.from({ length: Math.floor(size.height / s) * Math.floor(size.width / s) }, (_, i) => {
    const cols = Math.floor(size.width / s);
    return { gx: i % cols, gy: Math.floor(i / cols), s };
  }));
}

/** An output of `batch` items whose every anchor scores 0 (no box). */
function empty(batch = 1, size = SIZE, strides = STRIDES, classes = CLASSES): Tensor {
  const a = gridAnchors(size.width, size.height, strides);
  return { dtype: 'float32', shape: [batch, a, 5 + classes], data: new Float32Array(batch * a * (5 + classes)) };
}

/** Puts a box (centre and size in model pixels) at an anchor, as YOLOX would encode it. */
function put(t: Tensor, anchor: number, box: { cx: number; cy: number; w: number; h: number }, obj: number, scores: number[], batch = 0): void {
  const { gx, gy, s } = cells(SIZE, STRIDES)[anchor]!;
  const d = t.shape[2]!;
  const o = (batch * t.shape[1]! + anchor) * d;
  const row = [box.cx / s - gx, box.cy / s - gy, Math.log(box.w / s), Math.log(box.h / s), obj, ...scores];
  (t.data as Float32Array).set(row, o);
}

const close = (a: number, b: number, eps = 1e-3) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);
const closeBox = (a: number[], b: number[], eps = 0.02) => a.forEach((v, i) => close(v, b[i]!, eps));
const one = (t: Tensor, over: Partial<DetectPostprocess> = {}, sources?: ImageSource[]): Detection[] => {
  const all = detect(t, recipe(over), SIZE, LABELS, sources);
  assert.equal(all.length, 1);
  return all[0]!;
};

test('gridAnchors: YOLOX at 416 has 3549 anchors; a grid cell count is floor(size / stride)', () => {
  assert.equal(gridAnchors(416, 416, [8, 16, 32]), 52 * 52 + 26 * 26 + 13 * 13);
  assert.equal(gridAnchors(640, 480, [8, 16, 32]), 80 * 60 + 40 * 30 + 20 * 15);
  assert.equal(gridAnchors(64, 64, [16, 32]), 20);
  assert.equal(gridAnchors(40, 40, [16]), 4);
});

test('decode: cx = (x + col) * stride, w = exp(w) * stride, score = obj * class, in grid order', () => {
  const t = empty();
  // Anchor 6 is the 4x4 grid's cell (2, 1); anchor 17 the 2x2 grid's cell (1, 0).
  put(t, 6, { cx: 40, cy: 24, w: 16, h: 8 }, 0.9, [0.1, 0.8, 0.2]);
  put(t, 17, { cx: 48, cy: 16, w: 20, h: 30 }, 0.5, [0.9, 0, 0]);
  const found = one(t);
  assert.equal(found.length, 2);
  assert.deepEqual(found.map((d) => [d.label, d.index]), [['bicycle', 1], ['person', 0]]);
  close(found[0]!.score, 0.72);
  close(found[1]!.score, 0.45);
  closeBox(found[0]!.box, [32, 20, 48, 28]);
  closeBox(found[1]!.box, [38, 1, 58, 31]);
  // By hand, without the helper: anchor 17 raw [0.5, 0.5, log 1, log 0.5] is centre (48, 16), 32x16.
  const raw = empty();
  (raw.data as Float32Array).set([0.5, 0.5, 0, Math.log(0.5), 1, 0, 0, 0.6], 17 * D);
  const [car] = one(raw);
  assert.deepEqual(car, { label: 'car', index: 2, score: Math.fround(0.6), box: [32, 8, 64, 24] });
});

test('an anchor over the threshold for two classes gives a box for each', () => {
  const t = empty();
  put(t, 5, { cx: 24, cy: 24, w: 10, h: 10 }, 1, [0.7, 0, 0.6]);
  assert.deepEqual(one(t).map((d) => d.label), ['person', 'car']);
});

test('thresholds: the score must be above scoreThreshold (default 0.3); labels fall back to the index', () => {
  const t = empty();
  put(t, 0, { cx: 8, cy: 8, w: 8, h: 8 }, 1, [0.29, 0, 0]);
  put(t, 3, { cx: 56, cy: 8, w: 8, h: 8 }, 0.5, [0, 0.62, 0]);
  put(t, 12, { cx: 8, cy: 56, w: 8, h: 8 }, 0.25, [0, 0, 1]);
  assert.equal(DETECT_DEFAULTS.scoreThreshold, 0.3);
  assert.deepEqual(one(t).map((d) => d.index), [1]);
  assert.deepEqual(one(t, { scoreThreshold: 0.2 }).map((d) => d.index), [1, 0, 2], 'best first: 0.31, 0.29, 0.25');
  assert.deepEqual(one(t, { scoreThreshold: 0.9 }), []);
  const unlabelled = detect(t, recipe({ scoreThreshold: 0.2 }), SIZE, ['person'])[0]!;
  assert.deepEqual(unlabelled.map((d) => d.label), ['1', 'person', '2']);
});

test('NMS keeps the best of overlapping boxes of one class, and overlapping boxes of other classes', () => {
  const t = empty();
  put(t, 5, { cx: 24, cy: 24, w: 20, h: 20 }, 1, [0.8, 0, 0]); // person
  put(t, 6, { cx: 26, cy: 24, w: 20, h: 20 }, 1, [0.9, 0, 0]); // person, IoU 0.82 with the first: best one kept
  put(t, 9, { cx: 25, cy: 25, w: 20, h: 20 }, 1, [0, 0.7, 0]); // bicycle on the same spot: kept
  put(t, 15, { cx: 56, cy: 56, w: 10, h: 10 }, 1, [0.5, 0, 0]); // person elsewhere: kept
  const found = one(t);
  assert.deepEqual(found.map((d) => [d.label, Math.round(d.score * 10)]), [['person', 9], ['bicycle', 7], ['person', 5]]);
  closeBox(found[0]!.box, [16, 14, 36, 34]);
});

test('NMS: iouThreshold decides when an overlap suppresses; IoU is computed on the boxes', () => {
  const t = empty();
  // Two 20x20 boxes 8 px apart: IoU = 240 / 560 = 0.43.
  put(t, 5, { cx: 24, cy: 24, w: 20, h: 20 }, 1, [0.9, 0, 0]);
  put(t, 6, { cx: 32, cy: 24, w: 20, h: 20 }, 1, [0.8, 0, 0]);
  close(iou([14, 14, 34, 34], [22, 14, 42, 34]), 240 / 560);
  assert.equal(iou([0, 0, 1, 1], [2, 2, 3, 3]), 0);
  assert.equal(one(t).length, 2, 'IoU 0.43 is under the default 0.45');
  assert.equal(one(t, { iouThreshold: 0.4 }).length, 1);
  assert.equal(one(t, { iouThreshold: 0 }).length, 1);
  assert.equal(one(t, { iouThreshold: 1 }).length, 2);
});

test('maxDetections keeps the best boxes, sorted by score', () => {
  const t = empty();
  for (let a = 0; a < 16; a++) {
    const { gx, gy } = cells(SIZE, STRIDES)[a]!;
    put(t, a, { cx: gx * 16 + 8, cy: gy * 16 + 8, w: 8, h: 8 }, 1, [0.4 + a * 0.03, 0, 0]);
  }
  assert.equal(one(t).length, 16);
  const top = one(t, { maxDetections: 3 });
  assert.equal(top.length, 3);
  assert.deepEqual(top.map((d) => Math.round(d.score * 100)), [85, 82, 79]);
  const all = one(t);
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.score >= all[i]!.score);
});

test('letterbox mapping: boxes go back to the original pixels, clipped to the image; boxes in the padding go', () => {
  const t = empty();
  put(t, 5, { cx: 24, cy: 24, w: 16, h: 16 }, 1, [0.9, 0, 0]); // model [16, 16, 32, 32]
  put(t, 15, { cx: 56, cy: 56, w: 24, h: 24 }, 1, [0, 0.8, 0]); // model [44, 44, 68, 68]: past the edge
  // A 200x100 image letterboxed top-left into 64x64: scale 200/64, the image fills rows 0..32.
  const letterbox: ImageSource = { width: 200, height: 100, scale: 200 / 64, scaleY: 100 / 32, padX: 0, padY: 0 };
  const found = one(t, {}, [letterbox]);
  assert.equal(found.length, 1, 'the bicycle box lies in the padding below the image');
  closeBox(found[0]!.box, [50, 50, 100, 100]);
  // Centred padding (contain) and a different vertical factor (fill) are honoured too.
  const centred: ImageSource = { width: 100, height: 100, scale: 2, scaleY: 2.5, padX: 4, padY: 10 };
  const [p, b] = one(t, {}, [centred]);
  closeBox(p!.box, [24, 15, 56, 55]);
  closeBox(b!.box, [80, 85, 100, 100]);
  // Without a source (a tensor request) boxes stay in model pixels, clipped to the input.
  closeBox(one(t)[1]!.box, [44, 44, 64, 64]);
});

test('the real letterbox (preprocessImages) and the mapping agree: the whole model image maps to the whole photo', async () => {
  const photo = await sharp({ create: { width: 300, height: 120, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toBuffer();
  const pre: ImagePreprocess = { kind: 'image', input: 'images', width: 64, height: 64, resize: 'letterbox', pad: 114, channels: 'bgr', layout: 'nchw', scale: 1 };
  const { tensor, sources } = await preprocessImages([photo], pre, { maxPixels: 1 << 20 });
  // The image occupies the top-left 64 x 26 (300x120 scaled by 64/300): rows below are padding (114).
  const data = tensor.data as Float32Array;
  assert.equal(data[2 * 64 * 64 + 0], 200, 'red, in channel 2 (BGR)');
  assert.equal(data[2 * 64 * 64 + 63 * 64], 114);
  const t = empty();
  put(t, 5, { cx: 32, cy: 13, w: 64, h: 26 }, 1, [0.9, 0, 0]);
  const [whole] = one(t, {}, sources);
  closeBox(whole!.box, [0, 0, 300, 120], 0.5);
});

test('a batch answers each item with its own source', () => {
  const t = empty(2);
  put(t, 5, { cx: 24, cy: 24, w: 16, h: 16 }, 1, [0.9, 0, 0], 0);
  put(t, 10, { cx: 40, cy: 40, w: 16, h: 16 }, 1, [0, 0, 0.8], 1);
  const s = (k: number): ImageSource => ({ width: 64 * k, height: 64 * k, scale: k, scaleY: k, padX: 0, padY: 0 });
  const [a, b] = detect(t, recipe(), SIZE, LABELS, [s(1), s(10)]);
  assert.deepEqual(a!.map((d) => d.box), [[16, 16, 32, 32]]);
  assert.deepEqual(b!.map((d) => [d.label, d.box]), [['car', [320, 320, 480, 480]]]);
});

test('NaN and infinite outputs give no boxes and no crash', () => {
  const bad = [
    [NaN, 0, 0, 0, 1, 0.9, 0, 0],
    [0, 0, Infinity, 0, 1, 0.9, 0, 0],
    [0, 0, 0, 1e6, 1, 0.9, 0, 0], // exp overflows
    [0, 0, 0, 0, NaN, 0.9, 0, 0],
    [0, 0, 0, 0, 1, NaN, NaN, NaN],
    [0, 0, 0, 0, Infinity, 0, 0, 0], // inf x 0
  ];
  for (const row of bad) {
    const t = empty();
    (t.data as Float32Array).set(row, 5 * D);
    assert.deepEqual(one(t), [], JSON.stringify(row));
  }
  const all = empty();
  (all.data as Float32Array).fill(NaN);
  assert.deepEqual(one(all), []);
});

test('a malformed output is KZ_ERR_INFERENCE, never a crash', () => {
  const code = (t: Tensor) => assert.throws(() => detect(t, recipe(), SIZE, LABELS), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_INFERENCE');
  code({ dtype: 'float32', shape: [1, 19, D], data: new Float32Array(19 * D) }); // anchors do not match the grid
  code({ dtype: 'float32', shape: [1, 20, 5], data: new Float32Array(100) }); // no class
  code({ dtype: 'float32', shape: [1, 20, D], data: new Float32Array(10) }); // data shorter than its shape
  code({ dtype: 'int32', shape: [1, 20, D], data: new Int32Array(20 * D) });
  code({ dtype: 'float32', shape: [20 * D], data: new Float32Array(20 * D) });
  code({ dtype: 'float32', shape: [1, 1, 20, D], data: new Float32Array(20 * D) });
  // [anchors, D] without a batch axis is one item.
  assert.deepEqual(detect({ dtype: 'float64', shape: [20, D], data: new Float64Array(20 * D) }, recipe(), SIZE), [[]]);
});

test('every anchor firing on every class: maxDetections caps the answer, and it stays fast', () => {
  const size = { width: 416, height: 416 };
  const strides = [8, 16, 32];
  const t = empty(1, size, strides, 80);
  const data = t.data as Float32Array;
  for (let a = 0; a < 3549; a++) data.set([0.5, 0.5, 0, 0, 1, ...Array.from({ length: 80 }, (_, c) => 0.31 + ((a * 7 + c) % 97) / 200)], a * 85);
  const started = performance.now();
  const [found] = detect(t, { kind: 'detect', family: 'yolox', output: 'output', strides }, size);
  const ms = performance.now() - started;
  assert.equal(found!.length, 100);
  assert.ok(ms < 2000, `${ms} ms for 283,920 candidates`);
});

test('pipeline answer(): a detect model answers boxes in original pixels with sources, model pixels without', () => {
  const manifest = parseManifest(JSON.parse(readFileSync(path.join(repoRoot, 'models', 'catalog', 'yolox-nano.json'), 'utf8')), 'yolox-nano.json');
  const model = { manifest, labels: ['person', 'bicycle'], session: {} as LoadedModel['session'], bytes: 0 } as LoadedModel;
  const out: Tensor = { dtype: 'float32', shape: [1, 3549, 85], data: new Float32Array(3549 * 85) };
  // Anchor 0 (stride 8, cell 0,0): centre (4, 4), 8x8 -> model box [0, 0, 8, 8].
  (out.data as Float32Array).set([0.5, 0.5, 0, 0, 0.9, 0, 0.9], 0);
  const src: ImageSource = { width: 832, height: 500, scale: 2, scaleY: 2, padX: 0, padY: 0 };
  assert.deepEqual(answer(model, { output: out }, { sources: [src] }), [[{ label: 'bicycle', index: 1, score: Math.fround(Math.fround(0.9) * Math.fround(0.9)), box: [0, 0, 16, 16] }]]);
  assert.deepEqual((answer(model, { output: out }) as Detection[][])[0]![0]!.box, [0, 0, 8, 8]);
  assert.throws(() => answer(model, {}), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_INFERENCE');
});

test('the manifest refuses a detect recipe that cannot match its model', () => {
  const base = JSON.parse(readFileSync(path.join(repoRoot, 'models', 'catalog', 'yolox-nano.json'), 'utf8'));
  assert.equal(parseManifest(base, 'ok').postprocess?.kind, 'detect');
  const refused = (change: (m: typeof base) => void, why: RegExp) => {
    const m = structuredClone(base);
    change(m);
    assert.throws(() => parseManifest(m, 'bad.json'), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_MANIFEST' && why.test(e.message), why.source);
  };
  refused((m) => (m.postprocess.strides = [8, 16]), /3549 anchors; strides 8,16 over 416x416 make 3380/);
  refused((m) => (m.postprocess.output = 'boxes'), /names output "boxes"/);
  refused((m) => delete m.preprocess, /needs width and height/);
  refused((m) => (m.postprocess.strides = [1024]), /no grid cell/);
  refused((m) => (m.postprocess.scoreThreshold = 1.5), /\/postprocess\/scoreThreshold Expected number to be less or equal to 1/);
  refused((m) => (m.postprocess.stride = [8]), /\/postprocess\/stride Unexpected property/);
  refused((m) => (m.postprocess.family = 'yolov8'), /\/postprocess\/family/);
  // Another YOLOX of the same family needs only data: its own size, taken without an image recipe.
  const tiny = structuredClone(base);
  delete tiny.preprocess;
  Object.assign(tiny.postprocess, { width: 640, height: 640 });
  tiny.outputs[0].shape = [1, 8400, 85];
  assert.equal(parseManifest(tiny, 'tiny').postprocess?.kind, 'detect');
});
