import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SimulatedEngine } from '../../models/simulated-engine.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';

test('the simulated engine gives the real outputs, one batch at a time, msPerInput x batch each', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const onnx = await fs.readFile(path.join(BUILTIN_MODELS_DIR, 'digits.onnx'));
  const real = await new OnnxEngine().load(onnx);
  const slow = await new SimulatedEngine(new OnnxEngine(), 100).load(onnx);
  t.after(() => Promise.all([real.release(), slow.release()]));
  const feeds = { input: { dtype: 'float32' as const, shape: [2, 1, 28, 28], data: new Float32Array(2 * 784).fill(0.5) } };
  const done: string[] = [];
  const first = slow.run(feeds).then((o) => (done.push('first'), o));
  const second = slow.run(feeds).then(() => done.push('second'));
  // Let the real inferences finish (they are not behind the mocked timer), then move the clock.
  await new Promise((r) => setImmediate(r));
  await real.run(feeds);
  t.mock.timers.tick(199);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(done, [], 'a batch of 2 takes 200 ms');
  t.mock.timers.tick(1);
  const out = await first;
  assert.deepEqual(done, ['first']);
  t.mock.timers.tick(200);
  await second;
  assert.deepEqual(done, ['first', 'second'], 'the second batch waited for the first');
  assert.deepEqual(Array.from(out.logits!.data as Float32Array), Array.from((await real.run(feeds)).logits!.data as Float32Array));
});
