import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadNodeId, newNodeId, renewNodeId } from '../../agent/identity.js';
import { isSegment } from '../../mesh/topics.js';
import { KizunaError } from '../../mesh/errors.js';

const tempDir = () => fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-id-'));

test('a new id is the host name made safe, plus 4 hex digits', () => {
  assert.equal(newNodeId('Kitchen-Pi', () => 'beef'), 'kitchen-pi-beef');
  assert.equal(newNodeId('pi.local', () => '0a0b'), 'pi-local-0a0b');
  assert.equal(newNodeId('...', () => '0001'), 'node-0001');
  assert.equal(newNodeId('ü'.repeat(80), () => '1234'), 'node-1234');
  for (const host of ['a..b', '-x-', 'UPPER', 'x'.repeat(200), 'sp ace']) assert.ok(isSegment(newNodeId(host)), host);
});

test('the id is created once and kept across restarts', async (t) => {
  const dir = path.join(await tempDir(), 'data');
  t.after(() => fs.rm(path.dirname(dir), { recursive: true, force: true }));
  const first = await loadNodeId(dir);
  assert.ok(isSegment(first));
  assert.equal(await loadNodeId(dir), first);
  const stat = await fs.stat(path.join(dir, 'node-id'));
  assert.equal(stat.mode & 0o777, 0o600, 'only the agent reads its identity');
});

test('renewNodeId replaces the kept id (a duplicate board takes a fresh one)', async (t) => {
  const dir = await tempDir();
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const first = await loadNodeId(dir);
  const second = await renewNodeId(dir);
  assert.notEqual(second, first);
  assert.equal(await loadNodeId(dir), second);
});

test('a corrupt id file is a clear configuration error, never silently replaced', async (t) => {
  const dir = await tempDir();
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  await fs.writeFile(path.join(dir, 'node-id'), 'bad/id\n');
  await assert.rejects(loadNodeId(dir), (e: KizunaError) => e.code === 'KZ_ERR_CONFIG' && /node-id/.test(e.message));
});
