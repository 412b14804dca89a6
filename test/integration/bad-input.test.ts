/**
 * Bad input through a real broker: every case gets an error reply with its stable code, and the
 * agent goes on serving good requests (checked after each).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng, grayToPng } from '../../models/render.js';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';
import { Transport } from '../../mesh/mqtt.js';
import { topics } from '../../mesh/topics.js';
import { KizunaError, type ErrorCode } from '../../mesh/errors.js';
import { writeFrame } from '../../mesh/frame.js';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { rawPublish } from '../helpers/raw-mqtt.js';
import { fakePng } from '../helpers/images.js';

const digit = loadDigits().heldOut[0]!;
const tensorJson = (t: object) => Buffer.from(JSON.stringify({ inputs: { input: t } }));
const goodTensor = { dtype: 'float32', shape: [1, 1, 28, 28], data: Array.from(digit.pixels) };


describe('bad input gets an error reply with a stable code', () => {
  let agent: Agent;
  let client: KizunaClient;
  let raw: Transport;
  let modelsDir: string;
  let seq = 0;

  before(async () => {
    // A tensor-only model: the built-in digits without its image recipe, kept outside the store.
    modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-bad-'));
    const manifest = JSON.parse(await fs.readFile(path.join(BUILTIN_MODELS_DIR, 'digits.json'), 'utf8'));
    delete manifest.preprocess;
    manifest.name = 'digits-tensor';
    await fs.copyFile(path.join(BUILTIN_MODELS_DIR, manifest.file), path.join(modelsDir, manifest.file));
    await fs.writeFile(path.join(modelsDir, 'digits-tensor.json'), JSON.stringify(manifest));
    agent = await startAgent({ node: 'bad-input', models: [BUILTIN_MODELS_DIR, modelsDir], maxPayloadBytes: 256 * 1024, maxElements: 100_000, maxImagePixels: 4096 * 4096 });
    client = await connectClient(agent, 'good');
    raw = await Transport.connect({ url: agent.brokerUrl });
    await raw.subscribe(topics.repliesTo('home', 'bad'));
  });
  after(async () => {
    await raw.close();
    await client.close();
    await agent.stop();
    await fs.rm(modelsDir, { recursive: true, force: true });
  });

  /** Publishes `payload` on a request topic whose model level is `model`, returns the reply. */
  async function ask(model: string, payload: Buffer): Promise<{ ok: boolean; error?: { code: ErrorCode; message: string } }> {
    const id = `case-${++seq}`;
    const reply = new Promise<Buffer>((resolve) => {
      const off = raw.onMessage((topic, p) => {
        if (topic.endsWith(`/bad/${id}`)) {
          off();
          resolve(p);
        }
      });
    });
    await raw.publish(`kizuna/v1/home/req/${model}/bad/${id}`, payload);
    return JSON.parse((await reply).toString());
  }

  async function stillServes(): Promise<void> {
    const r = await client.infer('digits', await digitToPng(digit.pixels));
    assert.equal((r.answers![0] as { index: number }).index, digit.label);
  }

  const cases: [string, string, () => Buffer | Promise<Buffer>, ErrorCode][] = [
    ['malformed JSON', 'digits', () => Buffer.from('{"inputs": {'), 'KZ_ERR_MALFORMED'],
    ['neither JSON, frame nor image', 'digits', () => Buffer.from('hello'), 'KZ_ERR_MALFORMED'],
    ['empty payload', 'digits', () => Buffer.alloc(0), 'KZ_ERR_MALFORMED'],
    ['a field of the wrong type', 'digits', () => Buffer.from('{"image": 42}'), 'KZ_ERR_BAD_REQUEST'],
    ['an unknown field', 'digits', () => Buffer.from('{"image": "AAAA", "colour": "red"}'), 'KZ_ERR_BAD_REQUEST'],
    ['unknown model', 'no-such-model', () => tensorJson(goodTensor), 'KZ_ERR_UNKNOWN_MODEL'],
    ['wrong dtype', 'digits', () => tensorJson({ ...goodTensor, dtype: 'int32', data: goodTensor.data.map(() => 0) }), 'KZ_ERR_BAD_DTYPE'],
    ['unknown dtype', 'digits', () => tensorJson({ ...goodTensor, dtype: 'float8' }), 'KZ_ERR_BAD_DTYPE'],
    ['a value that does not fit the dtype', 'digits', () => tensorJson({ dtype: 'uint8', shape: [1], data: [300] }), 'KZ_ERR_BAD_DTYPE'],
    ['wrong shape', 'digits', () => tensorJson({ ...goodTensor, shape: [1, 1, 28, 27], data: goodTensor.data.slice(0, 756) }), 'KZ_ERR_BAD_SHAPE'],
    ['data that does not fill the shape', 'digits', () => tensorJson({ ...goodTensor, data: [1, 2, 3] }), 'KZ_ERR_BAD_SHAPE'],
    ['a negative dimension', 'digits', () => tensorJson({ ...goodTensor, shape: [1, -1, 28, 28] }), 'KZ_ERR_BAD_SHAPE'],
    ['an unknown input name', 'digits', () => Buffer.from(JSON.stringify({ inputs: { pixels: goodTensor } })), 'KZ_ERR_MISSING_INPUT'],
    ['no inputs at all', 'digits', () => Buffer.from('{"inputs": {}}'), 'KZ_ERR_MISSING_INPUT'],
    ['payload over the limit', 'digits', () => Buffer.concat([Buffer.from('{"image":"'), Buffer.alloc(300 * 1024, 65), Buffer.from('"}')]), 'KZ_ERR_TOO_LARGE'],
    ['too many elements', 'digits', () => tensorJson({ dtype: 'float32', shape: [1000, 1000], b64: '' }), 'KZ_ERR_TOO_MANY_ELEMENTS'],
    ['corrupt image', 'digits', async () => (await grayToPng(new Uint8Array(28 * 28), 28, 28)).subarray(0, 40), 'KZ_ERR_IMAGE_CORRUPT'],
    ['gigantic image (pixel limit)', 'digits', () => Buffer.from(fakePng(50_000, 50_000)), 'KZ_ERR_IMAGE_TOO_LARGE'],
    ['bad base64 image', 'digits', () => Buffer.from('{"image": "not base64 at all!"}'), 'KZ_ERR_MALFORMED'],
    ['image to a tensor-only model', 'digits-tensor', () => digitToPng(digit.pixels), 'KZ_ERR_NOT_IMAGE_MODEL'],
    ['truncated KZB1 frame', 'digits', () => Buffer.from('KZB1\xff\xff\x00\x00{}', 'latin1'), 'KZ_ERR_MALFORMED'],
    [
      'KZB1 tensor outside its data section',
      'digits',
      () => writeFrame(() => ({ inputs: { input: { dtype: 'float32', shape: [1, 1, 28, 28], offset: 0, length: 3136 } } })),
      'KZ_ERR_MALFORMED',
    ],
    ['model name with ..', '..', () => tensorJson(goodTensor), 'KZ_ERR_BAD_NAME'],
    ['model name with .. inside', 'a..b', () => tensorJson(goodTensor), 'KZ_ERR_BAD_NAME'],
    ['model name with /', 'digits/extra', () => tensorJson(goodTensor), 'KZ_ERR_BAD_NAME'],
  ];

  for (const [name, model, payload, code] of cases) {
    test(`${name}: ${code}`, async () => {
      const reply = await ask(model, await payload());
      assert.equal(reply.ok, false);
      assert.equal(reply.error?.code, code, reply.error?.message);
      assert.ok(reply.error!.message.length > 0);
      await stillServes();
    });
  }

  test('model names with + or # are refused before they are sent, and raw ones never reach the agent', async () => {
    for (const model of ['a+b', 'a#b', '+', '#']) {
      await assert.rejects(client.infer(model, Buffer.from('{}')), (e: KizunaError) => e.code === 'KZ_ERR_BAD_NAME');
    }
    const before = agent.work!.stats.received;
    const { closedByBroker } = await rawPublish(Number(new URL(agent.brokerUrl).port), 'kizuna/v1/home/req/a+b/bad/x', tensorJson(goodTensor));
    assert.equal(closedByBroker, true, 'the broker must refuse a publish with a wildcard in its topic');
    await stillServes();
    assert.equal(agent.work!.stats.received, before + 1, 'only the good request reached the worker');
  });

  test('every error was counted by its code', () => {
    // Bad topics and unknown models are answered by the dispatcher, the rest by the agent.
    const byAgent = agent.work!.stats.errors;
    const byDispatcher = agent.dispatcher!.stats.refused;
    for (const [, , , code] of cases) assert.ok((byAgent[code] ?? 0) + (byDispatcher[code] ?? 0) >= 1, `${code} not counted`);
  });
});
