/**
 * Signed models end to end: a real mesh's credentials (`kizuna init` on one board, `kizuna join`
 * on another), `kizuna models sign` as a real process, then a model folder holding a signed and
 * an unsigned copy of the built-in digits model under other names: a store with the mesh's
 * trust policy serves the signed one (real onnxruntime, PNG digits through the pipeline) and
 * refuses the other; a real agent of the mesh does the same over MQTT.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Agent } from '../../agent/agent.js';
import { loadCredentials } from '../../agent/credentials.js';
import { KizunaClient } from '../../mesh/client.js';
import { KizunaError } from '../../mesh/errors.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import type { Manifest } from '../../models/manifest.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { answer, infer, prepare } from '../../models/pipeline.js';
import { digitToPng } from '../../models/render.js';
import { signaturePath } from '../../models/signature.js';
import { ModelStore, PACKAGE_BUILTIN_DIR, sha256 } from '../../models/store.js';
import { startAgent } from '../helpers/agent.js';
import { runCli, cliOk, lastLine } from '../helpers/cli.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-model-signing-'));
const dir = (name: string) => path.join(root, name);
const models = dir('models');
const DIGITS = JSON.parse(fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, 'digits.json'), 'utf8')) as Manifest;
const digits = loadDigits().heldOut.slice(0, 20);
let appToken: string;

type Top = { index: number; label: string; score: number };

before(async () => {
  // Board a created the mesh (it holds the mesh key); board pi-b joined it (public key only).
  await cliOk(['init', '--data-dir', dir('a'), '--board', 'pi-b']);
  await cliOk(['join', lastLine(await cliOk(['token', 'board', 'pi-b', '--data-dir', dir('a')])), '--data-dir', dir('b')]);
  appToken = lastLine(await cliOk(['token', 'app', 'tester', '--data-dir', dir('a')]));
  // The built-in digits model copied twice under other names, into a folder of this mesh's own models.
  fs.mkdirSync(models);
  fs.copyFileSync(path.join(PACKAGE_BUILTIN_DIR, 'digits.onnx'), path.join(models, 'digits.onnx'));
  for (const name of ['digits-signed', 'digits-unsigned']) fs.writeFileSync(path.join(models, `${name}.json`), JSON.stringify({ ...DIGITS, name }, null, 2));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('kizuna models sign: only where the mesh key is, only a manifest whose model matches its sha256', async () => {
  const manifest = path.join(models, 'digits-signed.json');
  for (const dataDir of [dir('b'), dir('nowhere')]) {
    const r = await runCli(['models', 'sign', manifest, '--data-dir', dataDir]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /KZ_ERR_CONFIG: .*run this on the board where kizuna init ran/);
  }
  assert.equal(fs.existsSync(signaturePath(manifest)), false);

  // A manifest whose model bytes differ is not signed: the mesh would vouch for the wrong bytes.
  const stray = dir('stray');
  fs.mkdirSync(stray);
  fs.writeFileSync(path.join(stray, 'digits.onnx'), 'not the digits model');
  fs.writeFileSync(path.join(stray, 'digits.json'), JSON.stringify(DIGITS));
  const refused = await runCli(['models', 'sign', path.join(stray, 'digits.json'), '--data-dir', dir('a')]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`KZ_ERR_MODEL_INTEGRITY: .*sha256 is ${sha256(Buffer.from('not the digits model'))}`));
  assert.equal(fs.existsSync(signaturePath(path.join(stray, 'digits.json'))), false);

  const out = await cliOk(['models', 'sign', manifest, '--data-dir', dir('a')]);
  assert.match(out, new RegExp(`signed digits-signed@1\\.0\\.0 \\(sha256 ${DIGITS.sha256}\\) for mesh home: ${signaturePath(manifest)}`));
  assert.match(fs.readFileSync(signaturePath(manifest), 'utf8'), /^kzm1\.[A-Za-z0-9_-]+\n$/);
  const usage = await runCli(['models']);
  assert.equal(usage.code, 2);
  assert.match(usage.stdout, /usage: kizuna models <action>[\s\S]*kizuna models sign MANIFEST/);
});

describe('a board of the mesh with the signed and the unsigned copy', () => {
  before(() => assert.ok(fs.existsSync(signaturePath(path.join(models, 'digits-signed.json'))), 'the sign test ran first'));

  test('a store with the mesh\'s trust policy serves the signed copy (real inference) and refuses the unsigned one', async (t) => {
    const creds = loadCredentials(dir('b'), 'home')!;
    assert.equal(creds.authorityKey, undefined, 'board pi-b holds only the public key');
    const store = new ModelStore(new OnnxEngine(), { threads: 1 }, { publicKey: creds.publicKey });
    t.after(() => store.close());
    await store.loadFolders([PACKAGE_BUILTIN_DIR, models]);
    assert.deepEqual(store.list().map((m) => m.manifest.name).sort(), ['digits', 'digits-int8', 'digits-signed']);
    assert.deepEqual(store.problems.map((p) => [path.basename(p.manifest), p.code]), [['digits-unsigned.json', 'KZ_ERR_MODEL_INTEGRITY']]);
    assert.match(store.problems[0]!.message, /not signed by this mesh/);

    const model = store.get('digits-signed')!;
    let right = 0;
    for (const d of digits) {
      const prepared = await prepare(model, { kind: 'images', images: [await digitToPng(d.pixels)] }, { maxImagePixels: 1 << 20, maxBatch: 8 });
      const [first] = answer(model, await infer(model, prepared)) as Top[];
      assert.equal(first!.label, String(first!.index), 'the manifest\'s labels');
      if (first!.index === d.label) right++;
    }
    assert.ok(right >= 18, `only ${right}/20 digits right`);
  });

  describe('a real agent of the mesh (board pi-b)', () => {
    let agent: Agent;
    let client: KizunaClient;
    before(async () => {
      agent = await startAgent({ dataDir: dir('b'), node: 'pi-b', models: [PACKAGE_BUILTIN_DIR, models] });
      const ca = path.join(dir('b'), 'mesh-home', 'ca.pem');
      client = await KizunaClient.connect({
        url: agent.brokerUrl, mesh: 'home', client: 'tester', token: appToken, timeoutMs: 20_000,
        ...(fs.existsSync(ca) ? { ca: fs.readFileSync(ca, 'utf8') } : {}),
      });
    });
    after(async () => {
      await client?.close();
      await agent?.stop();
    });

    test('serves the signed copy over MQTT', async () => {
      const d = digits[0]!;
      const r = await client.infer('digits-signed', await digitToPng(d.pixels));
      assert.equal(r.agent, 'pi-b');
      assert.equal((r.answers![0] as Top).index, d.label);
    });

    test('refuses the unsigned copy: listed in its problems, unknown to apps', async () => {
      assert.deepEqual(agent.store.problems.map((p) => [path.basename(p.manifest), p.code]), [['digits-unsigned.json', 'KZ_ERR_MODEL_INTEGRITY']]);
      await assert.rejects(client.infer('digits-unsigned', await digitToPng(digits[0]!.pixels)), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_UNKNOWN_MODEL');
    });
  });
});
