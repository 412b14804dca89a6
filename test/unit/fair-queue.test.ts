import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng } from '../helpers/prng.js';
import { FairQueue } from '../../broker/fair-queue.js';

type Item = { client: string; id: string; model: string };
const item = (client: string, id: number, model = 'm'): Item => ({ client, id: String(id), model });

test('a flooding client does not delay another: the other is served on the next turn', () => {
  const q = new FairQueue<Item>({ perClient: 1000, total: 10_000 });
  for (let i = 0; i < 1000; i++) assert.ok(q.push(item('flood', i)));
  q.push(item('legit', 0));
  const served = [q.take(() => true)!, q.take(() => true)!].map((x) => x.client);
  assert.ok(served.includes('legit'), `served ${served}`);
});

test('bounds: per client, then in all; a request taken back from a dead agent always fits, first in line', () => {
  const q = new FairQueue<Item>({ perClient: 3, total: 5 });
  for (let i = 0; i < 3; i++) assert.ok(q.push(item('a', i)));
  assert.equal(q.push(item('a', 3)), false, 'a fourth of the same client');
  assert.ok(q.push(item('b', 0)) && q.push(item('b', 1)));
  assert.equal(q.push(item('c', 0)), false, 'over the total');
  assert.ok(q.push(item('a', 99), true), 'taken back');
  assert.equal(q.size, 6);
  assert.equal(q.take(() => true)!.id, '99');
  assert.ok(q.has('b', '1') && !q.has('a', '99'));
});

test('generated: every item comes out once, only when servable, each client in order per model', () => {
  const rng = prng(0x66616972);
  for (let c = 0; c < 500; c++) {
    const q = new FairQueue<Item>({ perClient: 50, total: 1000 });
    const clients = Array.from({ length: rng.range(1, 6) }, (_, i) => `c${i}`);
    const models = ['x', 'y'];
    const pushed = new Map<string, number[]>();
    let next = 0;
    const taken: Item[] = [];
    for (let step = 0; step < 300; step++) {
      if (rng.next() < 0.6) {
        const cl = rng.pick(clients);
        if (q.push(item(cl, next, rng.pick(models)))) pushed.set(cl, [...(pushed.get(cl) ?? []), next]);
        next++;
      } else {
        const open = rng.pick([['x'], ['y'], ['x', 'y'], []]);
        const got = q.take((m) => open.includes(m));
        if (got) {
          assert.ok(open.includes(got.model), 'only a servable model is taken');
          taken.push(got);
        }
      }
    }
    for (let got = q.take(() => true); got; got = q.take(() => true)) taken.push(got);
    assert.equal(q.size, 0);
    // Each pushed item came out exactly once; per client and model, in push order.
    for (const cl of clients) {
      const mine = taken.filter((t) => t.client === cl);
      assert.deepEqual(mine.map((t) => Number(t.id)).sort((a, b) => a - b), pushed.get(cl) ?? []);
      for (const m of models) {
        const ids = mine.filter((t) => t.model === m).map((t) => Number(t.id));
        assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `client ${cl} model ${m} in order`);
      }
    }
  }
});

test('round-robin: with everything servable, clients alternate', () => {
  const q = new FairQueue<Item>({ perClient: 100, total: 1000 });
  for (let i = 0; i < 10; i++) q.push(item('a', i));
  for (let i = 0; i < 3; i++) q.push(item('b', i));
  const order = Array.from({ length: 13 }, () => q.take(() => true)!.client).join('');
  assert.equal(order, 'abababaaaaaaa');
});
