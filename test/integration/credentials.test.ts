/**
 * A mesh with credentials, end to end with real processes: `kizuna init`, `join`, `token`,
 * agents that refuse clients without a token, and `kizuna revoke` locking a board out, still
 * locked out after the broker that heard the revocation dies and another board takes over.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import mqtt, { type MqttClient } from 'mqtt';
import { KizunaClient } from '../../mesh/client.js';
import { topics } from '../../mesh/topics.js';
import { meshTls } from '../../mesh/mqtt.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { CLI, cliOk, lastLine, spawnAgent } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';

const digit = loadDigits().heldOut[0]!;
const tensor = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digit.pixels } };
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-creds-'));
const dir = (b: string) => path.join(root, b);
const procs: Record<string, ChildProcess> = {};
const logs: Record<string, () => string> = {};
let ports: Record<string, number>;
let appToken: string;

/** The mesh CA certificate, as an app gets it from the first board. */
const ca = () => fs.readFileSync(path.join(dir('a'), 'mesh-home', 'ca.pem'), 'utf8');

/** A status watcher with an app token (apps may read statuses): resolves when `until` holds. */
async function watchStatuses(port: number): Promise<{ client: MqttClient; online: Map<string, boolean>; until: (p: () => boolean, ms: number, what: string) => Promise<void> }> {
  const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { protocolVersion: 4, username: 'watch', password: appToken, reconnectPeriod: 200, ...meshTls({ ca: ca(), mesh: 'home' }) });
  const online = new Map<string, boolean>();
  const waiters = new Set<() => void>();
  client.on('message', (t, p) => {
    const s = JSON.parse(p.toString()) as { node: string; online: boolean };
    online.set(s.node, s.online);
    for (const w of waiters) w();
  });
  await client.subscribeAsync(topics.allNodeStatus('home'), { qos: 1 });
  const until = (p: () => boolean, ms: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      // Checked at every status message, and every 50 ms for what shows in logs and files.
      const check = () => p() && (clearTimeout(timer), clearInterval(poll), waiters.delete(check), resolve());
      const timer = setTimeout(() => (clearInterval(poll), waiters.delete(check), reject(new Error(`not within ${ms} ms: ${what}; seen ${JSON.stringify([...online])}`))), ms);
      const poll = setInterval(check, 50);
      waiters.add(check);
      check();
    });
  return { client, online, until };
}

before(async () => {
  // The first board creates the mesh; two more join with tokens it made; an app gets a token.
  const initOut = await cliOk(['init', '--data-dir', dir('a'), '--board', 'pi-b']);
  assert.match(initOut, /mesh home created/);
  await cliOk(['join', lastLine(initOut), '--data-dir', dir('b')]);
  await cliOk(['join', lastLine(await cliOk(['token', 'board', 'pi-c', '--data-dir', dir('a')])), '--data-dir', dir('c')]);
  appToken = lastLine(await cliOk(['token', 'app', 'watch', '--data-dir', dir('a')]));
  for (const b of ['a', 'b', 'c']) assert.equal(fs.statSync(path.join(root, b, 'mesh-home')).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(root, 'a', 'mesh-home', 'authority.key')).mode & 0o777, 0o600);
  assert.equal(fs.existsSync(path.join(root, 'b', 'mesh-home', 'authority.key')), false, 'only the first board holds the mesh key');

  const [pa, pb, pc] = await freePorts(3);
  ports = { a: pa!, b: pb!, c: pc! };
  const peers = (me: string) => Object.entries(ports).filter(([b]) => b !== me).map(([, p]) => `127.0.0.1:${p}`).join(',');
  const start = async (b: string, formation: string) => {
    const s = await spawnAgent(['--port', String(ports[b]), '--data-dir', dir(b), '--peers', peers(b), '--formation-ms', formation, '--keepalive-seconds', '1', '--log-level', 'info']);
    procs[b] = s.child;
    logs[b] = s.stderr;
  };
  await start('a', '0'); // alone at first: it becomes the broker
  await start('b', '400');
  await start('c', '400');
});

after(async () => {
  for (const p of Object.values(procs)) if (p.exitCode === null) p.kill('SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

test('an app without a token is refused, so is plain MQTT; over TLS with a token it is served', async () => {
  await assert.rejects(KizunaClient.connect({ url: `mqtts://127.0.0.1:${ports.a}`, client: 'anon', ca: ca(), connectTimeoutMs: 3000 }), /Not authorized/i);
  await assert.rejects(KizunaClient.connect({ url: `mqtt://127.0.0.1:${ports.a}`, client: 'watch', token: appToken, connectTimeoutMs: 3000 }));
  assert.match(logs.a!(), /takes MQTT over TLS only/);
  const app = await KizunaClient.connect({ url: `mqtts://127.0.0.1:${ports.a}`, client: 'watch', token: appToken, ca: ca() });
  try {
    assert.equal(((await app.infer('digits', tensor)).answers![0] as { index: number }).index, digit.label);
  } finally {
    await app.close();
  }
  // The same from the command line, with the token and the CA file.
  const png = path.join(root, 'digit.png');
  fs.writeFileSync(png, await digitToPng(digit.pixels));
  const caFile = path.join(dir('a'), 'mesh-home', 'ca.pem');
  const out = await cliOk(['infer', 'digits', png, '--broker', `mqtts://127.0.0.1:${ports.a}`, '--token', appToken, '--ca', caFile]);
  assert.match(out, new RegExp(`^${digit.label} \\(`, 'm'));
});

test('a revoked board stops; a stolen copy of its token is refused by the next broker after a failover', { timeout: 60_000 }, async (t) => {
  t.after(() => { if (process.env.KZ_DEBUG_LOGS) for (const b of Object.keys(logs)) console.error(`--- ${b}\n${logs[b]!()}`); });
  const w = await watchStatuses(ports.c!);
  try {
    await w.until(() => w.online.get('pi-b') === true && w.online.get('pi-c') === true, 10_000, 'pi-b and pi-c online');
    // A copy of pi-b's credentials taken before the revocation (a stolen SD card): no list in it.
    fs.cpSync(path.join(dir('b'), 'mesh-home'), path.join(dir('stolen'), 'mesh-home'), { recursive: true });
    const bExit = new Promise<number | null>((resolve) => procs.b!.once('exit', resolve));
    const out = await cliOk(['revoke', 'board', 'pi-b', '--data-dir', dir('a'), '--broker', `mqtts://127.0.0.1:${ports.a}`]);
    assert.match(out, /revoked board pi-b/);
    assert.equal(await bExit, 1, 'the revoked board stops by itself');
    assert.match(logs.b!(), /KZ_ERR_UNAUTHORIZED: this board \(pi-b\) is revoked/);
    await w.until(() => w.online.get('pi-b') === false, 10_000, 'pi-b offline');
    // Every board keeps the signed list, so the next broker refuses pi-b too.
    await w.until(() => fs.existsSync(path.join(dir('c'), 'mesh-home', 'revoked.json')), 10_000, 'pi-c kept the list');
    procs.a!.kill('SIGKILL');
    await w.until(() => logs.c!().includes('becoming the broker'), 15_000, 'pi-c became the broker');
    const stolen = spawn(process.execPath, [CLI, 'agent', '--host', '127.0.0.1', '--port', '0', '--data-dir', dir('stolen'), '--peers', `127.0.0.1:${ports.c}`, '--formation-ms', '400'], { stdio: 'ignore' });
    procs.stolen = stolen;
    await w.until(() => /connect refused \(client kizuna-agent-pi-b\): the token of board pi-b is revoked/.test(logs.c!()), 15_000, 'pi-c refused the stolen token');
    const app = await KizunaClient.connect({ url: `mqtts://127.0.0.1:${ports.c}`, client: 'watch', token: appToken, ca: ca() });
    try {
      const r = await app.infer('digits', tensor);
      assert.equal((r.answers![0] as { index: number }).index, digit.label);
      assert.equal(r.agent, 'pi-c');
    } finally {
      await app.close();
    }
    assert.equal(w.online.get('pi-b'), false, 'the stolen copy never shows up as a member');
    assert.doesNotMatch(logs.c!(), /following broker pi-b/, 'pi-c never follows the revoked board');
  } finally {
    w.client.end(true);
  }
});
