import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng } from '../helpers/prng.js';
import { Ledger } from '../../broker/planner.js';

const SEED = 0x706c616e; // 'plan'

test('Ledger: each index accepted once; results emitted once, in order, despite disorder and duplicates', () => {
  const rng = prng(SEED + 4);
  for (let c = 0; c < 300; c++) {
    const total = rng.range(1, 300);
    const arrivals = rng.shuffle([...Array(total).keys(), ...Array.from({ length: rng.int(total) }, () => rng.int(total))]);
    const ledger = new Ledger<string>(total);
    const first = new Map<number, string>();
    const emitted: { index: number; result: string }[] = [];
    for (const [k, i] of arrivals.entries()) {
      const r = `${i}@${k}`;
      assert.equal(ledger.accept(i, r), !first.has(i));
      if (!first.has(i)) first.set(i, r);
      const missing = [...Array(total).keys()].find((x) => !first.has(x));
      assert.equal(ledger.firstMissing(), missing);
      if (rng.next() < 0.3) emitted.push(...ledger.nextInOrder());
    }
    emitted.push(...ledger.nextInOrder());
    assert.ok(ledger.isComplete);
    assert.equal(ledger.done, total);
    assert.deepEqual(emitted, [...Array(total).keys()].map((index) => ({ index, result: first.get(index) })));
    assert.deepEqual(ledger.nextInOrder(), []);
  }
  assert.throws(() => new Ledger(3).accept(3, 'x'), RangeError);
});

// ---- Simulated execution -----------------------------------------------------------------------
