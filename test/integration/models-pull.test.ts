/**
 * `kizuna models pull` as a real process against a real HTTP server on loopback that serves the
 * shared folder as a mirror (with Range): a pulled model is verified, then served by a real agent
 * (plain folder) or loaded from the board's content-addressed store (the default); a transfer cut halfway resumes with Range (in the same run, and in the next run);
 * corrupt bytes are refused and leave nothing; an unknown name lists the catalogue.
 * Skipped when ../shared is absent.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { Cas } from '../../models/cas.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { answer, infer, prepare } from '../../models/pipeline.js';
import { digitToPng } from '../../models/render.js';
import { ModelStore } from '../../models/store.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { expectedSharedPath, sharedPath, sharedRoot } from '../helpers/shared.js';

type Top = { index: number; label: string; score: number };

/** How the mirror misbehaves for one file: cut the first N transfers after some bytes, or flip bytes. */
interface Fault {
  cutAfter?: number;
  cuts?: number;
  corrupt?: boolean;
}

/** A static file server over the shared folder, recording each request's path and Range header. */
class Mirror {
  readonly requests: { path: string; range?: string }[] = [];
  readonly faults = new Map<string, Fault>();
  private readonly server = http.createServer((req, res) => this.serve(req, res));
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mirror`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/mirror\//, '');
    this.requests.push({ path: rel, ...(req.headers.range ? { range: req.headers.range } : {}) });
    const file = path.join(sharedRoot, rel);
    if (rel.split('/').includes('..') || !fs.existsSync(file) || !fs.statSync(file).isFile()) return void res.writeHead(404).end();
    let bytes = fs.readFileSync(file);
    const fault = this.faults.get(rel);
    if (fault?.corrupt) {
      bytes = Buffer.from(bytes);
      for (let i = 0; i < bytes.length; i += 4096) bytes[i] = bytes[i]! ^ 0xff;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) return void res.writeHead(416, { 'content-range': `bytes */${bytes.length}` }).end();
    }
    const body = bytes.subarray(start);
    res.writeHead(range ? 206 : 200, {
      'content-type': 'application/octet-stream',
      'content-length': body.length,
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` } : {}),
    });
    if (fault?.cutAfter !== undefined && (fault.cuts ?? 1) > 0) {
      fault.cuts = (fault.cuts ?? 1) - 1;
      // Part of the body, then the connection drops: the client sees a transfer cut short.
      res.write(body.subarray(0, fault.cutAfter), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  }
}

const MNIST = ['models', 'mnist-7', 'mnist.onnx'];
const SILERO = ['models', 'silero-vad-v4', 'silero_vad.onnx'];
const FP32 = ['models', 'mobilenetv2-12-fp32', 'mobilenetv2-12-dequant-fp32.onnx'];
const KITTEN = ['samples', 'imagenet', 'kitten_224.png'];
const missing = [MNIST, SILERO, FP32, KITTEN, ['samples', 'imagenet', 'Labels.txt']].find((p) => !sharedPath(...p));
const skip = missing ? `shared folder missing: ${expectedSharedPath(...missing)}` : undefined;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-models-pull-'));
let folders = 0;
const newFolder = () => path.join(root, `models-${folders++}`);
const listing = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);
const mirror = new Mirror();
/** The first held-out digit of each class. */
const oneDigitPerClass = () => {
  const heldOut = loadDigits().heldOut;
  return Array.from({ length: 10 }, (_, label) => heldOut.find((d) => d.label === label)!);
};

before(() => mirror.start());
after(async () => {
  await mirror.stop();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('kizuna models catalog and pull, no download', () => {
  test('catalog lists the real models with version, size and licence', async () => {
    const r = await runCli(['models', 'catalog']);
    assert.equal(r.code, 0, r.stderr);
    for (const name of ['mnist', 'silero-vad', 'mobilenetv2-int8', 'mobilenetv2-fp32', 'yolox-nano']) assert.match(r.stdout, new RegExp(`^${name} `, 'm'));
    assert.match(r.stdout, /^mnist +7 +26\.6 kB +MIT/m);
    assert.match(r.stdout, /^silero-vad +4 +1\.8 MB +MIT/m);
    const json = (await runCli(['models', 'catalog', '--json'])).stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(json.find((e) => e.name === 'mnist').url, 'https://raw.githubusercontent.com/microsoft/Windows-Machine-Learning/155b5eeb1f48b49235f31ef3a68db0bd8707ce89/SharedContent/models/mnist.onnx');
  });

  test('an unknown name is refused with the catalogue listed, and nothing is created', async () => {
    const dir = newFolder();
    const r = await runCli(['models', 'pull', 'resnet-9000', '--dir', dir, '--base-url', mirror.url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_UNKNOWN_MODEL: no model named "resnet-9000" in the catalogue; it has: mnist, mobilenetv2-fp32, mobilenetv2-int8, silero-vad, yolox-nano/);
    assert.equal(fs.existsSync(dir), false);
  });

  test('a model with no public copy needs a mirror', async () => {
    const dir = newFolder();
    const r = await runCli(['models', 'pull', 'mobilenetv2-fp32', '--dir', dir], { KIZUNA_MODELS_BASE_URL: '' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_CONFIG: .*no public download URL.*--base-url/);
    assert.equal(fs.existsSync(dir), false);
  });
});

describe('kizuna models pull from a mirror on loopback', { skip }, () => {
  test('mnist into a plain folder (--dir): verified, then served by a real agent that reads digits right over MQTT', async (t) => {
    const dir = newFolder();
    const r = await runCli(['models', 'pull', 'mnist', '--dir', dir, '--base-url', mirror.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(listing(dir), ['mnist.json', 'mnist.onnx']);
    assert.match(r.stderr, /mnist\.onnx: 26\.6 kB in [\d.]+ s, [\d.]+ [kM]B\/s \(100%\), sha256 verified/);
    assert.match(r.stdout, /pulled mnist@7 into .* \(mnist\.onnx, mnist\.json; 26\.6 kB downloaded\)/);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'mnist.json'), 'utf8'));
    assert.equal(manifest.file, 'mnist.onnx');
    assert.equal(manifest.sha256, 'bd5891fdd7987910bfc3d8fc9a697a88e48309e26e529faa87931fba52904fe8');

    // A second pull finds the file there and verified: no request.
    const before = mirror.requests.length;
    const again = await runCli(['models', 'pull', 'mnist', '--dir', dir, '--base-url', mirror.url]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /already there, sha256 verified/);
    assert.equal(mirror.requests.length, before);

    const agent = await startAgent({ node: 'pulled', models: [dir] });
    const client = await connectClient(agent);
    try {
      let right = 0;
      for (const digit of oneDigitPerClass()) {
        const res = await client.infer('mnist', await digitToPng(digit.pixels));
        if ((res.answers![0] as Top).label === String(digit.label)) right++;
      }
      t.diagnostic(`pulled mnist through a real agent: ${right}/10 digits right`);
      assert.equal(right, 10);
    } finally {
      await client.close();
      await agent.stop();
    }
  });

  test('by default into the board\'s content-addressed store (<data dir>/store): blob by sha256, manifest, labels; a real agent with that data dir serves them', async () => {
    const dataDir = newFolder();
    for (const name of ['mnist', 'mobilenetv2-int8']) {
      const r = await runCli(['models', 'pull', name, '--data-dir', dataDir, '--base-url', mirror.url]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`pulled ${name}@\\d+ into the model store ${dataDir}/store \\(${name}@\\d+, blob [0-9a-f]{16}; `));
    }
    const store = path.join(dataDir, 'store');
    assert.deepEqual(listing(path.join(store, 'blobs')), ['83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f', 'bd5891fdd7987910bfc3d8fc9a697a88e48309e26e529faa87931fba52904fe8']);
    assert.deepEqual(listing(path.join(store, 'manifests')), ['mnist@7.json', 'mobilenetv2-int8@12.json', 'mobilenetv2-int8@12.labels']);
    assert.deepEqual(listing(path.join(store, 'partial')), []);
    const cas = await Cas.open(store);
    assert.deepEqual((await cas.verify()).bad, []);
    // A real agent with that data directory serves both from its store.
    const agent = await startAgent({ node: 'store', dataDir, models: [] });
    const client = await connectClient(agent);
    try {
      for (const digit of oneDigitPerClass()) assert.equal(((await client.infer('mnist', await digitToPng(digit.pixels))).answers![0] as Top).label, String(digit.label));
      assert.equal(((await client.infer('mobilenetv2-int8', fs.readFileSync(sharedPath(...KITTEN)!))).answers![0] as Top).label, 'tabby, tabby cat');
    } finally {
      await client.close();
      await agent.stop();
    }
  });

  test('a transfer cut halfway resumes with a Range request in the same run and verifies', async () => {
    const dir = newFolder();
    const rel = SILERO.join('/');
    mirror.faults.set(rel, { cutAfter: 900_000, cuts: 1 });
    const from = mirror.requests.length;
    const r = await runCli(['models', 'pull', 'silero-vad', '--dir', dir, '--base-url', mirror.url]);
    mirror.faults.delete(rel);
    assert.equal(r.code, 0, r.stderr);
    const asked = mirror.requests.slice(from).filter((q) => q.path === rel);
    assert.equal(asked.length, 2, JSON.stringify(asked));
    assert.equal(asked[0]!.range, undefined);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(asked[1]!.range ?? '')?.[1]);
    assert.ok(resumedAt > 0 && resumedAt <= 900_000, `resumed at ${asked[1]!.range}`);
    assert.match(r.stderr, /silero-vad\.onnx: [\d.]+ [kM]B in [\d.]+ s, [\d.]+ [kM]B\/s \(100%; 2 requests\), sha256 verified/);
    assert.deepEqual(listing(dir), ['silero-vad.json', 'silero-vad.onnx']);
    const store = new ModelStore(new OnnxEngine());
    await store.loadFolders([dir]);
    assert.deepEqual(store.problems, []);
    assert.deepEqual([...store.get('silero-vad')!.session.inputNames], ['input', 'sr', 'h', 'c']);
    await store.close();
  });

  test('a cut transfer with no retries fails, shows nothing, keeps its partial file; the next pull resumes it with Range', async () => {
    const dir = newFolder();
    const rel = FP32.join('/');
    mirror.faults.set(rel, { cutAfter: 5_000_000, cuts: 1 });
    const first = await runCli(['models', 'pull', 'mobilenetv2-fp32', '--dir', dir, '--base-url', mirror.url, '--retries', '0']);
    mirror.faults.delete(rel);
    assert.equal(first.code, 1);
    assert.match(first.stderr, /KZ_ERR_MODEL_LOAD: cannot download .*mobilenetv2-12-dequant-fp32\.onnx: .*bytes are kept in .*\.part, the next pull resumes from there/);
    const parts = listing(dir);
    assert.equal(parts.length, 1, parts.join());
    assert.match(parts[0]!, /^\.mobilenetv2-fp32\.onnx\.a0c67a65af7f8f57\.part$/);
    const kept = fs.statSync(path.join(dir, parts[0]!)).size;
    assert.ok(kept > 0 && kept <= 5_000_000, `kept ${kept}`);

    const from = mirror.requests.length;
    const second = await runCli(['models', 'pull', 'mobilenetv2-fp32', '--dir', dir, '--base-url', mirror.url]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(mirror.requests.slice(from).find((q) => q.path === rel), { path: rel, range: `bytes=${kept}-` });
    assert.match(second.stderr, new RegExp(`mobilenetv2-fp32\\.onnx: [\\d.]+ MB in [\\d.]+ s, [\\d.]+ MB/s \\(100%; resumed at ${(kept / 1e6).toFixed(1)} MB\\)`));
    assert.deepEqual(listing(dir), ['mobilenetv2-fp32.json', 'mobilenetv2-fp32.labels.txt', 'mobilenetv2-fp32.onnx']);
    // The pulled model with its labels file, through the store's own checks and the pipeline.
    const store = new ModelStore(new OnnxEngine());
    await store.loadFolders([dir]);
    assert.deepEqual(store.problems, []);
    const model = store.get('mobilenetv2-fp32')!;
    const body = { kind: 'images' as const, images: [fs.readFileSync(sharedPath(...KITTEN)!)] };
    const top = answer(model, await infer(model, await prepare(model, body, { maxImagePixels: 1 << 24, maxBatch: 1 })))![0] as Top;
    assert.equal(top.label, 'tabby, tabby cat');
    await store.close();
  });

  test('corrupt bytes are refused with KZ_ERR_MODEL_INTEGRITY and nothing is left in the folder', async () => {
    const dir = newFolder();
    const rel = MNIST.join('/');
    mirror.faults.set(rel, { corrupt: true });
    const r = await runCli(['models', 'pull', 'mnist', '--dir', dir, '--base-url', mirror.url]);
    mirror.faults.delete(rel);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_MODEL_INTEGRITY: .*mnist\.onnx: the downloaded bytes have sha256 [0-9a-f]{64}, the catalogue says bd5891fd.*; deleted them/);
    assert.deepEqual(listing(dir), []);
  });

  test('a mirror without the file: HTTP 404, nothing left', async () => {
    const dir = newFolder();
    const r = await runCli(['models', 'pull', 'mnist', '--dir', dir, '--base-url', `${mirror.url}/nowhere`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_MODEL_LOAD: cannot download http:\/\/127\.0\.0\.1:\d+\/mirror\/nowhere\/models\/mnist-7\/mnist\.onnx: HTTP 404/);
    assert.deepEqual(listing(dir), []);
  });

  test('throughput: MobileNetV2 fp32 (14 MB) from KIZUNA_MODELS_BASE_URL on loopback', async (t) => {
    const dir = newFolder();
    const started = performance.now();
    const r = await runCli(['models', 'pull', 'mobilenetv2-fp32', '--dir', dir], { KIZUNA_MODELS_BASE_URL: mirror.url });
    const wall = (performance.now() - started) / 1000;
    assert.equal(r.code, 0, r.stderr);
    const rate = /mobilenetv2-fp32\.onnx: 14\.0 MB in ([\d.]+) s, ([\d.]+) MB\/s/.exec(r.stderr);
    assert.ok(rate, r.stderr);
    t.diagnostic(`pull mobilenetv2-fp32 (13,976,332 B) on loopback: ${rate[2]} MB/s in the download (${rate[1]} s incl. sha256), ${(13.976332 / wall).toFixed(1)} MB/s for the whole command (${wall.toFixed(2)} s)`);
  });
});
