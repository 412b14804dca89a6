/**
 * Placement in the dispatcher: a request goes to a board that has its model in memory (warm)
 * while one has a free slot, before a faster or unmeasured board that would load it first (cold);
 * cold boards take what warm ones cannot; a cold board's answer is not its speed; a status from a
 * board older than placement counts as warm. Jobs: the first shards go to warm boards (the
 * deterministic simulation of test/helpers/jobs-sim.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../broker/dispatcher.js';
import { MemoryPort } from '../helpers/memory-port.js';
import { createLogger } from '../../agent/log.js';
import { topics } from '../../mesh/topics.js';
import { isWarm, parseNodeStatus, type NodeStatus } from '../../mesh/status.js';
import { Sim, SUMMARY, itemOf } from '../helpers/jobs-sim.js';

const board = (node: string, warm: boolean | undefined, slots = 2): NodeStatus => ({
  v: 1, node, instance: `${node}000000aa`, started: 1, seq: 1, online: true, slots,
  models: [{ name: 'm', version: '1', sha256: 'x', inputs: [], ...(warm === undefined ? {} : { warm }) }],
});

async function setup(agents: NodeStatus[]) {
  const port = new MemoryPort();
  const clock = { now: 0 };
  const d = new Dispatcher(port, { mesh: 'home', node: 'broker', log: createLogger('silent'), now: () => clock.now, tickMs: 0 });
  await d.start();
  const announce = (s: NodeStatus) => port.publish(topics.nodeStatus('home', s.node), Buffer.from(JSON.stringify(s)));
  for (const a of agents) await announce(a);
  const ask = (id: string) => port.publish(`kizuna/v1/home/req/m/app/${id}`, Buffer.from('{}'));
  const answer = (id: string) => port.publish(topics.reply('home', 'app', id), Buffer.from('{"ok":true}'));
  return { port, clock, d, ask, answer, announce };
}

test('the status says warm or cold per model; a board older than placement (no field) counts as warm', () => {
  assert.equal(isWarm(board('a', true), 'm'), true);
  assert.equal(isWarm(board('a', false), 'm'), false);
  assert.equal(isWarm(board('a', undefined), 'm'), true);
  const parsed = parseNodeStatus(Buffer.from(JSON.stringify({ ...board('a', false), modelMemory: { budgetMiB: 409, usedMiB: 12 } })));
  assert.equal(parsed?.models?.[0]?.warm, false);
  assert.deepEqual(parsed?.modelMemory, { budgetMiB: 409, usedMiB: 12 });
  assert.equal(parseNodeStatus(Buffer.from(JSON.stringify({ ...board('a', true), modelMemory: { budgetMiB: -1, usedMiB: 0 } }))), undefined);
});

test('a warm board with a free slot gets the request before an unmeasured cold one', async () => {
  const { port, ask } = await setup([board('cold', false), board('warm', true)]);
  await ask('1');
  assert.deepEqual(port.taskIds('warm'), ['1']);
  assert.deepEqual(port.taskIds('cold'), []);
});

test('a warm board gets the request before a faster cold one; the cold one takes what the warm one has no slot for', async () => {
  const { port, clock, d, ask, answer, announce } = await setup([board('fast', true, 1), board('slow', true, 1)]);
  // Measure both: fast 10 ms, slow 100 ms per request.
  await ask('p1');
  await ask('p2');
  clock.now = 10;
  await answer('p1');
  clock.now = 100;
  await answer('p2');
  assert.ok(d.estimate('fast', 'm')! < d.estimate('slow', 'm')!);
  // fast's model was unloaded (placement): slow is warm, so it answers, though slower.
  await announce({ ...board('fast', false, 1), seq: 2 });
  await ask('q1');
  assert.deepEqual(port.taskIds('slow'), ['p2', 'q1']);
  // slow's only slot is taken: fast, cold, takes the next one rather than let it wait.
  await ask('q2');
  assert.deepEqual(port.taskIds('fast'), ['p1', 'q2']);
});

test("a cold board's answer (its load included) is not taken as its speed", async () => {
  const { clock, d, ask, answer } = await setup([board('c', false)]);
  await ask('1');
  clock.now = 900;
  await answer('1');
  assert.equal(d.estimate('c', 'm'), undefined);
});

test('warm boards are equal among themselves: the measured speed decides, as before placement', async () => {
  const { port, clock, ask, answer } = await setup([board('a', true, 4), board('b', undefined, 4)]);
  await ask('p1');
  await ask('p2');
  clock.now = 50;
  await answer(port.taskIds('a')[0]!);
  clock.now = 10;
  await answer(port.taskIds('b')[0]!);
  await ask('q');
  assert.deepEqual(port.taskIds('b').slice(-1), ['q'], 'b (no warm field: warm) is faster');
});

test('jobs: the first shards go to warm boards; cold boards get work once warm ones are full', async () => {
  const sim = await Sim.create({
    agents: [
      { node: 'cold-fast', ms: 1, slots: 2, summary: { ...SUMMARY, warm: false } },
      { node: 'warm-a', ms: 4, slots: 2, summary: { ...SUMMARY, warm: true } },
      { node: 'warm-b', ms: 4, slots: 2 },
    ],
  });
  sim.app.send('job', Array.from({ length: 400 }, (_, i) => itemOf(i)));
  sim.runJob('job');
  const first = (node: string) => sim.agent(node).received[0]?.ref.start ?? Infinity;
  assert.equal(Math.min(first('warm-a'), first('warm-b')), 0, 'input 0 goes to a warm board');
  assert.ok(first('cold-fast') > Math.max(first('warm-a'), first('warm-b')), 'the cold board gets its first shard after both warm ones');
  const done = sim.app.of('job').flatMap((r) => (r.msg.ok ? r.msg.results : []));
  assert.equal(done.length, 400);
  assert.ok(sim.agent('cold-fast').received.length > 0, 'the cold board still takes part');
});
