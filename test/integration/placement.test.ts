/**
 * Placement with real agents (real aedes, mqtt.js, onnxruntime, loopback; in-memory discovery for
 * the mesh of two):
 *  - one board whose model memory (--model-memory-mib 3) holds one of the two built-in models
 *    (their estimates: digits 2.2 MiB, digits-int8 1.3 MiB): requests alternating between them
 *    are all answered right (outputs equal to an unlimited store's), each swap loads one and
 *    unloads the other, never both sessions at once (counted at the engine), the status says
 *    which is warm, and RSS does not grow with the swaps;
 *  - two boards, the model warm on one only: every request goes to the warm one, though the cold
 *    one would win the tie (node id) without placement;
 *  - MobileNetV2 int8 and fp32 of ../shared (skipped without them), in agent processes with a
 *    budget that holds one and with none: answers, the cold load as a request sees it
 *    (timings.load_ms), peak RSS of each process.
 * Deterministic: waits for events and replies, never sleeps.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Agent } from '../../agent/agent.js';
import { MemoryDiscovery, MemoryNetwork } from '../../agent/discovery/memory.js';
import { KizunaClient } from '../../mesh/client.js';
import { isWarm, type NodeStatus } from '../../mesh/status.js';
import type { Engine, ModelSession, SessionOptions } from '../../models/engine.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { PACKAGE_BUILTIN_DIR, ModelStore } from '../../models/store.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { spawnAgent } from '../helpers/cli.js';
import { modelFolders } from '../helpers/model-folders.js';
import { sharedModelsDir } from '../helpers/shared-models.js';
import { sharedPath } from '../helpers/shared.js';
import { waitFor } from '../helpers/waiters.js';

const folders = modelFolders('placement');
after(() => folders.remove());
const dataDir = (name: string) => path.join(folders.root, `data-${name}`);

const digits = loadDigits().heldOut.slice(0, 8);
const feeds = (pixels: Float32Array) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: pixels } });
const MODELS = ['digits', 'digits-int8'] as const;

/** onnxruntime, counting live sessions (and the most ever live at once). */
class CountingEngine implements Engine {
  readonly name = 'counting';
  private readonly inner = new OnnxEngine();
  live = 0;
  maxLive = 0;
  created = 0;
  async load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession> {
    const s = await this.inner.load(onnx, options);
    this.created++;
    this.maxLive = Math.max(this.maxLive, ++this.live);
    let released = false;
    return {
      inputNames: s.inputNames,
      outputNames: s.outputNames,
      run: (f) => s.run(f),
      release: async () => {
        if (!released) (released = true), this.live--;
        await s.release();
      },
    };
  }
}

/** Resolves when `check` holds: now, or at a 'change' of `emitter`; rejects after `ms`. */
const when = (emitter: NodeJS.EventEmitter, check: () => boolean, ms: number, what: string) => waitFor(emitter, ['change'], check, ms, what);

const argmax = (a: ArrayLike<number>) => Array.prototype.indexOf.call(a, Math.max(...Array.from(a)));

test('one board, memory for one of two models: alternating requests all answered right, one load and one unload per swap, never both in memory, RSS flat', async (t) => {
  // What an unlimited store answers, for comparison.
  const reference = new ModelStore(new OnnxEngine());
  t.after(() => reference.close());
  await reference.loadFolders([PACKAGE_BUILTIN_DIR]);
  const expected = new Map<string, Float32Array>();
  for (const m of MODELS) for (const [i, d] of digits.entries()) expected.set(`${m}/${i}`, (await reference.get(m)!.session.run(feeds(d.pixels))).logits!.data as Float32Array);

  const engine = new CountingEngine();
  const agent = await startAgent({ node: 'tight', modelMemoryMib: 3, dataDir: dataDir('tight') }, { engine });
  t.after(() => agent.stop());
  // At start: the first model fits, the second would need an eviction: it is served, cold.
  const memory = agent.store.memory();
  assert.equal(memory.budgetBytes, 3 * 1024 * 1024);
  assert.deepEqual([...memory.warm], ['digits-int8']);
  assert.deepEqual(agent.store.list().map((m) => m.manifest.name).sort(), ['digits', 'digits-int8'], 'both served');
  const status = () => agent.roster.get('tight');
  const warmIn = (s: NodeStatus | undefined) => MODELS.filter((m) => s?.models?.some((x) => x.name === m) && isWarm(s, m));
  await when(agent.roster, () => warmIn(status()).join() === 'digits-int8', 5000, 'the status says digits-int8 warm, digits cold');
  assert.deepEqual(status()!.modelMemory?.budgetMiB, 3);
  assert.equal(status()!.models!.find((m) => m.name === 'digits')!.warm, false);

  const events: string[] = [];
  agent.store.on('loaded', (e: { name: string }) => events.push(`+${e.name}`));
  agent.store.on('evicted', (e: { name: string }) => events.push(`-${e.name}`));
  // Never two sessions in memory: checked at every change, and by the engine's own count.
  let most = 0;
  agent.store.on('change', () => (most = Math.max(most, agent.store.memory().warm.size)));

  const client = await connectClient(agent);
  t.after(() => client.close());
  const rss: number[] = [];
  let loads = 0;
  const rounds = 60;
  for (let round = 0; round < rounds; round++) {
    for (const m of ['digits', 'digits-int8'] as const) {
      const i = round % digits.length;
      const r = await client.infer(m, feeds(digits[i]!.pixels));
      assert.equal(r.agent, 'tight');
      const got = r.outputs.logits!.data as Float32Array;
      const want = expected.get(`${m}/${i}`)!;
      assert.equal(argmax(got), argmax(want), `${m} on digit ${i}`);
      for (let k = 0; k < 10; k++) assert.ok(Math.abs(got[k]! - want[k]!) < 1e-5, `${m} on digit ${i}: logit ${k} ${got[k]} vs ${want[k]}`);
      if (r.timings.load_ms !== undefined) loads++;
    }
    if (round === 10 || round === rounds - 1) rss.push(process.memoryUsage.rss());
  }
  // Each request for the other model loaded it: 2 per round (the very first, digits, included).
  assert.equal(loads, 2 * rounds, 'every request waited for its model to load');
  assert.equal(events.filter((e) => e.startsWith('+')).length, 2 * rounds);
  assert.equal(events.filter((e) => e.startsWith('-')).length, 2 * rounds);
  assert.deepEqual(events.slice(0, 4), ['-digits-int8', '+digits', '-digits', '+digits-int8'], 'an unload before each load');
  assert.equal(most, 1, 'never both warm');
  assert.equal(engine.maxLive, 1, 'never two sessions at once');
  assert.equal(engine.created, 1 + 2 * rounds);
  const grown = (rss[1]! - rss[0]!) / 1024 / 1024;
  t.diagnostic(`RSS after round 10: ${(rss[0]! / 1048576).toFixed(1)} MiB, after round ${rounds}: ${(rss[1]! / 1048576).toFixed(1)} MiB (${grown.toFixed(1)} MiB in ${2 * (rounds - 10)} loads)`);
  // A session kept per load would add 1 MiB or more each; the allocator's pools settle within a few hundred loads.
  assert.ok(grown < 24, `RSS grew ${grown.toFixed(1)} MiB over ${2 * (rounds - 10)} loads and unloads`);
  await when(agent.roster, () => warmIn(status()).join() === 'digits-int8', 5000, 'the status follows the last load');
  assert.ok(status()!.modelMemory!.usedMiB >= 1);
});

test('concurrent requests for both models on a board that holds one: all answered, never both in memory', async (t) => {
  const engine = new CountingEngine();
  const agent = await startAgent({ node: 'busy', modelMemoryMib: 3, concurrency: 2, dataDir: dataDir('busy') }, { engine });
  t.after(() => agent.stop());
  const client = await connectClient(agent);
  t.after(() => client.close());
  const answers = await Promise.all(
    Array.from({ length: 64 }, (_, k) => client.infer(MODELS[k % 2]!, feeds(digits[k % digits.length]!.pixels))),
  );
  for (const [k, r] of answers.entries()) assert.equal(r.model, MODELS[k % 2]);
  assert.equal(engine.maxLive, 1, 'a load waited for the other model\'s inferences to end');
});

test('two boards, the model warm on one only: every request goes to the warm one', async (t) => {
  const network = new MemoryNetwork();
  const onlyDigits = folders.folder({
    'digits.json': fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, 'digits.json')),
    'digits.onnx': fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, 'digits.onnx')),
  });
  const common = { mesh: 'placement', formationMs: 200, modelMemoryMib: 3 };
  // a-cold serves both built-ins, digits cold (its budget took digits-int8 first); b-warm serves digits, warm.
  const a = await startAgent({ ...common, node: 'a-cold', dataDir: dataDir('a') }, { discovery: new MemoryDiscovery(network) });
  t.after(() => a.stop());
  const b = await startAgent({ ...common, node: 'b-warm', models: [onlyDigits], dataDir: dataDir('b') }, { discovery: new MemoryDiscovery(network) });
  t.after(() => b.stop());
  const broker = [a, b].find((x) => x.dispatcher)!;
  const roster = broker.dispatcher!.roster;
  await when(roster, () => roster.serving('digits').length === 2 && !isWarm(roster.get('a-cold')!, 'digits') && isWarm(roster.get('b-warm')!, 'digits'), 10_000, 'the dispatcher knows both boards and where digits is warm');
  const loadedOnA: string[] = [];
  a.store.on('loaded', (e: { name: string }) => loadedOnA.push(e.name));

  const app = await KizunaClient.connect({ url: broker.brokerUrl, mesh: 'placement', client: 'app', timeoutMs: 10_000 });
  t.after(() => app.close());
  for (const [i, d] of digits.entries()) {
    const r = await app.infer('digits', feeds(d.pixels));
    assert.equal(r.agent, 'b-warm', `request ${i} went to ${r.agent}`);
    assert.equal(r.timings.load_ms, undefined);
  }
  const int8 = await app.infer('digits-int8', feeds(digits[0]!.pixels));
  assert.equal(int8.agent, 'a-cold', 'only a-cold serves digits-int8');
  assert.deepEqual(loadedOnA, [], 'a-cold never had to load digits');
});

test('MobileNetV2 int8 and fp32 (../shared) with memory for one: cold loads as requests see them, RSS with and without a budget', async (t) => {
  const shared = await sharedModelsDir(['mobilenetv2-int8', 'mobilenetv2-fp32']);
  const kitten = sharedPath('samples', 'imagenet', 'kitten_224.png');
  if ('missing' in shared || !kitten) return t.skip(`shared models missing: ${'missing' in shared ? shared.missing : 'samples/imagenet/kitten_224.png'}`);
  t.after(() => shared.remove());
  const image = fs.readFileSync(kitten);
  const ROUNDS = 20;
  // Estimates: int8 11.5 MiB, fp32 41 MiB: 48 MiB holds either, not both. `mmap`: glibc told to
  // give large freed blocks back at once (MALLOC_MMAP_THRESHOLD_), as docs/MODELS.md suggests.
  const run = async (budgetMib: number, mmap: boolean) => {
    const name = `mnv2-${budgetMib}-${mmap ? 'mmap' : 'default'}`;
    if (mmap) process.env.MALLOC_MMAP_THRESHOLD_ = '131072';
    const spawned = spawnAgent(['--node', name, '--models', shared.dir, '--model-memory-mib', String(budgetMib), '--data-dir', dataDir(name), '--log-level', 'info']);
    delete process.env.MALLOC_MMAP_THRESHOLD_;
    const { child, port, stderr } = await spawned;
    try {
      const app = await KizunaClient.connect({ url: `mqtt://127.0.0.1:${port}`, mesh: 'home', client: 'mnv2', timeoutMs: 20_000 });
      const coldInt8: number[] = [];
      const warm: number[] = [];
      try {
        for (let round = 0; round < ROUNDS; round++) {
          for (const m of ['mobilenetv2-int8', 'mobilenetv2-fp32']) {
            const r = await app.infer(m, image);
            assert.equal((r.answers![0] as { index: number }).index, 281, `${m}: tabby`);
            if (m === 'mobilenetv2-int8' && r.timings.load_ms !== undefined) coldInt8.push(r.timings.load_ms);
            if (r.timings.load_ms === undefined) warm.push(r.timings.total_ms);
          }
        }
      } finally {
        await app.close();
      }
      const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const mib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
      return { rss: mib('VmRSS'), peak: mib('VmHWM'), coldInt8, warm, log: stderr() };
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  };
  const tight = await run(48, false);
  const free = await run(0, false);
  // The folder's first manifest (fp32) loaded at start; int8 is loaded for each of its requests (fp32 took its place in between).
  assert.match(tight.log, /mobilenetv2-int8@12 served, loaded on demand/);
  assert.equal(tight.coldInt8.length, ROUNDS, 'every int8 request waited for its load');
  assert.equal(free.coldInt8.length, 0, 'without a budget both stay loaded');
  const tightMmap = await run(48, true);
  const freeMmap = await run(0, true);
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const f = (x: number) => x.toFixed(1);
  t.diagnostic(`MobileNetV2 int8 loaded for the request: load_ms median ${f(median(tight.coldInt8))}, first ${f(tight.coldInt8[0]!)}, max ${f(Math.max(...tight.coldInt8))}; warm requests total_ms median ${f(median(free.warm))}`);
  for (const [what, r] of [['48 MiB', tight], ['no budget', free], ['48 MiB, MALLOC_MMAP_THRESHOLD_', tightMmap], ['no budget, MALLOC_MMAP_THRESHOLD_', freeMmap]] as const) {
    t.diagnostic(`agent RSS after ${2 * ROUNDS} alternating requests, ${what}: ${f(r.rss)} MiB (peak ${f(r.peak)})`);
  }
});

test('six MobileNetV2 sessions (../shared, fp32 under five names and int8) with memory for one: RSS stays bounded by the budget, not by the models served', async (t) => {
  const shared = await sharedModelsDir(['mobilenetv2-int8', 'mobilenetv2-fp32']);
  const kitten = sharedPath('samples', 'imagenet', 'kitten_224.png');
  if ('missing' in shared || !kitten) return t.skip(`shared models missing: ${'missing' in shared ? shared.missing : 'samples/imagenet/kitten_224.png'}`);
  t.after(() => shared.remove());
  const fp32 = JSON.parse(fs.readFileSync(path.join(shared.dir, 'mobilenetv2-fp32.json'), 'utf8')) as { name: string };
  const names = ['mobilenetv2-int8', 'mobilenetv2-fp32'];
  for (const copy of ['b', 'c', 'd', 'e']) {
    fs.writeFileSync(path.join(shared.dir, `fp32-${copy}.json`), JSON.stringify({ ...fp32, name: `fp32-${copy}` }));
    names.push(`fp32-${copy}`);
  }
  const image = fs.readFileSync(kitten);
  const run = async (budgetMib: number) => {
    const name = `six-${budgetMib}`;
    const { child, port } = await spawnAgent(['--node', name, '--models', shared.dir, '--model-memory-mib', String(budgetMib), '--data-dir', dataDir(name)]);
    try {
      const app = await KizunaClient.connect({ url: `mqtt://127.0.0.1:${port}`, mesh: 'home', client: 'six', timeoutMs: 20_000 });
      let loads = 0;
      try {
        for (let round = 0; round < 3; round++) {
          for (const m of names) {
            const r = await app.infer(m, image);
            assert.equal((r.answers![0] as { index: number }).index, 281, `${m}: tabby`);
            if (r.timings.load_ms !== undefined) loads++;
          }
        }
      } finally {
        await app.close();
      }
      const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const mib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
      return { rss: mib('VmRSS'), peak: mib('VmHWM'), loads };
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  };
  const tight = await run(48);
  const free = await run(0);
  assert.equal(free.loads, 0);
  assert.ok(tight.loads >= 3 * names.length - 1, `${tight.loads} loads`);
  t.diagnostic(`agent RSS after 3 rounds over 6 MobileNetV2 sessions: budget 48 MiB ${tight.rss.toFixed(1)} MiB (peak ${tight.peak.toFixed(1)}, ${tight.loads} loads), no budget ${free.rss.toFixed(1)} MiB (peak ${free.peak.toFixed(1)})`);
  // Five fp32 sessions of about 38 MB each are never all in memory: at least one session's worth is saved.
  assert.ok(tight.peak < free.peak - 40, 'the budget keeps at least 40 MiB of the five extra fp32 sessions out of memory');
});
