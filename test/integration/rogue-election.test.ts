/**
 * A rogue device claiming to be the mesh's broker, with a higher term and a better rank than any
 * board, against real agents (real listeners, aedes, TLS, hello probes over loopback) on an
 * in-memory discovery network. With credentials no board steps down, follows or walks to it; a
 * board that starts while the rogue is advertised joins the real broker. The same rogue against an
 * open mesh does take the broker role away: that is the threat, and why the test can fail.
 * The network-namespace version, with real mDNS, is test/netns/rogue-broker.test.ts.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Agent } from '../../agent/agent.js';
import type { Advert } from '../../agent/advert.js';
import { initMesh, issueToken, joinToken } from '../../agent/credentials.js';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { MemoryDiscovery, MemoryNetwork } from '../../agent/discovery/memory.js';
import { answerHello, isHello } from '../../agent/discovery/hello.js';
import { helloProver } from '../../agent/discovery/hello-proof.js';
import { createLogger } from '../../agent/log.js';
import { createCA, generateKeyPair, issueCert } from '../../mesh/x509.js';
import { startAgent } from '../helpers/agent.js';

const MESH = 'home';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-rogue-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Log lines of all agents, and an event per line, so tests wait for what happened (no sleeps). */
const logs = new EventEmitter();
const lines: string[] = [];
const log = createLogger('info', 'kizuna', (line) => {
  lines.push(line);
  if (process.env.KZ_DEBUG) process.stderr.write(line + "\n");
  logs.emit('line', line);
});

function logged(re: RegExp, ms = 15_000): Promise<string> {
  const seen = lines.find((l) => re.test(l));
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      logs.off('line', on);
      reject(new Error(`no log line matching ${re} in ${ms} ms; last lines:\n${lines.slice(-15).join('\n')}`));
    }, ms);
    const on = (line: string) => {
      if (!re.test(line)) return;
      clearTimeout(timer);
      logs.off('line', on);
      resolve(line);
    };
    logs.on('line', on);
  });
}

/**
 * The rogue: a hello server on loopback that answers as a broker of term 1000 with 1 TiB of RAM,
 * optionally "signed" by a CA of its own for the same mesh name. Counts what connects to it.
 */
async function rogueDevice(signed: boolean) {
  const seen = { hellos: 0, other: 0 };
  const sockets = new Set<net.Socket>();
  const ca = createCA({ mesh: MESH });
  const { privateKey, publicKey } = generateKeyPair();
  const cert = issueCert({ ca: { key: ca.key, cert: ca.cert }, publicKey, mesh: MESH, subject: 'rogue', kind: 'board' }).cert;
  const prover = signed ? helloProver({ cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }) : undefined;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      if (!isHello(chunk)) {
        seen.other++; // a TLS ClientHello, an MQTT CONNECT, a piped client: someone walked in
        return socket.destroy();
      }
      seen.hellos++;
      answerHello(socket, rogue.advert, { first: chunk, ...(prover ? { prover } : {}) });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const rogue = {
    seen,
    advert: {
      v: 1, mesh: MESH, node: 'rogue', instance: 'deadbeef', role: 'broker', term: 1000, port: (server.address() as net.AddressInfo).port,
      addresses: ['127.0.0.1'], eligible: true, ramMiB: 1 << 20, cores: 64, throttled: false,
    } as Advert,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
  return rogue;
}

/** Boards a, b, c of a mesh with credentials (a made it), each with its own data directory. */
function boardsWithCredentials(scene: string) {
  const dataDir = (n: string) => path.join(tmp, `${scene}-${n}`);
  const authority = initMesh(dataDir('a'), MESH, 'a');
  return { authority, a: { dataDir: dataDir('a') }, b: { dataDir: dataDir('b'), joinToken: joinToken(authority, 'b') }, c: { dataDir: dataDir('c'), joinToken: joinToken(authority, 'c') } };
}

async function board(network: MemoryNetwork, node: string, extra: Record<string, unknown>): Promise<Agent> {
  return startAgent({ mesh: MESH, node, formationMs: 300, logLevel: 'info', ...extra }, { discovery: new MemoryDiscovery(network), log: log.child(node) });
}

for (const signed of [false, true]) {
  test(`with credentials, a rogue broker advert ${signed ? 'signed by its own CA' : 'unsigned'} moves no board`, async (t) => {
    const network = new MemoryNetwork();
    const creds = boardsWithCredentials(signed ? 'signed' : 'unsigned');
    const agents: Agent[] = [];
    t.after(async () => {
      for (const x of agents.reverse()) await x.stop(); // followers first, the broker last
    });
    agents.push(await board(network, 'a', creds.a));
    agents.push(await board(network, 'b', creds.b));
    const [a, b] = agents as [Agent, Agent];
    assert.equal(a.mesh.role, 'broker');
    assert.equal(b.mesh.broker?.node, 'a');
    const termBefore = a.mesh.term;

    const rogue = await rogueDevice(signed);
    t.after(() => rogue.close());
    const rogueDiscovery = new MemoryDiscovery(network);
    await rogueDiscovery.start(rogue.advert);
    // Both boards probe it once, find no proof of membership and remember that.
    await logged(/\[kizuna:a:election\] ignored broker advert of rogue \(term 1000\).*not a member of this mesh/);
    await logged(/\[kizuna:b:election\] ignored broker advert of rogue \(term 1000\).*not a member of this mesh/);

    // A board starting now sees the rogue's claim first (the highest term) and still joins a.
    agents.push(await board(network, 'c', creds.c));
    const c = agents[2]!;
    assert.equal(c.mesh.broker?.node, 'a', `c follows ${c.mesh.broker?.node}`);

    // Again with a higher term: a new claim is probed once more, and refuted again.
    await rogueDiscovery.update({ ...rogue.advert, term: 2000 });
    await logged(/\[kizuna:a:election\] ignored broker advert of rogue \(term 2000\)/);

    assert.equal(a.mesh.role, 'broker', 'a is still the broker');
    assert.equal(a.mesh.term, termBefore, 'with the same term');
    assert.equal(b.mesh.broker?.node, 'a');
    assert.equal(c.mesh.broker?.node, 'a');
    assert.equal(lines.filter((l) => /stepping down/.test(l)).length, 0, 'no board stepped down');
    assert.equal(rogue.seen.other, 0, 'nothing but hello probes reached the rogue');
    assert.ok(rogue.seen.hellos >= 3, `hellos ${rogue.seen.hellos}`);
    // And the mesh still serves an app through every board.
    const digit = loadDigits().heldOut[0]!;
    for (const x of agents) {
      const app = await KizunaClient.connect({ url: x.brokerUrl, mesh: MESH, token: issueToken(creds.authority, 'app', `phone-${x.node}`), ca: creds.authority.tls!.ca, timeoutMs: 10_000 });
      try {
        const reply = await app.infer('digits', { input: { dtype: 'float32', shape: [1, 1, 28, 28], data: digit.pixels } });
        assert.equal((reply.answers![0] as { index: number }).index, digit.label, `through ${x.node}`);
      } finally {
        await app.close();
      }
    }
    await rogueDiscovery.stop();
  });
}

test('the same rogue against an open mesh (no credentials) takes the broker role: the threat is real', async (t) => {
  const network = new MemoryNetwork();
  const agents: Agent[] = [];
  t.after(() => Promise.all(agents.map((x) => x.stop())));
  agents.push(await board(network, 'x', { dataDir: path.join(tmp, 'open-x') }));
  assert.equal(agents[0]!.mesh.role, 'broker');
  const rogue = await rogueDevice(false);
  t.after(() => rogue.close());
  const rogueDiscovery = new MemoryDiscovery(network);
  t.after(() => rogueDiscovery.stop());
  await rogueDiscovery.start(rogue.advert);
  await logged(/\[kizuna:x:election\] broker rogue \(term 1000\) outranks this one .*stepping down/);
  await logged(/\[kizuna:x:election\] following broker rogue \(term 1000\)/);
  assert.notEqual(agents[0]!.mesh.role, 'broker');
  assert.equal(agents[0]!.mesh.broker?.node, 'rogue');
});

test('with credentials, a device claiming a forming board\'s node id is ignored; the board keeps its id', async (t) => {
  const network = new MemoryNetwork();
  const creds = boardsWithCredentials('squat');
  const agents: Agent[] = [];
  t.after(async () => {
    for (const x of agents.reverse()) await x.stop();
  });
  agents.push(await board(network, 'a', creds.a));
  const rogue = await rogueDevice(true);
  t.after(() => rogue.close());
  const squatter = new MemoryDiscovery(network);
  t.after(() => squatter.stop());
  await squatter.start({ ...rogue.advert, node: 'b', role: 'agent', term: 1 });
  agents.push(await board(network, 'b', creds.b));
  const b = agents[1]!;
  await logged(/\[kizuna:b\] ignored a device at 127\.0\.0\.1 claiming this node id \(b\): .*certificate is not signed by this mesh's CA/);
  assert.equal(b.node, 'b', 'the board kept the id its certificate names');
  assert.equal(b.mesh.broker?.node, 'a');
});
