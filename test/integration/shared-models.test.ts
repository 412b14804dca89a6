/** The shared folder's real third-party models through one agent (skipped when ../shared is absent). */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { sharedModelsDir, type SharedModels } from '../helpers/shared-models.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

type Top = { label: string; index: number; score: number };

describe('real shared models through MQTT', async () => {
  const models = await sharedModelsDir(['mobilenetv2-int8', 'mobilenetv2-fp32', 'yolox-nano']);
  const kitten = sharedPath('samples', 'imagenet', 'kitten_224.png');
  const fish = sharedPath('samples', 'imagenet', 'fish.png');
  const bus = sharedPath('samples', 'coco', 'bus.jpg');
  const missing = 'missing' in models ? models.missing : !kitten || !fish || !bus ? expectedSharedPath('samples') : undefined;
  let agent: Agent;
  let client: KizunaClient;

  before(async () => {
    if (missing) return;
    agent = await startAgent({ node: 'shared', models: [(models as Exclude<SharedModels, { missing: string }>).dir] });
    client = await connectClient(agent);
  });
  after(async () => {
    if (missing) return;
    await client.close();
    await agent.stop();
    await (models as Exclude<SharedModels, { missing: string }>).remove();
  });

  for (const model of ['mobilenetv2-int8', 'mobilenetv2-fp32']) {
    test(`${model} answers tabby for kitten_224.png and tench for fish.png, sent as raw bytes`, async (t) => {
      if (missing) return t.skip(`shared models missing: ${missing}`);
      const cat = await client.infer(model, await fs.readFile(kitten!));
      assert.equal((cat.answers![0] as Top).label, 'tabby, tabby cat');
      assert.equal((cat.answers![0] as Top).index, 281);
      assert.deepEqual(cat.outputs.output!.shape, [1, 1000]);
      const tench = await client.infer(model, await fs.readFile(fish!));
      assert.equal((tench.answers![0] as Top).index, 0);
    });
  }

  test('YOLOX-Nano loads and runs on bus.jpg (letterboxed to 416, BGR)', async (t) => {
    if (missing) return t.skip(`shared models missing: ${missing}`);
    const r = await client.infer('yolox-nano', await fs.readFile(bus!));
    const out = r.outputs.output!;
    assert.deepEqual(out.shape, [1, 3549, 85]);
    // Some anchor must be confident about a bus (COCO class 5): objectness x class score.
    const data = out.data as Float32Array;
    let best = 0;
    for (let a = 0; a < 3549; a++) best = Math.max(best, data[a * 85 + 4]! * data[a * 85 + 5 + 5]!);
    assert.ok(best > 0.5, `best bus score ${best}`);
  });
});
