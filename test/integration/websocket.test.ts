/**
 * MQTT over WebSocket on the mesh port, with real agents and real sockets: mqtt.js over ws:// on
 * an open loopback mesh; over wss:// with the mesh CA and an app token on a mesh with credentials,
 * also through a board that pipes to the broker; what is refused (no token, an untrusted broker,
 * plain ws, HTTP that is not an upgrade on /mqtt); the packet guard over WebSocket.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import { WebSocket } from 'ws';
import type { Agent } from '../../agent/agent.js';
import { initMesh, issueToken, joinMesh, joinToken } from '../../agent/credentials.js';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { startAgent } from '../helpers/agent.js';
import { cliOk } from '../helpers/cli.js';
import { meshCa } from '../helpers/flood-agent.js';
import { freePorts } from '../helpers/ports.js';

const digit = loadDigits().heldOut[0]!;
const tensor = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digit.pixels } };
const label = async (client: KizunaClient) => ((await client.infer('digits', tensor)).answers![0] as { index: number }).index;
const portOf = (agent: Agent) => Number(new URL(agent.brokerUrl).port);

/** An HTTP(S) request to the mesh port: its status and body. With `ca`, over TLS (any board's name). */
async function httpGet(port: number, urlPath: string, ca?: string): Promise<{ status: number; body: string }> {
  const options = { host: '127.0.0.1', port, path: urlPath, agent: false };
  const req = ca ? https.get({ ...options, ca, checkServerIdentity: () => undefined }) : http.get(options);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  let body = '';
  for await (const chunk of res) body += chunk;
  return { status: res.statusCode!, body };
}

/** A WebSocket upgrade: 'open', or the HTTP status of the refusal. */
async function upgrade(url: string, protocols: string[]): Promise<'open' | number> {
  const ws = new WebSocket(url, protocols);
  return new Promise((resolve, reject) => {
    ws.once('open', () => (ws.terminate(), resolve('open')));
    ws.once('unexpected-response', (_req, res) => (ws.terminate(), resolve(res.statusCode!)));
    ws.once('error', reject);
  });
}

describe('an open mesh on loopback: ws://', () => {
  let agent: Agent;
  let port: number;
  let app: KizunaClient;

  before(async () => {
    agent = await startAgent({ node: 'ws-open', maxPacketBytes: 64 * 1024 });
    port = portOf(agent);
    app = await KizunaClient.connect({ url: `ws://127.0.0.1:${port}/mqtt`, client: 'web', timeoutMs: 20_000 });
  });
  after(async () => {
    await app?.close();
    await agent?.stop();
  });

  test('an app over ws://HOST:PORT/mqtt (mqtt.js, subprotocol mqtt) gets its inference answered', async () => {
    assert.equal(await label(app), digit.label);
    // The path / and the MQTT 3.1 subprotocol are served too.
    assert.equal(await upgrade(`ws://127.0.0.1:${port}/`, ['mqttv3.1']), 'open');
  });

  test('HTTP that is not an MQTT upgrade gets a 4xx, and the agent keeps serving', async () => {
    const wrongPath = await httpGet(port, '/index.html');
    assert.equal(wrongPath.status, 404);
    assert.match(wrongPath.body, /MQTT over WebSocket is at \/mqtt/);
    assert.equal((await httpGet(port, '/mqtt')).status, 400, 'not an upgrade');
    assert.equal(await upgrade(`ws://127.0.0.1:${port}/socket`, ['mqtt']), 404, 'an upgrade on another path');
    assert.equal(await upgrade(`ws://127.0.0.1:${port}/mqtt`, ['chat']), 400, 'another subprotocol');
    assert.equal(await label(app), digit.label);
  });

  test('the packet guard applies over WebSocket: an oversized publish cuts that connection only', async () => {
    const topic = 'kizuna/v1/home/req/digits/raw/big-1';
    const big: MqttClient = await mqtt.connectAsync(`ws://127.0.0.1:${port}/mqtt`, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'big' });
    big.on('error', () => undefined);
    const closed = new Promise((resolve) => big.once('close', () => resolve(undefined)));
    const refused = once(agent.listener!, 'refused');
    big.publish(topic, Buffer.alloc(100 * 1024), { qos: 0 });
    assert.deepEqual((await refused)[0], { kind: 'too-large', bytes: 100 * 1024 + 2 + topic.length });
    await closed;
    big.end(true);
    assert.equal(await label(app), digit.label, 'the other client is still served');
  });

  test('a WebSocket message over the packet limit (and a margin) is refused before it is buffered', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, ['mqtt']);
    await once(ws, 'open');
    ws.send(Buffer.alloc(1024 * 1024));
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 1009, 'message too big');
    assert.equal(await label(app), digit.label, 'the other client is still served');
  });
});

describe('a mesh with credentials: wss:// with the mesh CA', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-ws-'));
  const dir = (b: string) => path.join(root, b);
  let broker: Agent;
  let follower: Agent;
  let ca: string;
  let token: string;
  const url = (agent: Agent, scheme = 'wss') => `${scheme}://127.0.0.1:${portOf(agent)}/mqtt`;

  before(async () => {
    const creds = initMesh(dir('a'), 'home', 'ws-a');
    joinMesh(dir('b'), joinToken(creds, 'ws-b'));
    token = issueToken(creds, 'app', 'web');
    ca = meshCa(dir('a'))!;
    const [pa, pb] = await freePorts(2);
    broker = await startAgent({ dataDir: dir('a'), node: 'ws-a', port: pa!, peers: [`127.0.0.1:${pb}`], formationMs: 0 });
    follower = await startAgent({ dataDir: dir('b'), node: 'ws-b', port: pb!, peers: [`127.0.0.1:${pa}`], formationMs: 400 });
    assert.equal(broker.mesh.role, 'broker');
    assert.notEqual(follower.mesh.role, 'broker');
  });
  after(async () => {
    await follower?.stop();
    await broker?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('an app with the mesh CA and its token is served over wss://', async () => {
    const app = await KizunaClient.connect({ url: url(broker), client: 'web', token, ca, timeoutMs: 20_000 });
    try {
      assert.equal(await label(app), digit.label);
    } finally {
      await app.close();
    }
  });

  test('through a board that pipes to the broker: wss:// to its port reaches the broker', async () => {
    const app = await KizunaClient.connect({ url: url(follower), client: 'web', token, ca, timeoutMs: 20_000 });
    try {
      assert.equal(await label(app), digit.label);
    } finally {
      await app.close();
    }
  });

  test('the CLI takes a wss:// --broker with --ca and --token', async () => {
    const png = path.join(root, 'digit.png');
    fs.writeFileSync(png, await digitToPng(digit.pixels));
    const out = await cliOk(['infer', 'digits', png, '--broker', url(broker), '--token', token, '--ca', path.join(dir('a'), 'mesh-home', 'ca.pem')]);
    assert.match(out, new RegExp(`^${digit.label} \\(`, 'm'));
  });

  test('refused: no token (CONNACK not authorized), a broker the client does not trust, HTTPS, plain ws://', async () => {
    await assert.rejects(KizunaClient.connect({ url: url(broker), client: 'web', ca, connectTimeoutMs: 3000 }), /Not authorized/i);
    // Without the mesh CA the chain does not verify; with it, a client of another mesh name
    // refuses the certificate (checkServerIdentity reaches TLS under WebSocket too).
    await assert.rejects(KizunaClient.connect({ url: url(broker), client: 'web', token, connectTimeoutMs: 3000 }), /certificate/i);
    await assert.rejects(KizunaClient.connect({ url: url(broker), mesh: 'work', client: 'web', token, ca, connectTimeoutMs: 3000 }), /not a board of mesh work/);
    assert.equal((await httpGet(portOf(broker), '/nothing', ca)).status, 404, 'HTTPS that is not an upgrade');
    const refused = once(broker.listener!, 'refused');
    await assert.rejects(KizunaClient.connect({ url: url(broker, 'ws'), client: 'web', token, connectTimeoutMs: 3000 }));
    assert.deepEqual((await refused)[0], { kind: 'plain' });
  });
});
