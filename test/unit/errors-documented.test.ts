/** docs/PROTOCOL.md's error table lists exactly the codes of mesh/errors.ts (fastify's habit). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES } from '../../mesh/errors.js';

const doc = fs.readFileSync(fileURLToPath(new URL('../../../docs/PROTOCOL.md', import.meta.url)), 'utf8');
const known = Object.keys(ERROR_CODES).sort();

/** The codes in the first column of the table under the "## Error codes" heading. */
function tableCodes(markdown: string): string[] {
  const start = markdown.search(/^## Error codes\s*$/m);
  assert.ok(start >= 0, 'docs/PROTOCOL.md has no "## Error codes" section');
  const section = markdown.slice(start).split(/^## /m)[1] ?? '';
  return section
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .map((line) => /^\|\s*`?(KZ_ERR_[A-Z0-9_]+)`?\s*\|/.exec(line)?.[1])
    .filter((code): code is string => code !== undefined);
}

test('the error table documents every code of ERROR_CODES, once', () => {
  const codes = tableCodes(doc);
  const repeated = codes.filter((c, i) => codes.indexOf(c) !== i);
  assert.deepEqual(repeated, [], 'codes listed twice in the error table');
  assert.deepEqual([...codes].sort(), known);
});

test('the doc mentions no code that does not exist', () => {
  const mentioned = [...new Set(doc.match(/KZ_ERR_[A-Z0-9_]+/g) ?? [])].sort();
  assert.deepEqual(mentioned.filter((c) => !Object.hasOwn(ERROR_CODES, c)), []);
});
