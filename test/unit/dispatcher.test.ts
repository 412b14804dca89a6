/** The dispatcher on an in-memory broker port and a hand-driven clock: placement, credits, failures. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../broker/dispatcher.js';
import { MemoryPort } from '../helpers/memory-port.js';
import { createLogger } from '../../agent/log.js';
import { topics } from '../../mesh/topics.js';
import type { NodeStatus } from '../../mesh/status.js';

const status = (node: string, extra: Partial<NodeStatus> = {}): NodeStatus => ({
  v: 1, node, instance: `${node}000000aa`, started: 1, seq: 1, online: true, slots: 2,
  models: [{ name: 'm', version: '1', sha256: 'x', inputs: [] }], ...extra,
});

async function setup(agents: NodeStatus[], maxWaiting = 100) {
  const port = new MemoryPort();
  const clock = { now: 0 };
  const d = new Dispatcher(port, { mesh: 'home', node: 'broker', log: createLogger('silent'), maxWaiting, now: () => clock.now });
  await d.start();
  for (const a of agents) await port.publish(topics.nodeStatus('home', a.node), Buffer.from(JSON.stringify(a)));
  const ask = (id: string, model = 'm') => port.publish(`kizuna/v1/home/req/${model}/app/${id}`, Buffer.from('{}'));
  const answer = (id: string) => port.publish(topics.reply('home', 'app', id), Buffer.from('{"ok":true}'));
  return { port, clock, d, ask, answer };
}

test('an agent never holds more tasks than its slots; the rest wait and go as slots free up', async () => {
  const { port, ask, answer } = await setup([status('a', { slots: 2 })]);
  for (const id of ['1', '2', '3', '4']) await ask(id);
  assert.deepEqual(port.tasks('a'), ['app/1', 'app/2']);
  await answer('1');
  assert.deepEqual(port.tasks('a'), ['app/1', 'app/2', 'app/3'], 'one answer frees one slot');
});

test('requests go to the agent that should answer soonest, by measured time per request', async () => {
  const { port, clock, ask, answer } = await setup([status('fast', { slots: 4 }), status('slow', { slots: 4 })]);
  // Measure both once: fast answers in 10 ms, slow in 100 ms.
  await ask('p1');
  await ask('p2');
  assert.deepEqual([port.tasks('fast').length, port.tasks('slow').length], [1, 1], 'each unmeasured agent is tried once');
  clock.now = 10;
  await answer(port.tasks('fast')[0]!.split('/')[1]!);
  clock.now = 100;
  await answer(port.tasks('slow')[0]!.split('/')[1]!);
  // Now 8 requests at once: fast finishes its k-th at 10k ms, slow its first at 100 ms.
  for (let i = 0; i < 8; i++) await ask(`q${i}`);
  assert.equal(port.tasks('fast').length - 1, 4, 'fast takes as many as its 4 slots allow');
  assert.equal(port.tasks('slow').length - 1, 4, 'then slow, which would otherwise sit idle');
});

test('a full dispatcher refuses with KZ_ERR_OVERLOADED instead of queueing without bound', async () => {
  const { port, ask } = await setup([status('a', { slots: 1 })], 2);
  for (const id of ['1', '2', '3', '4']) await ask(id);
  assert.deepEqual(port.tasks('a'), ['app/1']);
  assert.deepEqual(port.errors(), [{ id: '4', code: 'KZ_ERR_OVERLOADED' }]);
});

test("an agent that goes offline: its tasks go to another agent; with none left, a clear error", async () => {
  const { port, ask } = await setup([status('a', { slots: 4 }), status('b', { slots: 4 })]);
  await ask('1');
  const first = port.tasks('a').length ? 'a' : 'b';
  const other = first === 'a' ? 'b' : 'a';
  await port.publish(topics.nodeStatus('home', first), Buffer.from(JSON.stringify(status(first, { online: false, seq: 1 }))));
  assert.deepEqual(port.tasks(other), ['app/1'], 'handed to the other agent');
  await port.publish(topics.nodeStatus('home', other), Buffer.from(JSON.stringify(status(other, { online: false, seq: 1 }))));
  assert.deepEqual(port.errors(), [{ id: '1', code: 'KZ_ERR_UNKNOWN_MODEL' }]);
});

test('a retry of an outstanding id is sent again to the same agent, not to a second one', async () => {
  const { port, ask, d } = await setup([status('a', { slots: 4 }), status('b', { slots: 4 })]);
  await ask('1');
  await ask('1');
  assert.equal(port.tasks('a').length + port.tasks('b').length, 2);
  assert.ok(port.tasks('a').length === 2 || port.tasks('b').length === 2, 'both to the same agent');
  assert.equal(d.stats.absorbed, 1);
});

test('an unknown model is answered here with KZ_ERR_UNKNOWN_MODEL', async () => {
  const { port, ask } = await setup([status('a')]);
  await ask('1', 'nope');
  assert.deepEqual(port.errors(), [{ id: '1', code: 'KZ_ERR_UNKNOWN_MODEL' }]);
});
