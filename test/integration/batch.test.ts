/**
 * Batches across a mesh of two agent processes of different speeds (simulated): every input's
 * result exactly once and in order, the faster board doing more of the work, the CLI's output
 * resumable, and a board killed mid-batch losing nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { runCli, spawnAgent } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';
import { MeshWatch } from '../helpers/mesh-watch.js';

describe('batches across a mesh of a fast and a slow board', () => {
  const digits = loadDigits().heldOut.slice(0, 60);
  const procs = new Map<string, ChildProcess>();
  let ports: number[];
  let urls: string[];
  let dir: string;
  let client: KizunaClient;
  const expected: number[] = [];

  before(async () => {
    ports = await freePorts(2);
    urls = ports.map((p) => `mqtt://127.0.0.1:${p}`);
    const speeds = { fast: 2, slow: 20 };
    await Promise.all(
      Object.entries(speeds).map(async ([node, ms], i) => {
        const { child } = await spawnAgent(['--port', String(ports[i]), '--node', node, '--peers', `127.0.0.1:${ports[1 - i]}`, '--formation-ms', '400', '--simulate-ms-per-input', String(ms)]);
        procs.set(node, child);
      }),
    );
    const watch = await MeshWatch.connect(urls);
    await watch.until((w) => Object.keys(w.roles()).length === 2, 10_000, 'two members');
    await watch.close();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-batch-'));
    await fs.mkdir(path.join(dir, 'digits'));
    for (const [i, d] of digits.entries()) await fs.writeFile(path.join(dir, 'digits', `d${String(i).padStart(3, '0')}.png`), await digitToPng(d.pixels));
    client = await KizunaClient.connect({ url: urls, client: 'batcher', keepaliveSeconds: 1, resendMs: 1000 });
    for (const d of digits) expected.push(((await client.infer('digits', { input: { dtype: 'float32', shape: [1, 1, 28, 28], data: d.pixels } })).answers![0] as { index: number }).index);
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    for (const p of procs.values()) if (p.exitCode === null) p.kill('SIGKILL');
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('client.batch: each result once, in input order; the fast board does most of the work', async () => {
    const seen: number[] = [];
    const byAgent: Record<string, number> = {};
    for await (const item of client.batch('digits', digits.map((d) => () => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: d.pixels } })), { jobSize: 32 })) {
      assert.equal(item.error, undefined);
      seen.push(item.index);
      assert.equal((item.result!.answers![0] as { index: number }).index, expected[item.index]);
      byAgent[item.result!.agent] = (byAgent[item.result!.agent] ?? 0) + 1;
    }
    assert.deepEqual(seen, digits.map((_, i) => i));
    assert.ok((byAgent.fast ?? 0) > (byAgent.slow ?? 0) * 2, `the 10x faster board did ${byAgent.fast} of ${digits.length}, the slow one ${byAgent.slow}`);
  });

  test('kizuna batch writes JSON lines in order and resumes an interrupted run', async () => {
    const out = path.join(dir, 'results.jsonl');
    const full = await runCli(['batch', 'digits', path.join(dir, 'digits'), '--out', out, '--broker', urls[0]!, '--broker', urls[1]!]);
    assert.equal(full.code, 0, full.stderr);
    const lines = (await fs.readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, digits.length);
    lines.forEach((l, i) => {
      assert.equal(path.basename(l.file), `d${String(i).padStart(3, '0')}.png`);
      assert.equal(l.label, String(expected[i]));
    });
    // An interrupted run left 25 lines (the last one cut in half): the next run does the rest.
    const partial = (await fs.readFile(out, 'utf8')).split('\n').slice(0, 25).join('\n') + '\n{"file":"cut';
    await fs.writeFile(out, partial);
    const resumed = await runCli(['batch', 'digits', path.join(dir, 'digits', 'd*.png'), '--out', out, '--broker', urls[1]!]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming: 25 images already/);
    const after = (await fs.readFile(out, 'utf8')).split('\n').filter((l) => l.startsWith('{"file":"/'));
    const files = after.map((l) => JSON.parse(l).file as string);
    assert.equal(new Set(files).size, digits.length, 'every image exactly once');
    assert.equal(files.length, digits.length);
  });

  test('a board killed mid-batch: every input still gets its one result', async () => {
    const items: number[] = [];
    let killed = false;
    for await (const item of client.batch('digits', digits.map((d) => () => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: d.pixels } })), { jobSize: 32 })) {
      assert.equal(item.error, undefined, item.error?.message);
      assert.equal((item.result!.answers![0] as { index: number }).index, expected[item.index]);
      items.push(item.index);
      if (items.length === 10 && !killed) {
        killed = true;
        procs.get('slow')!.kill('SIGKILL');
      }
    }
    assert.deepEqual(items, digits.map((_, i) => i));
  });
});
