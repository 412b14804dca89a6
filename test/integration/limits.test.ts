/**
 * The embedded broker's limits per connection, with a real agent and real sockets: a client that
 * sends an oversized packet or floods publishes is cut off, and everyone else goes on being served.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { rawPublish } from '../helpers/raw-mqtt.js';

const digit = loadDigits().heldOut[0]!;
const tensor = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digit.pixels } };
let agent: Agent;
let app: KizunaClient;
let port: number;

before(async () => {
  agent = await startAgent({ node: 'limits', maxPacketBytes: 64 * 1024, publishPerSecond: 200, publishBurst: 50 });
  port = Number(new URL(agent.brokerUrl).port);
  app = await connectClient(agent, 'legit');
});
after(async () => {
  await app?.close();
  await agent?.stop();
});

const answered = async () => ((await app.infer('digits', tensor)).answers![0] as { index: number }).index;

test('a packet over --max-packet-bytes closes that connection only', async () => {
  const refused = once(agent.listener!, 'refused');
  const { closedByBroker } = await rawPublish(port, 'kizuna/v1/home/req/digits/raw/big-1', Buffer.alloc(100 * 1024));
  assert.equal(closedByBroker, true);
  assert.deepEqual((await refused)[0], { kind: 'too-large', bytes: 100 * 1024 + 2 + 'kizuna/v1/home/req/digits/raw/big-1'.length });
  assert.equal(await answered(), digit.label, 'the other client is still served');
});

test('a packet within the limit goes through', async () => {
  const { closedByBroker } = await rawPublish(port, 'kizuna/v1/home/req/digits/raw/ok-1', Buffer.alloc(10 * 1024));
  assert.equal(closedByBroker, false);
});

test('a client publishing beyond its allowance is cut off; the others are served', async () => {
  const refused = once(agent.listener!, 'refused');
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const closed = once(socket, 'close');
  socket.on('error', () => undefined);
  // CONNECT (client id "flood"), then 500 QoS 0 publishes in one write: far over a burst of 50.
  socket.write(Buffer.from('101100044d5154540402003c0005666c6f6f64', 'hex'));
  const topic = Buffer.from('kizuna/v1/home/flood/x');
  const one = Buffer.concat([Buffer.from([0x30, topic.length + 2 + 4, 0, topic.length]), topic, Buffer.from('ping')]);
  socket.write(Buffer.concat(Array.from({ length: 500 }, () => one)));
  assert.deepEqual((await refused)[0], { kind: 'flood', rate: 200 });
  await closed;
  assert.equal(await answered(), digit.label, 'the other client is still served');
});

test('on an open mesh a client has its own burst after CONNACK (45 publishes at once of 50), not the 20 of a connection that has not logged in', async () => {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => undefined);
  const received: Buffer[] = [];
  let closed = false;
  socket.once('close', () => (closed = true));
  /** Resolves once `byte` (a packet type) has arrived; rejects if the broker closes first. */
  const got = (byte: number) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (Buffer.concat(received).includes(byte)) return resolve();
      if (closed) return reject(new Error(`closed by the broker before 0x${byte.toString(16)}`));
      socket.once('data', (d: Buffer) => (received.push(d), check()));
      socket.once('close', check);
    };
    check();
  });
  socket.write(Buffer.from('101100044d5154540402003c00056275727374', 'hex')); // CONNECT, client id "burst"
  await got(0x20); // CONNACK: the broker has taken the client in
  const topic = Buffer.from('kizuna/v1/home/burst/x');
  const one = Buffer.concat([Buffer.from([0x30, topic.length + 2 + 4, 0, topic.length]), topic, Buffer.from('ping')]);
  socket.write(Buffer.concat([...Array.from({ length: 45 }, () => one), Buffer.from([0xc0, 0x00])]));
  await got(0xd0); // PINGRESP after the burst: still connected
  assert.equal(socket.destroyed, false);
  socket.destroy();
});
