/** How the CLI prints classifier and detector answers (agent/commands/answers.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { answerLines, batchSummary } from '../../agent/commands/answers.js';

const classified = { label: 'tabby', index: 281, score: 0.83, top: [{ label: 'tabby', score: 0.83 }, { label: 'tiger cat', score: 0.1 }] };
const detections = [
  { label: 'bus', index: 5, score: 0.924, box: [9.4, 230.2, 806.1, 734.9] },
  { label: 'person', index: 0, score: 0.861, box: [48, 398, 245.6, 902] },
];

test('a classifier answer is one line: label, score, top', () => {
  assert.deepEqual(answerLines([classified]), ['tabby (83.0%)   top: tabby 83.0%, tiger cat 10.0%']);
  assert.deepEqual(batchSummary(classified), { label: 'tabby', score: 0.83 });
});

test('a detector answer is a count, then one line per object with its box in whole pixels', () => {
  assert.deepEqual(answerLines([detections]), ['2 objects', '  bus 92.4% at [9, 230, 806, 735]', '  person 86.1% at [48, 398, 246, 902]']);
  assert.deepEqual(answerLines([[]]), ['0 objects']);
  assert.deepEqual(batchSummary(detections), { objects: 2 });
});

test('several images: each answer prefixed by its index; no answer, no summary', () => {
  assert.deepEqual(answerLines([classified, classified]).map((l) => l.slice(0, 4)), ['[0] ', '[1] ']);
  assert.equal(answerLines([detections, []])[0], '[0] 2 objects');
  assert.deepEqual(batchSummary(undefined), {});
});
