/**
 * YOLOX-Nano through a real agent over MQTT, with real onnxruntime: the catalogue's detect recipe
 * answers boxes in the photo's pixels (skipped when ../shared is absent).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import { iou, type Detection } from '../../models/detect.js';
import { parseManifest } from '../../models/manifest.js';
import { preprocessImages } from '../../models/preprocess.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { sharedModelsDir, type SharedModels } from '../helpers/shared-models.js';
import { expectedSharedPath, repoRoot, sharedPath } from '../helpers/shared.js';

// Boxes measured once with this recipe (x1, y1, x2, y2 in the photo's pixels); asserted loosely.
const BUS_JPG = { width: 810, height: 1080, bus: [9, 230, 806, 734] };
const DOG_JPG = { width: 768, height: 576, dog: [133, 207, 325, 542], bicycle: [46, 132, 572, 431], car: [467, 78, 692, 172] };

const show = (found: Detection[]) => found.map((d) => `${d.label} ${d.score.toFixed(2)} [${d.box.map(Math.round).join(', ')}]`).join('; ');

function inside(found: Detection[], width: number, height: number): void {
  for (const d of found) {
    const [x1, y1, x2, y2] = d.box;
    assert.ok(x1 >= 0 && y1 >= 0 && x2 <= width && y2 <= height && x2 > x1 && y2 > y1, `${d.label} [${d.box}] is not inside ${width}x${height}`);
  }
  for (let i = 1; i < found.length; i++) assert.ok(found[i - 1]!.score >= found[i]!.score, 'sorted by score');
}

function best(found: Detection[], label: string): Detection {
  const d = found.find((x) => x.label === label);
  assert.ok(d, `no ${label} in: ${show(found)}`);
  return d;
}

describe('YOLOX-Nano detections through an agent', async () => {
  const models = await sharedModelsDir(['yolox-nano']);
  const busPath = sharedPath('samples', 'coco', 'bus.jpg');
  const dogPath = sharedPath('samples', 'coco', 'dog.jpg');
  const missing = 'missing' in models ? models.missing : !busPath ? expectedSharedPath('samples', 'coco', 'bus.jpg') : !dogPath ? expectedSharedPath('samples', 'coco', 'dog.jpg') : undefined;
  const ready = models as Exclude<SharedModels, { missing: string }>;
  let agent: Agent;
  let client: KizunaClient;

  before(async () => {
    if (missing) return;
    agent = await startAgent({ node: 'detector', models: [ready.dir] });
    client = await connectClient(agent);
  });
  after(async () => {
    if (missing) return;
    await client.close();
    await agent.stop();
    await ready.remove();
  });

  test('bus.jpg (raw bytes): the bus (score > 0.8, box over the bus) and at least 3 people, in the photo\'s pixels', async (t) => {
    if (missing) return t.skip(`shared files missing: ${missing}`);
    const r = await client.infer('yolox-nano', await fs.readFile(busPath!));
    assert.equal(r.answers?.length, 1, 'one answer per image');
    const found = r.answers![0] as Detection[];
    t.diagnostic(`bus.jpg: ${show(found)}; post ${r.timings.post_ms} ms, infer ${r.timings.infer_ms} ms, pre ${r.timings.pre_ms} ms`);
    inside(found, BUS_JPG.width, BUS_JPG.height);
    const bus = best(found, 'bus');
    assert.equal(bus.index, 5);
    assert.ok(bus.score > 0.8, `bus score ${bus.score}`);
    assert.ok(iou(bus.box, BUS_JPG.bus) > 0.7, `bus box [${bus.box}] against [${BUS_JPG.bus}]: IoU ${iou(bus.box, BUS_JPG.bus)}`);
    // The bus spans the photo's width: boxes are in its pixels, not in the model's 416.
    assert.ok(bus.box[2] - bus.box[0] > 700, `bus width ${bus.box[2] - bus.box[0]}`);
    const people = found.filter((d) => d.label === 'person');
    assert.ok(people.length >= 3, `${people.length} persons: ${show(found)}`);
    assert.ok(people[0]!.score > 0.8, `best person ${people[0]!.score}`);
    // Raw bytes ask for the raw outputs too: the grid is still there for whoever wants it.
    assert.deepEqual(r.outputs.output?.shape, [1, 3549, 85]);
  });

  test('dog.jpg (JSON, raw_outputs false): dog, bicycle and car where they are', async (t) => {
    if (missing) return t.skip(`shared files missing: ${missing}`);
    const r = await client.infer('yolox-nano', await fs.readFile(dogPath!), { rawOutputs: false });
    assert.deepEqual(r.outputs, {});
    const found = r.answers![0] as Detection[];
    t.diagnostic(`dog.jpg: ${show(found)}`);
    inside(found, DOG_JPG.width, DOG_JPG.height);
    for (const label of ['dog', 'bicycle', 'car'] as const) {
      const d = best(found, label);
      assert.ok(d.score > 0.5, `${label} score ${d.score}`);
      assert.ok(iou(d.box, DOG_JPG[label]) > 0.7, `${label} box [${d.box}] against [${DOG_JPG[label]}]`);
    }
  });

  test('a tensor request (the letterboxed bus) answers boxes in model-input pixels', async (t) => {
    if (missing) return t.skip(`shared files missing: ${missing}`);
    const manifest = parseManifest(JSON.parse(await fs.readFile(path.join(repoRoot, 'models', 'catalog', 'yolox-nano.json'), 'utf8')), 'yolox-nano.json');
    const { tensor, sources } = await preprocessImages([await fs.readFile(busPath!)], manifest.preprocess!, { maxPixels: 1 << 24 });
    const r = await client.infer('yolox-nano', { images: tensor }, { rawOutputs: false });
    const found = r.answers![0] as Detection[];
    inside(found, 416, 416);
    const bus = best(found, 'bus');
    const scale = sources[0]!.scale;
    const expected = BUS_JPG.bus.map((v) => v / scale);
    assert.ok(iou(bus.box, expected) > 0.7, `bus box [${bus.box}] in model pixels against [${expected.map(Math.round)}]`);
    assert.ok(bus.box[2] <= 416 && bus.box[3] <= 416);
  });
});
