/** One real agent end to end: embedded aedes, real mqtt.js sockets, real onnxruntime, built-in models. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadDigits, type Digit } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { KizunaError } from '../../mesh/errors.js';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import type { NodeStatus } from '../../mesh/status.js';
import { accepted, connectClient, startAgent } from '../helpers/agent.js';
import { GateEngine } from '../helpers/gate-engine.js';

const digitTensor = (d: Digit) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: d.pixels } });
type Top = { index: number; label: string; score: number };

describe('one agent serving the built-in models', () => {
  let agent: Agent;
  let client: KizunaClient;
  const digits = loadDigits().heldOut.slice(0, 40);

  before(async () => {
    agent = await startAgent();
    client = await connectClient(agent);
  });
  after(async () => {
    await client.close();
    await agent.stop();
  });

  test('classifies PNG digits sent as raw bytes', async () => {
    let correct = 0;
    for (const d of digits) {
      const r = await client.infer('digits', await digitToPng(d.pixels));
      assert.equal(r.model, 'digits');
      assert.equal(r.agent, 'test-agent');
      const top = r.answers![0] as Top;
      if (top.index === d.label) correct++;
      assert.equal(top.label, String(top.index));
      assert.ok(r.timings.infer_ms >= 0 && r.timings.total_ms >= r.timings.infer_ms);
    }
    assert.ok(correct >= 36, `only ${correct}/40 digits right`);
  });

  test('tensors as KZB1 frames and as JSON give the same logits, with JSON or binary replies', async () => {
    const d = digits[0]!;
    const binary = await client.infer('digits', digitTensor(d));
    const json = await client.infer('digits', digitTensor(d), { format: 'json' });
    const binaryReply = await client.infer('digits', digitTensor(d), { reply: 'binary' });
    for (const r of [json, binaryReply]) {
      assert.deepEqual(r.outputs.logits!.shape, [1, 10]);
      assert.deepEqual(Array.from(r.outputs.logits!.data as Float32Array), Array.from(binary.outputs.logits!.data as Float32Array));
    }
    assert.equal((binary.answers![0] as Top).index, d.label);
  });

  test('batches of images and of tensors answer each item in order', async () => {
    const four = digits.slice(0, 4);
    const r = await client.infer('digits', await Promise.all(four.map((d) => digitToPng(d.pixels))), { topK: 2 });
    assert.equal(r.answers!.length, 4);
    for (const a of r.answers as { top: Top[] }[]) assert.equal(a.top.length, 2);
    const data = new Float32Array(4 * 784);
    four.forEach((d, i) => data.set(d.pixels, i * 784));
    const t = await client.infer('digits', { input: { dtype: 'float32', shape: [4, 1, 28, 28], data } });
    assert.deepEqual((t.answers as Top[]).map((a) => a.index), (r.answers as Top[]).map((a) => a.index));
  });

  test('int8 model agrees with fp32 on most digits', async () => {
    let same = 0;
    for (const d of digits) {
      const [a, b] = await Promise.all([client.infer('digits', digitTensor(d)), client.infer('digits-int8', digitTensor(d))]);
      if ((a.answers![0] as Top).index === (b.answers![0] as Top).index) same++;
    }
    assert.ok(same >= 38, `int8 and fp32 agree on only ${same}/40`);
  });

  test('a retried id gets the same reply, not a second inference', async () => {
    const d = digits[1]!;
    const before = agent.work!.stats.answered;
    const first = await client.infer('digits', digitTensor(d), { id: 'retry-1' });
    const again = await client.infer('digits', digitTensor(d), { id: 'retry-1' });
    assert.deepEqual(again.timings, first.timings);
    assert.equal(agent.work!.stats.answered, before + 1);
  });

  test('raw_outputs false leaves the tensors out', async () => {
    const r = await client.infer('digits', digitTensor(digits[2]!), { rawOutputs: false });
    assert.deepEqual(r.outputs, {});
    assert.equal(r.answers!.length, 1);
  });
});

describe('shutdown', () => {
  test('stop() answers every request the agent accepted; the ones waiting for it are refused, not lost', async () => {
    const gate = new GateEngine(new OnnxEngine());
    const agent = await startAgent({ node: 'drain', concurrency: 2 }, { engine: gate });
    const client = await connectClient(agent);
    const d = loadDigits().heldOut[0]!;
    // The agent grants 4 slots (2 x concurrency): 4 requests are accepted, 3 wait in the dispatcher.
    const isAccepted = accepted(agent, 4);
    const replies = Array.from({ length: 7 }, () => client.infer('digits', digitTensor(d)).catch((e: unknown) => e));
    await isAccepted;
    const draining = new Promise<void>((resolve) =>
      agent.dispatcher!.roster.on('change', (_node: string, status?: NodeStatus) => status?.draining && resolve()),
    );
    const stopped = agent.stop();
    await draining;
    // New work during the drain gets a clear refusal, not silence.
    const late = await client.infer('digits', digitTensor(d)).catch((e: unknown) => e);
    assert.ok(late instanceof KizunaError && late.code === 'KZ_ERR_SHUTTING_DOWN', String(late));
    gate.open();
    const results = await Promise.all(replies);
    const answered = results.filter((r) => !(r instanceof Error)) as { answers: Top[] }[];
    const refused = results.filter((r) => r instanceof KizunaError) as KizunaError[];
    assert.equal(answered.length, 4, 'every accepted request is answered');
    for (const r of answered) assert.equal(r.answers[0]!.index, d.label);
    assert.equal(refused.length, 3);
    for (const e of refused) assert.equal(e.code, 'KZ_ERR_SHUTTING_DOWN');
    await stopped;
    await client.close().catch(() => undefined);
  });
});
