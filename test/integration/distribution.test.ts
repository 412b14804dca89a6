/**
 * Models across the mesh with real agents (in-process, real aedes, real mqtt.js, real
 * onnxruntime, loopback; in-memory discovery) and the real `kizuna models` CLI:
 *  - a board adds a model once (kizuna models add; a bare .onnx file too, its manifest read by
 *    onnxruntime); another board fetches it, verifies it and serves it (real inferences over
 *    MQTT); the broker stops, the next broker still has the catalogue, and a board that joins
 *    afterwards gets the model from the board that holds it; kizuna models list --mesh and verify;
 *  - a transfer cut halfway (the only holder stops sending, then the requester stops) resumes
 *    from the chunks on disk and asks only for the missing ones; kizuna models rm --mesh on the
 *    open mesh unloads the model everywhere;
 *  - a rogue holder sending corrupted chunks is refused and avoided, the model arrives intact
 *    from the good holder (a laptop: kizuna models push);
 *  - a mesh with credentials: the broker refuses an unsigned entry; a signed push reaches every
 *    board; kizuna models rm --mesh (a tombstone signed by the mesh key) unloads it everywhere.
 * The built-in digits models are the payload, under other names, in small chunks.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import type { Agent } from '../../agent/agent.js';
import { initMesh, issueToken, joinToken } from '../../agent/credentials.js';
import { MemoryDiscovery, MemoryNetwork } from '../../agent/discovery/memory.js';
import { createLogger } from '../../agent/log.js';
import { decodeChunkRequest, encodeCatalogEntry, planChunks } from '../../mesh/catalog.js';
import { KizunaClient } from '../../mesh/client.js';
import { meshTls } from '../../mesh/mqtt.js';
import { parseBlobRequestTopic, topics } from '../../mesh/topics.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { signManifest } from '../../models/signature.js';
import { PACKAGE_BUILTIN_DIR, sha256 } from '../../models/store.js';
import { startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/waiters.js';

const MESH = 'dist';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-distribution-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const dir = (name: string) => path.join(tmp, name);

// The payload: the built-in digits models, copied under other names into a folder of manifests.
const models = dir('models');
fs.mkdirSync(models);
const builtin = (f: string) => fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, f));
for (const f of ['digits.onnx', 'digits-int8.onnx']) fs.writeFileSync(path.join(models, f), builtin(f));
const DIGITS = JSON.parse(builtin('digits.json').toString('utf8')) as Record<string, unknown> & { sha256: string };
const INT8 = JSON.parse(builtin('digits-int8.json').toString('utf8')) as Record<string, unknown> & { sha256: string; file: string };
const manifestFile = (name: string, m: Record<string, unknown>) => {
  const file = path.join(models, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify({ ...m, name }, null, 2));
  return file;
};
const COPY = manifestFile('digits-copy', DIGITS);
const digit = loadDigits().heldOut[0]!;
const tensor = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digit.pixels } };

const lines: string[] = [];
const log = createLogger('info', 'kizuna', (l) => {
  lines.push(l);
  if (process.env.KZ_DEBUG_LOGS) console.error(l);
});

function board(network: MemoryNetwork, node: string, scene: string, extra: Record<string, unknown> = {}): Promise<Agent> {
  return startAgent(
    { mesh: MESH, node, formationMs: 300, rejoinGraceMs: 1500, dataDir: dir(`${scene}-${node}`), logLevel: 'info', ...extra },
    { discovery: new MemoryDiscovery(network), log: log.child(node), fetch: { timeoutMs: 1000 } },
  );
}

/** Resolves when `agent` serves `name` with the file `sha` (loaded from its store). */
const holds = (agent: Agent, name: string, sha: string, ms = 15_000) =>
  waitFor(agent.models!, ['loaded'], () => agent.store.get(name)?.manifest.sha256 === sha && agent.store.get(name)?.source === 'store', ms, `${agent.node} holds ${name}`);

/** Checks a state every 20 ms (for what raises no event, such as an election's outcome). */
function poll(check: () => boolean, ms: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = setInterval(() => {
      if (check()) return (clearInterval(tick), resolve());
      if (Date.now() - started > ms) (clearInterval(tick), reject(new Error(`not within ${ms} ms: ${what}`)));
    }, 20);
  });
}

/**
 * Asks the mesh (through `via`, the broker's board) until board `node` answers `model`, once the
 * dispatcher knows that `node` serves it; every answer must be right.
 */
async function answeredBy(via: Agent, model: string, node: string, login: { token?: string; ca?: string; client?: string } = {}): Promise<void> {
  await poll(() => via.dispatcher?.roster.serving(model).some((s) => s.node === node) === true, 5000, `the dispatcher on ${via.node} knows ${node} serves ${model}`);
  const app = await KizunaClient.connect({ url: via.brokerUrl, mesh: MESH, client: `app-${node}`, timeoutMs: 10_000, ...login });
  const seen: string[] = [];
  try {
    for (let i = 0; i < 6 && !seen.includes(node); i++) {
      const r = await app.infer(model, tensor);
      assert.equal((r.answers![0] as { index: number }).index, digit.label, `${model} answered by ${r.agent}`);
      seen.push(r.agent);
    }
  } finally {
    await app.close();
  }
  assert.ok(seen.includes(node), `${node} never answered ${model} (answered by ${seen.join(', ')})`);
}

async function stopAll(agents: Agent[]): Promise<void> {
  for (const a of [...agents].reverse()) await a.stop().catch(() => undefined);
}

test('a board adds a model once: another fetches, verifies and serves it; after the broker stops, the next one keeps the catalogue and a new board gets the model', async (t) => {
  const network = new MemoryNetwork();
  const agents: Agent[] = [];
  t.after(() => stopAll(agents));
  const a = await board(network, 'a', 'add');
  agents.push(a, await board(network, 'b', 'add'));
  const b = agents[1]!;
  assert.equal(a.mesh.role, 'broker');

  const add = await runCli(['models', 'add', COPY, '--data-dir', dir('add-a'), '--mesh', MESH, '--broker', a.brokerUrl, '--chunk-size', '16384'], { KIZUNA_NODE: 'a' });
  assert.equal(add.code, 0, add.stderr);
  assert.match(add.stdout, new RegExp(`added digits-copy@1\\.0\\.0 \\(sha256 ${DIGITS.sha256.slice(0, 12)}, 0\\.4 MB\\)`));
  assert.match(add.stdout, /published digits-copy@1\.0\.0 to mesh dist: board a serves it/);
  await holds(b, 'digits-copy', DIGITS.sha256);
  assert.match(lines.join('\n'), /\[kizuna:b:models\] fetched digits-copy \(0\.4 MB, 25 chunks\) in [\d.]+ s, sha256 verified/);
  // On b's disk: the file under its sha256, matching it, and its manifest.
  const blob = path.join(dir('add-b'), 'store', 'blobs', DIGITS.sha256);
  assert.equal(sha256(fs.readFileSync(blob)), DIGITS.sha256);
  assert.ok(fs.existsSync(path.join(dir('add-b'), 'store', 'manifests', 'digits-copy@1.0.0.json')));
  await answeredBy(a, 'digits-copy', 'b');

  // A bare .onnx file: its manifest is made from the inputs and outputs onnxruntime reads in it.
  const bare = await runCli(['models', 'add', path.join(models, INT8.file), '--name', 'tensor-int8', '--data-dir', dir('add-a'), '--mesh', MESH, '--broker', a.brokerUrl], { KIZUNA_NODE: 'a' });
  assert.equal(bare.code, 0, bare.stderr);
  await holds(b, 'tensor-int8', INT8.sha256);
  const made = b.store.get('tensor-int8')!.manifest;
  assert.deepEqual([made.inputs, made.outputs, made.postprocess], [INT8.inputs, INT8.outputs, { kind: 'none' }]);
  const app = await KizunaClient.connect({ url: b.brokerUrl, mesh: MESH, client: 'tensor-app', timeoutMs: 10_000 });
  try {
    const r = await app.infer('tensor-int8', tensor);
    assert.deepEqual(r.outputs.logits?.shape, [1, 10]);
  } finally {
    await app.close();
  }

  // The broker stops; b takes over with the catalogue it mirrored, and d, joining later, gets the model from b.
  await a.stop();
  agents.shift();
  await poll(() => b.mesh.role === 'broker', 10_000, 'b becomes the broker');
  const d = await board(network, 'd', 'add');
  agents.push(d);
  await holds(d, 'digits-copy', DIGITS.sha256);
  await answeredBy(b, 'digits-copy', 'd');
  const list = await runCli(['models', 'list', '--mesh', '--mesh-name', MESH, '--broker', b.brokerUrl, '--data-dir', dir('add-d'), '--json'], { KIZUNA_NODE: 'd' });
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { local: { name: string; file: string }[]; mesh: { name: string; sha256: string; holders: string[] }[] };
  assert.deepEqual(listed.local.map((m) => [m.name, m.file]), [['digits-copy', 'ok'], ['tensor-int8', 'ok']]);
  assert.deepEqual(listed.mesh.map((m) => [m.name, m.sha256, m.holders]), [['digits-copy', DIGITS.sha256, ['b', 'd']], ['tensor-int8', INT8.sha256, ['b', 'd']]]);

  // kizuna models verify: every file hashed again; one whose bytes changed is quarantined (exit 1).
  const ok = await runCli(['models', 'verify', '--data-dir', dir('add-d')]);
  assert.equal(ok.code, 0, ok.stdout);
  assert.match(ok.stdout, /2 file\(s\) verified, 0 quarantined/);
  const rotten = path.join(dir('add-d'), 'store', 'blobs', INT8.sha256);
  fs.chmodSync(rotten, 0o644);
  fs.appendFileSync(rotten, 'bit rot');
  const rot = await runCli(['models', 'verify', '--data-dir', dir('add-d')]);
  assert.equal(rot.code, 1);
  assert.match(rot.stdout, new RegExp(`MISMATCH    ${INT8.sha256}: its bytes hash to [0-9a-f]{64}; moved to .*quarantine`));
  assert.equal(fs.existsSync(rotten), false);
});

/**
 * A holder scripted by the test (as a laptop would push): publishes the catalogue entry and
 * sends only the chunks below `limit`; the others wait until open().
 */
async function scriptedHolder(url: string, name: string, file: Buffer, manifest: Record<string, unknown>, chunkSize: number) {
  const plan = planChunks(file, chunkSize);
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `holder-${name}`, reconnectPeriod: 0, clean: true });
  const asked: { requester: string; index: number }[] = [];
  let pending: { requester: string; index: number }[] = [];
  let limit = Math.floor(plan.chunks.length / 2);
  const send = (requester: string, index: number) =>
    client.publish(topics.blobChunk(MESH, requester, 'laptop', plan.sha256, index), file.subarray(index * chunkSize, (index + 1) * chunkSize), { qos: 1 });
  client.on('message', (topic, payload) => {
    const req = parseBlobRequestTopic(topic);
    if (!req) return;
    for (const index of decodeChunkRequest(payload, plan.chunks.length)) {
      asked.push({ requester: req.requester, index });
      if (index < limit) send(req.requester, index);
      else pending.push({ requester: req.requester, index });
    }
  });
  await client.subscribeAsync(topics.blobRequestsTo(MESH, 'laptop'), { qos: 1 });
  const entry = { v: 1 as const, manifest: { ...manifest, name }, size: plan.size, chunkSize, chunks: plan.chunks, origin: 'laptop' };
  await client.publishAsync(topics.catalog(MESH, name), encodeCatalogEntry(entry as never), { qos: 1, retain: true });
  return {
    plan,
    half: limit,
    asked,
    open() {
      limit = Infinity;
      const waiting = pending;
      pending = [];
      for (const p of waiting) send(p.requester, p.index);
    },
    close: () => client.endAsync(true),
  };
}

test('a transfer cut halfway (the holder stops sending, then the requester stops) resumes from the chunks on disk', async (t) => {
  const network = new MemoryNetwork();
  const agents: Agent[] = [];
  t.after(() => stopAll(agents));
  agents.push(await board(network, 'a', 'cut'));
  const c = await board(network, 'c', 'cut');
  agents.push(c);
  const bytes = fs.readFileSync(path.join(models, INT8.file));
  const holder = await scriptedHolder(agents[0]!.brokerUrl, 'int8-copy', bytes, INT8, 4096);
  t.after(() => holder.close());
  const of = holder.plan.chunks.length;
  assert.equal(of, 26);
  const halfBytes = holder.half * 4096;
  await waitFor(c.models!, ['progress'], () => c.models!.transfers().some((x) => x.name === 'int8-copy' && x.done === halfBytes), 10_000, 'c has the first half');
  assert.deepEqual(c.models!.transfers(), [{ name: 'int8-copy', sha256: INT8.sha256, done: halfBytes, total: bytes.length }]);
  await c.stop();
  agents.pop();
  assert.ok(fs.existsSync(path.join(dir('cut-c'), 'store', 'partial', `${INT8.sha256}.part`)), 'the chunks stay on disk');
  assert.equal(fs.existsSync(path.join(dir('cut-c'), 'store', 'blobs', INT8.sha256)), false, 'no blob before the whole file is in');

  const before = holder.asked.length;
  const c2 = await board(network, 'c', 'cut');
  agents.push(c2);
  holder.open();
  await holds(c2, 'int8-copy', INT8.sha256);
  const log = lines.join('\n');
  assert.match(log, new RegExp(`\\[kizuna:c:models\\] resuming int8-copy \\(${INT8.sha256.slice(0, 12)}\\): ${holder.half} of ${of} chunks already on disk`));
  assert.match(log, new RegExp(`\\[kizuna:c:models\\] fetched int8-copy \\(0\\.1 MB, ${of - holder.half} chunks\\)`), 'the second run took only the missing chunks');
  const askedAgain = holder.asked.slice(before).filter((x) => x.requester === 'c').map((x) => x.index);
  assert.ok(askedAgain.length > 0 && askedAgain.every((i) => i >= holder.half), `after the restart c asked only for missing chunks: ${askedAgain.join(',')}`);
  assert.equal(sha256(fs.readFileSync(path.join(dir('cut-c'), 'store', 'blobs', INT8.sha256))), INT8.sha256);
  await answeredBy(agents[0]!, 'int8-copy', 'c');

  // Retracted from the open mesh (an unsigned tombstone, kept retained): every board unloads it and deletes its copy.
  const rm = await runCli(['models', 'rm', 'int8-copy', '--mesh', '--mesh-name', MESH, '--data-dir', dir('cut-a'), '--broker', agents[0]!.brokerUrl], { KIZUNA_NODE: 'a' });
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /retracted int8-copy@1\.0\.0 from mesh dist/);
  for (const x of agents) {
    const copy = path.join(dir(`cut-${x.node}`), 'store', 'blobs', INT8.sha256);
    await waitFor(x.models!, ['retracted'], () => x.store.get('int8-copy') === undefined && !fs.existsSync(copy), 10_000, `${x.node} unloads int8-copy`);
  }
});

/** A rogue board: a bare client whose status lists the model, answering every chunk request with garbage. */
async function rogueHolder(url: string, name: string, sha: string, chunkSize: number) {
  const client = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: 'rogue', reconnectPeriod: 0, clean: true });
  let served = 0;
  client.on('message', (topic, payload) => {
    const req = parseBlobRequestTopic(topic);
    if (!req) return;
    for (const index of decodeChunkRequest(payload, 1000)) {
      served++;
      client.publish(topics.blobChunk(MESH, req.requester, 'rogue', req.sha256, index), Buffer.alloc(chunkSize, 0x5a), { qos: 1 });
    }
  });
  await client.subscribeAsync(topics.blobRequestsTo(MESH, 'rogue'), { qos: 1 });
  const status = {
    v: 1, node: 'rogue', instance: 'r0', started: Date.now(), seq: 1, online: true, role: 'agent', term: 0, eligible: false, slots: 2,
    models: [{ name, version: '1.0.0', sha256: sha, inputs: [{ name: 'input', dtype: 'float32', shape: ['N', 1, 28, 28] }] }],
  };
  await client.publishAsync(topics.nodeStatus(MESH, 'rogue'), JSON.stringify(status), { qos: 1, retain: true });
  let stopped: Promise<void> | undefined;
  return {
    served: () => served,
    stop: () =>
      (stopped ??= client
        .publishAsync(topics.nodeStatus(MESH, 'rogue'), Buffer.alloc(0), { qos: 1, retain: true })
        .then(() => client.endAsync(), () => client.endAsync(true))
        .then(() => undefined)),
  };
}

test('a rogue holder\'s corrupted chunks are refused and it is avoided; the model arrives intact from a laptop (kizuna models push)', async (t) => {
  const network = new MemoryNetwork();
  const agents: Agent[] = [];
  t.after(() => stopAll(agents));
  const b = await board(network, 'b', 'rogue');
  agents.push(b);
  const bad: { holder: string; index: number }[] = [];
  const avoided: string[] = [];
  b.models!.on('bad-chunk', (x: { holder: string; index: number }) => bad.push(x));
  b.models!.on('avoid', (x: { holder: string }) => avoided.push(x.holder));
  const rogue = await rogueHolder(b.brokerUrl, 'digits-copy', DIGITS.sha256, 16384);
  t.after(() => rogue.stop());
  await poll(() => b.roster.get('rogue')?.online === true, 5000, 'b sees the rogue');

  // Two boards: the rogue's status says it holds the model too (a lie push cannot tell), b must really hold it.
  const push = await runCli(
    ['models', 'push', COPY, '--broker', b.brokerUrl, '--mesh', MESH, '--chunk-size', '16384', '--boards', '2', '--data-dir', dir('rogue-laptop')],
    { KIZUNA_NODE: 'laptop' },
  );
  assert.equal(push.code, 0, push.stderr);
  assert.match(push.stdout, /pushed digits-copy@1\.0\.0 \(sha256 [0-9a-f]{12}, 0\.4 MB, 25 chunks\) to mesh dist/);
  assert.match(push.stdout, /held and verified by b, rogue after [\d.]+ s/, push.stdout);
  assert.ok(rogue.served() > 0, 'the rogue was asked');
  assert.ok(bad.length >= 2 && bad.every((x) => x.holder === 'rogue'), `bad chunks: ${JSON.stringify(bad)}`);
  assert.deepEqual([...new Set(avoided)], ['rogue']);
  assert.equal(b.store.get('digits-copy')?.manifest.sha256, DIGITS.sha256);
  assert.equal(sha256(fs.readFileSync(path.join(dir('rogue-b'), 'store', 'blobs', DIGITS.sha256))), DIGITS.sha256);
  await rogue.stop();
  await answeredBy(b, 'digits-copy', 'b');
});

test('with credentials: an unsigned entry is refused by the broker; a signed push reaches every board; rm --mesh (a signed tombstone) unloads it everywhere', async (t) => {
  const network = new MemoryNetwork();
  const agents: Agent[] = [];
  t.after(() => stopAll(agents));
  const authority = initMesh(dir('creds-a'), MESH, 'a');
  const appToken = issueToken(authority, 'app', 'laptop');
  const caFile = path.join(dir('creds-a'), `mesh-${MESH}`, 'ca.pem');
  const a = await board(network, 'a', 'creds');
  agents.push(a, await board(network, 'b', 'creds', { joinToken: joinToken(authority, 'b') }));
  const b = agents[1]!;
  const signed = manifestFile('digits-signed', DIGITS);
  fs.writeFileSync(`${signed}.sig`, `${signManifest(fs.readFileSync(signed, 'utf8'), authority.authorityKey!)}\n`);

  // The CLI will not push an unsigned model to a mesh with credentials; a client that tries anyway is cut off.
  const refused = await runCli(['models', 'push', COPY, '--broker', a.brokerUrl, '--mesh', MESH, '--token', appToken, '--ca', caFile, '--data-dir', dir('creds-laptop')]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /KZ_ERR_MODEL_INTEGRITY: digits-copy is not signed/);
  const raw = await mqtt.connectAsync(a.brokerUrl, { protocolVersion: 4, username: 'laptop', password: appToken, reconnectPeriod: 0, ...meshTls({ ca: authority.tls!.ca, mesh: MESH }) });
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  const plan = planChunks(builtin('digits.onnx'), 16384);
  raw.publish(topics.catalog(MESH, 'digits-copy'), encodeCatalogEntry({ v: 1, manifest: { ...DIGITS, name: 'digits-copy' } as never, size: plan.size, chunkSize: 16384, chunks: plan.chunks, origin: 'laptop' }), { qos: 1, retain: true });
  await closed;
  raw.end(true);
  assert.match(lines.join('\n'), /publish refused \(client [^)]+\): catalogue entry digits-copy: its manifest is not signed by the mesh key/);

  const push = await runCli(['models', 'push', signed, '--broker', a.brokerUrl, '--mesh', MESH, '--token', appToken, '--ca', caFile, '--boards', '2', '--chunk-size', '16384', '--data-dir', dir('creds-laptop')]);
  assert.equal(push.code, 0, push.stderr);
  assert.match(push.stdout, /held and verified by a, b/);
  for (const x of agents) {
    await holds(x, 'digits-signed', DIGITS.sha256);
    assert.equal(x.store.get('digits-signed')?.trust, 'signed');
  }
  assert.equal(b.models!.catalog().some((e) => e.manifest.name === 'digits-copy'), false, 'the unsigned entry never reached a board');
  await answeredBy(a, 'digits-signed', 'b', { token: appToken, ca: authority.tls!.ca, client: 'laptop' });

  const rm = await runCli(['models', 'rm', 'digits-signed', '--mesh', '--mesh-name', MESH, '--data-dir', dir('creds-a'), '--broker', a.brokerUrl]);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /retracted digits-signed@1\.0\.0 from mesh dist/);
  const copy = path.join(dir('creds-b'), 'store', 'blobs', DIGITS.sha256);
  await waitFor(b.models!, ['retracted'], () => b.store.get('digits-signed') === undefined && !fs.existsSync(copy), 10_000, 'b unloads digits-signed and deletes its copy');
});
