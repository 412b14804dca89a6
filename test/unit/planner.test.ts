import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng, type Rng } from '../helpers/prng.js';
import { Ledger, Ranges, fitting, pickHedge, shardSize, type Placed, type SizeOptions } from '../../broker/planner.js';

const SEED = 0x706c616e; // 'plan'

// ---- Ranges ------------------------------------------------------------------------------------

/** The reference: a plain set of the pending indices. */
function takeRef(set: Set<number>, max: number): { start: number; end: number } | undefined {
  if (!set.size || max < 1) return undefined;
  const start = Math.min(...set);
  let end = start;
  while (set.has(end) && end - start < Math.floor(max)) set.delete(end++);
  return { start, end };
}

/** Ranges holds exactly the set, as maximal runs: sorted, disjoint, never touching (touching ones merge). */
function assertCanonical(r: Ranges, set: Set<number>, what: string) {
  const sorted = [...set].sort((a, b) => a - b);
  const runs: [number, number][] = [];
  for (const i of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[1] === i) last[1] = i + 1;
    else runs.push([i, i + 1]);
  }
  assert.deepEqual((r as unknown as { list: [number, number][] }).list, runs, what);
  assert.equal(r.size, set.size, `${what}: size`);
  assert.equal(r.isEmpty, set.size === 0, `${what}: isEmpty`);
  assert.equal(r.first(), sorted[0], `${what}: first`);
}

test('Ranges: 3,000 generated add/take sequences behave like a set of indices', () => {
  const rng = prng(SEED);
  for (let c = 0; c < 3000; c++) {
    const span = rng.range(1, 200);
    const start = rng.int(span), end = start + rng.int(span);
    const r = new Ranges(start, end);
    const set = new Set(Array.from({ length: Math.max(0, end - start) }, (_, k) => start + k));
    const taken: [number, number][] = [];
    for (let step = 0; step < 40; step++) {
      const what = `case ${c} step ${step}`;
      const op = rng.next();
      if (op < 0.45) {
        const max = rng.pick([0, 0.5, 1, 1.5, rng.range(1, 8), rng.range(1, 80), Infinity]);
        const got = r.take(max);
        assert.deepEqual(got, takeRef(set, max), `${what}: take(${max})`);
        if (got) taken.push([got.start, got.end]);
      } else if (op < 0.75 && taken.length) {
        // As jobs.ts does: give back (part of) what was taken, in any order.
        const [s, e] = taken.splice(rng.int(taken.length), 1)[0]!;
        const a = s + rng.int(e - s), b = a + 1 + rng.int(e - a);
        r.add(a, b);
        for (let i = a; i < b; i++) set.add(i);
      } else {
        // Any range, overlapping, touching or inside what is pending; empty and reversed ones do nothing.
        const a = rng.int(2 * span), b = a + rng.range(-2, 30);
        r.add(a, b);
        for (let i = a; i < b; i++) set.add(i);
      }
      assertCanonical(r, set, what);
    }
  }
});

test('Ranges: take never crosses a gap, add merges neighbours on both sides', () => {
  const r = new Ranges(0, 10);
  assert.deepEqual(r.take(4), { start: 0, end: 4 });
  assert.deepEqual(r.take(100), { start: 4, end: 10 });
  assert.equal(r.take(1), undefined);
  r.add(20, 30);
  r.add(0, 5);
  r.add(10, 15);
  assert.deepEqual(r.take(100), { start: 0, end: 5 }, 'stops at the gap 5..10');
  r.add(5, 10);
  r.add(15, 20);
  assert.equal(r.size, 25);
  assert.deepEqual(r.take(1000), { start: 5, end: 30 }, '5-10, 10-15, 15-20 and 20-30 became one range');
  assert.ok(r.isEmpty);
  assert.equal(new Ranges(5, 5).isEmpty, true);
  assert.equal(new Ranges(5, 3).size, 0);
});

// ---- shardSize ---------------------------------------------------------------------------------

function sizingOf(rng: Rng): SizeOptions {
  const maxShard = rng.pick([1, 2, 16, 256, rng.range(1, 2000)]);
  return {
    targetMs: rng.pick([1, 50, 500, rng.range(1, 5000)]),
    minMs: rng.pick([0, 1, 20, rng.range(0, 1000)]),
    maxShard,
    probe: rng.range(1, Math.min(maxShard, 16)),
  };
}

const msOf = (rng: Rng) => rng.pick([0.01, 0.5, 1, 4, 16, 1000, 0.01 + rng.next() * 200]);
const pendingOf = (rng: Rng) => rng.pick([1, 2, 3, rng.range(1, 50), rng.range(1, 100_000)]);

test('shardSize: 20,000 generated cases stay within [1, pending], maxShard, the target and the tail', () => {
  const rng = prng(SEED + 1);
  for (let c = 0; c < 20_000; c++) {
    const o = sizingOf(rng);
    const ms = msOf(rng), share = rng.pick([0, 1, rng.next(), 1 / rng.range(1, 64)]), pending = pendingOf(rng);
    const n = shardSize(ms, share, pending, o);
    const what = `case ${c}: shardSize(${ms}, ${share}, ${pending}, ${JSON.stringify(o)}) = ${n}`;
    assert.ok(Number.isInteger(n) && n >= 1 && n <= pending, `${what}: outside [1, pending]`);
    assert.ok(n <= o.maxShard, `${what}: over maxShard`);
    const target = Math.max(1, Math.round(o.targetMs / ms));
    const floor = Math.max(1, Math.ceil(o.minMs / ms));
    assert.ok(n <= target, `${what}: longer than targetMs`);
    // Never shorter than minMs unless a harder limit (pending, maxShard, targetMs) says so.
    assert.ok(n >= Math.min(pending, o.maxShard, target, floor), `${what}: under the minMs floor`);
    // The tail: at most half this agent's share of what is left, unless that is under the floor.
    assert.ok(n <= Math.max(floor, Math.ceil((pending * share) / 2)), `${what}: more than half its share of the tail`);
    // Unmeasured: a probe.
    assert.equal(shardSize(rng.pick([undefined, 0, -1, NaN, Infinity]), share, pending, o), Math.min(pending, o.probe), `${what}: probe`);
    assert.equal(shardSize(ms, share, rng.pick([0, -1]), o), 0, `${what}: nothing pending`);
  }
});

test('shardSize: 20,000 generated pairs: a faster agent, a larger share or more pending never gives a smaller shard', () => {
  const rng = prng(SEED + 2);
  for (let c = 0; c < 20_000; c++) {
    const o = sizingOf(rng);
    const ms = msOf(rng), share = rng.next(), pending = pendingOf(rng);
    const n = shardSize(ms, share, pending, o);
    const what = `case ${c}: shardSize(${ms}, ${share}, ${pending}, ${JSON.stringify(o)}) = ${n}`;
    const faster = ms * rng.next();
    if (faster > 0) assert.ok(shardSize(faster, share, pending, o) >= n, `${what}: ${faster} ms/input gets less`);
    // Faster usually also means a larger share of the mesh: both together.
    if (faster > 0) assert.ok(shardSize(faster, Math.min(1, share * (1 + rng.next() * 3)), pending, o) >= n, `${what}: faster with a larger share gets less`);
    assert.ok(shardSize(ms, share + (1 - share) * rng.next(), pending, o) >= n, `${what}: a larger share gets less`);
    const less = rng.int(pending + 1);
    assert.ok(shardSize(ms, share, less, o) <= n, `${what}: less pending (${less}) gives more`);
  }
});

test('shardSize: the defaults of jobs.ts on a 1x/2x/4x mesh', () => {
  const o: SizeOptions = { targetMs: 500, minMs: 20, maxShard: 256, probe: 2 };
  assert.equal(shardSize(undefined, 0.1, 6000, o), 2, 'probe');
  assert.equal(shardSize(4, 4 / 7 / 4, 6000, o), 125, '500 ms on a 4 ms/input board');
  assert.equal(shardSize(16, 1 / 7 / 4, 6000, o), 31, '500 ms on a 16 ms/input board');
  assert.equal(shardSize(0.5, 0.5, 6000, o), 256, 'maxShard');
  assert.equal(shardSize(4, 0.25, 100, o), 13, 'tail: half its share of 100');
  assert.equal(shardSize(4, 0.25, 98, o), 13, 'tail: rounded up (12.25 -> 13)');
  assert.equal(shardSize(4, 0.25, 8, o), 5, 'tail: never under 20 ms');
  assert.equal(shardSize(4, 0.25, 3, o), 3, 'never more than pending');
});

test('shardSize: the probe of an unmeasured agent respects maxShard', () => {
  assert.equal(shardSize(undefined, 1, 100, { targetMs: 500, minMs: 20, maxShard: 1, probe: 2 }), 1);
});

// ---- fitting -----------------------------------------------------------------------------------

test('fitting: 10,000 generated item lists agree with a brute-force count', () => {
  const rng = prng(SEED + 3);
  for (let c = 0; c < 10_000; c++) {
    const n = rng.range(1, 60);
    const sizes = Array.from({ length: n }, () => rng.pick([0, 1, rng.range(1, 100), rng.range(1, 5000), rng.next() * 300]));
    const prefix = new Float64Array(n + 1);
    sizes.forEach((s, i) => (prefix[i + 1] = prefix[i]! + s));
    const start = rng.int(n);
    const maxBytes = rng.pick([0, -1, sizes[start]!, rng.next() * 2000, rng.range(0, 20_000), prefix[n]! - prefix[start]!, Infinity]);
    let brute = 1;
    for (let k = 1; start + k <= n; k++) {
      let sum = 0;
      for (let i = start; i < start + k; i++) sum += sizes[i]!;
      if (sum <= maxBytes) brute = k;
    }
    assert.equal(fitting(prefix, start, maxBytes), brute, `case ${c}: sizes ${JSON.stringify(sizes)} from ${start} in ${maxBytes}`);
  }
});

// ---- pickHedge ---------------------------------------------------------------------------------

interface View {
  id: number;
  copies: number;
  placed: Placed[];
}

/** The reference, written from the doc comment: among the flights it may copy, the one that ends last; only if it wins by `margin`. */
function pickHedgeRef(flights: readonly View[], idle: { node: string; ms: number }, now: number, margin: number): View | undefined {
  const eligible = flights
    .map((f, order) => ({ f, order, end: Math.min(...f.placed.map((p) => p.expectedEndMs)) }))
    .filter(({ f }) => f.copies < 2 && f.placed.every((p) => p.node !== idle.node));
  eligible.sort((a, b) => b.end - a.end || a.order - b.order);
  const last = eligible[0];
  if (!last) return undefined;
  const remaining = last.end - now;
  const copyEnds = now + last.f.placed[0]!.size * idle.ms;
  return remaining > 0 && last.end - copyEnds > margin * remaining ? last.f : undefined;
}

test('pickHedge: 10,000 generated tails agree with a brute-force reference', () => {
  const rng = prng(SEED + 4);
  const nodes = ['a', 'b', 'c', 'd', 'e'];
  let picked = 0;
  for (let c = 0; c < 10_000; c++) {
    const now = rng.range(0, 10_000);
    const flights: View[] = Array.from({ length: rng.range(0, 8) }, (_, id) => {
      const size = rng.range(1, 200);
      const copies = rng.pick([1, 1, 1, 2]);
      const on = rng.shuffle(nodes).slice(0, copies);
      const placed = on.map((node) => ({ node, size, expectedEndMs: now + rng.pick([-50, 0, 1, rng.range(1, 5000), rng.range(1, 5000)]) }));
      return { id, copies, placed };
    });
    const idle = { node: rng.pick([...nodes, 'z']), ms: rng.pick([0.5, 1, 4, 16, rng.next() * 50]) };
    const margin = rng.pick([0, 0.25, 0.5, rng.next()]);
    const got = pickHedge(flights, idle, now, margin);
    assert.equal(got, pickHedgeRef(flights, idle, now, margin), `case ${c}: ${JSON.stringify({ flights, idle, now, margin })}`);
    if (got) picked++;
  }
  assert.ok(picked > 1000, `the generator reaches the interesting cases (${picked} hedges)`);
});

test('pickHedge: copies the straggler a fast idle board beats, never its own shard or a shard copied twice', () => {
  const slow: View = { id: 1, copies: 1, placed: [{ node: 'slow', size: 100, expectedEndMs: 1600 }] };
  const soon: View = { id: 2, copies: 1, placed: [{ node: 'mid', size: 100, expectedEndMs: 400 }] };
  assert.equal(pickHedge([soon, slow], { node: 'fast', ms: 4 }, 0, 0.25), slow, '400 ms beats 1600 ms by far');
  assert.equal(pickHedge([soon, slow], { node: 'fast', ms: 13 }, 0, 0.25), undefined, '1300 ms is not 25% sooner than 1600');
  assert.equal(pickHedge([slow], { node: 'slow', ms: 1 }, 0, 0.25), undefined, 'not its own shard');
  const twice: View = { id: 3, copies: 2, placed: [{ node: 'slow', size: 100, expectedEndMs: 1600 }, { node: 'mid', size: 100, expectedEndMs: 1500 }] };
  assert.equal(pickHedge([twice], { node: 'fast', ms: 1 }, 0, 0.25), undefined, 'two copies are enough');
  assert.equal(pickHedge([slow], { node: 'fast', ms: 1 }, 1600, 0.25), undefined, 'nothing to win on a shard due now');
});

// ---- Ledger ------------------------------------------------------------------------------------

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
