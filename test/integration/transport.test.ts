/** The reconnecting transport against a real aedes broker that dies and comes back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { BrokerHost } from '../../broker/host.js';
import { createLogger } from '../../agent/log.js';
import { Transport } from '../../mesh/mqtt.js';
import { backoffDelay, DEFAULT_BACKOFF } from '../../mesh/backoff.js';

const log = createLogger('silent');
const broker = (port = 0) => BrokerHost.create({ port, host: '127.0.0.1', log });

test('backoff grows exponentially, is capped, and jitter stays within its share', () => {
  const b = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, b, () => 0.999999)), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual([0, 1, 2, 3, 4].map((a) => backoffDelay(a, b, () => 0)), [50, 100, 200, 400, 500]);
  for (let a = 0; a < 20; a++) assert.ok(backoffDelay(a, DEFAULT_BACKOFF, Math.random) <= DEFAULT_BACKOFF.maxMs);
});

test('after the broker restarts: reconnects, restores subscriptions, sends what waited', async (t) => {
  let b = await broker();
  const port = b.port;
  const url = `mqtt://127.0.0.1:${port}`;
  const sub = await Transport.connect({ url, clientId: 'sub', backoff: { initialMs: 10, maxMs: 100, factor: 2, jitter: 0 } });
  const pub = await Transport.connect({ url, clientId: 'pub', backoff: { initialMs: 10, maxMs: 100, factor: 2, jitter: 0 } });
  t.after(async () => {
    await sub.close(true);
    await pub.close(true);
    await b.stop();
  });
  await sub.subscribe('t/#');
  const received: string[] = [];
  sub.onMessage((topic, payload) => received.push(`${topic}=${payload}`));

  const bothDown = Promise.all([once(sub, 'down'), once(pub, 'down')]);
  await b.stop();
  await bothDown;
  assert.equal(pub.connected, false);
  const sent = pub.publish('t/1', 'while the broker was away');

  const subUp = once(sub, 'up');
  b = await broker(port);
  await subUp;
  await sent; // resolves only once the new broker acknowledged it
  // The queued message may reach the new broker before the subscriber is back; a message sent
  // after both reconnected proves the subscription was restored.
  const arrived = new Promise<void>((resolve) => sub.onMessage((topic) => topic === 't/2' && resolve()));
  await pub.publish('t/2', 'after');
  await arrived;
  assert.ok(received.includes('t/2=after'));
});

test('the target can change between attempts (a failover to another broker)', async (t) => {
  const first = await broker();
  const second = await broker();
  let target = `mqtt://127.0.0.1:${first.port}`;
  const client = await Transport.connect({ url: () => target, backoff: { initialMs: 10, maxMs: 50, factor: 2, jitter: 0 } });
  t.after(async () => {
    await client.close(true);
    await second.stop();
  });
  assert.equal(client.url, target);
  target = `mqtt://127.0.0.1:${second.port}`;
  const up = once(client, 'up');
  await first.stop();
  const [url] = await up;
  assert.equal(url, target);
  assert.equal(second.connectedClients, 1);
});

test('close() fails what still waits and leaves nothing running', async () => {
  const b = await broker();
  const client = await Transport.connect({ url: `mqtt://127.0.0.1:${b.port}`, backoff: { initialMs: 10, maxMs: 50, factor: 2, jitter: 0 } });
  const down = once(client, 'down');
  await b.stop();
  await down;
  const waiting = client.publish('x', 'y');
  await client.close();
  await assert.rejects(waiting, /transport closed/);
});

test('after a loss, a silent address does not hold the client up: the next one is tried alongside', async (t) => {
  // A "board" that accepts TCP but never answers MQTT, like one piping to a cut-off broker.
  const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const silentUrl = `mqtt://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  let good = await broker();
  const goodUrl = `mqtt://127.0.0.1:${good.port}`;
  let target = goodUrl;
  const client = await Transport.connect({
    url: () => target,
    alternatives: () => [silentUrl, goodUrl],
    staggerMs: 100,
    connectTimeoutMs: 60_000,
    backoff: { initialMs: 10, maxMs: 50, factor: 2, jitter: 0 },
  });
  t.after(async () => {
    await client.close(true);
    await good.stop();
    silent.close();
  });
  target = silentUrl; // the client's next choice is the silent one
  const port = good.port;
  const up = once(client, 'up');
  await good.stop();
  good = await broker(port);
  const [url] = await up;
  assert.equal(url, goodUrl, 'connected through the address that answers, not stuck on the silent one');
});
