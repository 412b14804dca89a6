/**
 * Credentials and access rules in the embedded broker, with real aedes behind the mesh listener
 * and real mqtt.js clients over sockets: who is refused at the door, and every rule tried from a
 * wrong identity once inside.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { BrokerHost } from '../../broker/host.js';
import type { Denial } from '../../broker/embedded.js';
import { createLogger } from '../../agent/log.js';
import { signToken, verifyToken } from '../../mesh/tokens.js';
import { topics } from '../../mesh/topics.js';
import { encodeShardResult } from '../../mesh/jobs.js';

const MESH = 'home';
const meshKey = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const rogueKey = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const revoked = new Set<string>();
const denials: Denial[] = [];
let host: BrokerHost;
let url: string;

before(async () => {
  host = await BrokerHost.create({
    port: 0,
    host: '127.0.0.1',
    log: createLogger('silent'),
    onDenied: (d) => denials.push(d),
    security: {
      mesh: MESH,
      identify: ({ password }) => {
        const claims = verifyToken(password?.toString() ?? '', meshKey.publicKey, { mesh: MESH, revoked });
        return claims.kind === 'app' ? { kind: 'app', name: claims.sub } : { kind: 'board', node: claims.sub };
      },
    },
  });
  url = `mqtt://127.0.0.1:${host.port}`;
});
after(() => host?.stop());

const token = (kind: 'app' | 'board', sub: string, key = meshKey.privateKey, mesh = MESH) => signToken({ mesh, kind, sub }, key);

/** Connects; resolves the client, or rejects with the broker's refusal. */
function connect(password?: string, username = 'x'): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...(password !== undefined ? { username, password } : {}) });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
  });
}

/** Publishes (QoS 1) and tells whether the broker acknowledged it or closed the connection. */
async function publishOutcome(c: MqttClient, topic: string, retain = false, payload: string | Buffer = 'x'): Promise<'acked' | 'closed'> {
  return new Promise((resolve) => {
    c.once('close', () => resolve('closed'));
    c.publish(topic, payload, { qos: 1, retain }, (err) => resolve(err ? 'closed' : 'acked'));
  });
}

/** The QoS the broker grants a subscription: 128 is MQTT's refusal (mqtt.js turns it into an error). */
async function granted(c: MqttClient, filter: string): Promise<number> {
  try {
    return (await c.subscribeAsync(filter, { qos: 1 }))[0]!.qos;
  } catch (err) {
    if (/Subscribe error/.test((err as Error).message)) return 128;
    throw err;
  }
}

test('refused at the door: no credentials, a token of another key, of another mesh, revoked', async () => {
  const notAuthorized = /Not authorized/i;
  await assert.rejects(connect(), notAuthorized);
  await assert.rejects(connect('not a token'), notAuthorized);
  await assert.rejects(connect(token('app', 'cam', rogueKey.privateKey)), notAuthorized);
  await assert.rejects(connect(token('app', 'cam', meshKey.privateKey, 'work')), notAuthorized);
  const t = token('app', 'old-cam');
  (await connect(t)).end(true);
  revoked.add('app:old-cam');
  await assert.rejects(connect(t), notAuthorized);
  assert.ok(denials.filter((d) => d.kind === 'connect').length >= 5);
});

test('an app: its own requests and answers only', async () => {
  const cam = await connect(token('app', 'cam'));
  try {
    assert.equal(await granted(cam, topics.repliesTo(MESH, 'cam')), 1);
    assert.equal(await granted(cam, topics.jobResultsTo(MESH, 'cam')), 1);
    assert.equal(await granted(cam, topics.allNodeStatus(MESH)), 1);
    assert.equal(await granted(cam, topics.repliesTo(MESH, 'door')), 128, "another app's answers");
    assert.equal(await granted(cam, '#'), 128);
    assert.equal(await granted(cam, topics.allRequests(MESH)), 128, 'everyone\'s requests');
    assert.equal(await publishOutcome(cam, topics.request(MESH, 'digits', 'cam', '1')), 'acked');
    assert.equal(await publishOutcome(cam, topics.job(MESH, 'digits', 'cam', 'j1')), 'acked');
  } finally {
    cam.end(true);
  }
  for (const topic of [
    topics.request(MESH, 'digits', 'door', '1'), // in another app's name
    topics.reply(MESH, 'door', '1'), // a forged answer
    topics.task(MESH, 'pi-a', { model: 'digits', client: 'cam', id: '1' }), // assigning work
    topics.nodeStatus(MESH, 'pi-a'), // a board's status
    topics.brokerRecord(MESH),
  ]) {
    const c = await connect(token('app', 'cam'));
    assert.equal(await publishOutcome(c, topic), 'closed', `app cam publishing ${topic}`);
    c.end(true);
  }
});

test('a board: its own status, replies and shard results; its own tasks; nothing of another board', async () => {
  const a = await connect(token('board', 'pi-a'));
  const watcher = await connect(token('app', 'cam'));
  try {
    assert.equal(await granted(a, topics.tasksFor(MESH, 'pi-a')), 1);
    assert.equal(await granted(a, topics.shardsFor(MESH, 'pi-a')), 1);
    assert.equal(await granted(a, topics.tasksFor(MESH, 'pi-b')), 128, "another board's tasks");
    assert.equal(await granted(a, topics.allRequests(MESH)), 128);
    assert.equal(await granted(a, topics.allReplies(MESH)), 128);
    // Its retained status reaches others.
    await watcher.subscribeAsync(topics.nodeStatus(MESH, 'pi-a'), { qos: 1 });
    const seen = new Promise<string>((resolve) => watcher.once('message', (_t, p) => resolve(p.toString())));
    assert.equal(await publishOutcome(a, topics.nodeStatus(MESH, 'pi-a'), true), 'acked');
    assert.equal(await seen, 'x');
    assert.equal(await publishOutcome(a, topics.reply(MESH, 'cam', '1')), 'acked');
    assert.equal(await publishOutcome(a, topics.shardResult(MESH, { client: 'cam', job: 'j', start: 0, end: 2 }), false, encodeShardResult('pi-a', [])), 'acked');
  } finally {
    a.end(true);
    watcher.end(true);
  }
  for (const [topic, retain] of [
    [topics.nodeStatus(MESH, 'pi-b'), true], // impersonating another board
    [topics.shard(MESH, 'pi-b', { model: 'digits', client: 'cam', job: 'j', start: 0, end: 2 }), false], // handing out work
    [topics.request(MESH, 'digits', 'cam', '1'), false],
    [topics.brokerRecord(MESH), true], // claiming the broker role
    [topics.reply(MESH, 'cam', '1'), true], // a retained answer
  ] as const) {
    const c = await connect(token('board', 'pi-a'));
    assert.equal(await publishOutcome(c, topic, retain), 'closed', `board pi-a publishing ${topic}`);
    c.end(true);
  }
  // Shard results in another board's name (the dispatcher would blame that board for garbage).
  const c = await connect(token('board', 'pi-a'));
  assert.equal(await publishOutcome(c, topics.shardResult(MESH, { client: 'cam', job: 'j', start: 0, end: 2 }), false, encodeShardResult('pi-b', [])), 'closed');
  c.end(true);
  assert.ok(denials.some((d) => d.kind === 'publish' && /board pi-a may not publish/.test(d.why)));
  assert.ok(denials.some((d) => /in another board's name/.test(d.why)));
});
