import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { KizunaError } from '../../mesh/errors.js';
import type { Tensor } from '../../mesh/tensor.js';
import { parseLabels } from '../../models/labels.js';
import type { ClassifyPostprocess } from '../../models/manifest.js';
import { classify, softmax, topK } from '../../models/postprocess.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

const close = (a: number, b: number, eps = 1e-6) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);
const recipe = (softmax: boolean, topK = 2): ClassifyPostprocess => ({ kind: 'classify', output: 'y', softmax, topK });
const f32 = (shape: number[], v: number[]): Tensor => ({ dtype: 'float32', shape, data: Float32Array.from(v) });

test('softmax matches the formula and survives huge logits', () => {
  const p = softmax([1, 2, 3]);
  const z = Math.exp(1) + Math.exp(2) + Math.exp(3);
  [1, 2, 3].forEach((v, i) => close(p[i] as number, Math.exp(v) / z));
  const big = softmax([1000, 1001, 1002]);
  [1, 2, 3].forEach((v, i) => close(big[i] as number, Math.exp(v) / z));
  assert.deepEqual(Array.from(softmax([Infinity, 0, Infinity])), [0.5, 0, 0.5]);
  assert.deepEqual(Array.from(softmax([-Infinity, -Infinity])), [0.5, 0.5]);
  assert.ok(Array.from(softmax([1, NaN])).every(Number.isNaN));
});

test('topK: best first, lower index wins ties, NaN never ranks, k is clamped', () => {
  const v = [0.1, 0.7, NaN, 0.7, 0.05, 0.9];
  assert.deepEqual(topK(v, 3), [{ index: 5, score: 0.9 }, { index: 1, score: 0.7 }, { index: 3, score: 0.7 }]);
  assert.deepEqual(topK([3, 1, 2], 10).map((x) => x.index), [0, 2, 1]);
  assert.deepEqual(topK([3, 1, 2], 0), []);
  const many = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1000);
  assert.deepEqual(topK(many, 5).map((x) => x.score), [999, 998, 997, 996, 995]);
});

test('classify answers each batch item, with labels or index strings', () => {
  const out = f32([2, 3], [0.2, 0.5, 0.3, 0.6, 0.1, 0.3]);
  const answers = classify(out, recipe(false), ['cat', 'dog']);
  assert.equal(answers.length, 2);
  assert.deepEqual({ ...answers[0], score: 0 }, { label: 'dog', index: 1, score: 0, top: answers[0]?.top });
  assert.deepEqual(answers[0]?.top.map((x) => x.label), ['dog', '2']);
  assert.deepEqual(answers[1]?.top.map((x) => [x.label, x.index]), [['cat', 0], ['2', 2]]);
  close(answers[1]?.score as number, 0.6);
  // topK argument overrides the recipe.
  assert.equal(classify(out, recipe(false), undefined, 3)[0]?.top.length, 3);
});

test('classify applies softmax and accepts [C] and [N,C,1,1] outputs', () => {
  const logits = [2, 1, 0];
  const [one] = classify(f32([3], logits), recipe(true, 1), undefined);
  const p = softmax(logits);
  assert.deepEqual(one?.top.length, 1);
  assert.equal(one?.label, '0');
  close(one?.score as number, p[0] as number);
  const four = classify(f32([2, 3, 1, 1], [...logits, 0, 0, 5]), recipe(true), undefined);
  assert.deepEqual(four.map((a) => a.index), [0, 2]);
  const f64: Tensor = { dtype: 'float64', shape: [1, 3], data: Float64Array.from(logits) };
  assert.equal(classify(f64, recipe(true), undefined)[0]?.index, 0);
});

test('classify refuses non-float or unusable outputs with KZ_ERR_INFERENCE', () => {
  const bad = (t: Tensor) => assert.throws(() => classify(t, recipe(true), undefined), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_INFERENCE');
  bad({ dtype: 'int32', shape: [1, 3], data: Int32Array.from([1, 2, 3]) });
  bad(f32([1, 3, 2], [1, 2, 3, 4, 5, 6]));
  bad(f32([2, 3], [1, 2, 3]));
  bad(f32([1, 0], []));
  bad(f32([], [1]));
  bad(f32([1, 2], [NaN, NaN]));
});

test('parseLabels: plain lines, indexed lines, quotes, blank tail', () => {
  assert.deepEqual(parseLabels('zero\none\r\n\ntwo\n\n\n'), ['zero', 'one', '', 'two']);
  assert.deepEqual(parseLabels('2,two, deux\n0,"zero"\n'), ['zero', '', 'two, deux']);
  // One plain line makes the whole file plain: digits and a comma may begin a real name.
  assert.deepEqual(parseLabels('3,5-dimethyl\nbenzene'), ['3,5-dimethyl', 'benzene']);
  assert.throws(() => parseLabels('1,a\n1,b'), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_MANIFEST');
  assert.throws(() => parseLabels('999999999,a'), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_MANIFEST');
});

test('parseLabels reads the real ImageNet Labels.txt', (t) => {
  const path = sharedPath('samples', 'imagenet', 'Labels.txt');
  if (!path) return t.skip(`sample missing: ${expectedSharedPath('samples', 'imagenet', 'Labels.txt')}`);
  const labels = parseLabels(readFileSync(path, 'utf8'));
  assert.equal(labels.length, 1000);
  assert.equal(labels[0], 'tench, Tinca tinca');
  assert.equal(labels[281], 'tabby, tabby cat');
  assert.equal(labels[999], 'toilet tissue, toilet paper, bathroom tissue');
  assert.ok(labels.every((l) => l.length > 0));
});
