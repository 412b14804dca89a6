import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng, type Rng } from '../helpers/prng.js';
import {
  assign,
  initialShards,
  Ledger,
  shouldHedge,
  split,
  stealFrom,
  type AgentRate,
  type Assignment,
  type Shard,
} from '../../broker/planner.js';

// ---- Deterministic generated cases -------------------------------------------------------------

const SEED = 0x706c616e; // 'plan'


const size = (s: Shard) => s.end - s.start;

function agentsOf(rng: Rng, n: number, unknownShare: number, maxCredits: number): AgentRate[] {
  return Array.from({ length: n }, (_, i) => {
    const a: AgentRate = { node: `pi${(i * 7919) % 1000}-${i}`, credits: rng.int(maxCredits + 1) };
    if (rng.next() >= unknownShare) a.rate = 1 + rng.next() * 399;
    return a;
  });
}

/** Every index of 0..end-1 exactly once, in order, with ids from the bounds. */
function assertCovers(shards: Shard[], start: number, end: number) {
  let at = start;
  for (const s of shards) {
    assert.equal(s.start, at, `gap or overlap at ${at}`);
    assert.ok(s.end > s.start || (start === end), `empty shard ${s.id}`);
    assert.equal(s.id, `s${s.start}-${s.end}`);
    at = s.end;
  }
  assert.equal(at, end);
}

// ---- initialShards -----------------------------------------------------------------------------

test('initialShards: 1,000 generated jobs cover every input once, in order, within bounds, tail not larger', () => {
  const rng = prng(SEED);
  for (let job = 0; job < 1000; job++) {
    const total = rng.range(1, 20000);
    const agents = agentsOf(rng, rng.range(1, 32), [0, 0, 0.2, 0.5, 1][rng.int(5)]!, 4);
    const minShard = rng.range(1, 50);
    const maxShard = minShard * 2 + rng.int(2000);
    const targetShardMs = rng.range(50, 2000);
    const shards = initialShards(total, agents, { targetShardMs, minShard, maxShard });
    assertCovers(shards, 0, total);
    for (const [i, s] of shards.entries()) {
      assert.ok(size(s) <= maxShard, `job ${job}: ${s.id} above maxShard ${maxShard}`);
      if (total >= minShard) assert.ok(size(s) >= minShard, `job ${job}: ${s.id} below minShard ${minShard}`);
      if (i > 0) assert.ok(size(s) <= size(shards[i - 1]!), `job ${job}: ${s.id} larger than the shard before`);
    }
    assert.deepEqual(initialShards(total, rng.shuffle(agents), { targetShardMs, minShard, maxShard }), shards, 'agent order matters');
  }
});

test('initialShards: sized to targetShardMs at the median rate, unknown rates count as the slowest', () => {
  const opts = { targetShardMs: 500, minShard: 1, maxShard: 10_000 };
  const rated = (rates: (number | undefined)[]): AgentRate[] =>
    rates.map((rate, i) => (rate === undefined ? { node: `n${i}`, credits: 2 } : { node: `n${i}`, rate, credits: 2 }));
  // Median 100/s x 0.5 s = 50 inputs; last 20% at 25.
  const s = initialShards(10_000, rated([10, 100, 400]), opts);
  assert.equal(size(s[0]!), 50);
  assert.equal(size(s[s.length - 1]!), 25);
  assert.equal(s.filter((x) => x.start >= 8000).every((x) => size(x) === 25), true);
  // Two unknowns count as 10/s: median of [10, 10, 10, 100, 400] is 10 -> 5 inputs.
  assert.equal(size(initialShards(10_000, rated([10, 100, 400, undefined, undefined]), opts)[0]!), 5);
  // Nothing known: minShard (7,000 = 1,000 x 7; no tail phase, as half of 7 is below minShard).
  assert.ok(initialShards(7_000, rated([undefined, undefined]), { ...opts, minShard: 7 }).every((x) => size(x) === 7));
  // Capped so every agent gets a shard: 100 inputs on 10 fast agents -> at most 10 each.
  assert.ok(initialShards(100, rated(Array(10).fill(400)), opts).length >= 10);
  assert.deepEqual(initialShards(0, rated([10]), opts), []);
  assert.deepEqual(initialShards(3, rated([10]), { ...opts, minShard: 5 }), [{ id: 's0-3', start: 0, end: 3 }]);
});

// ---- assign ------------------------------------------------------------------------------------

/**
 * Straightforward reference: replay, and for each shard scan every agent for the soonest finisher
 * with a credit; past the balanced end of all work, hold it for a busy measured agent that is sooner.
 */
function referenceAssign(pending: Shard[], agents: AgentRate[], load: Record<string, number>, slack: number): Assignment[] {
  const ok = (r?: number) => r !== undefined && r > 0 && Number.isFinite(r);
  const slowest = Math.min(...agents.filter((a) => ok(a.rate)).map((a) => a.rate!));
  const given = new Map<string, number>();
  const queued = new Map(agents.map((a) => [a.node, load[a.node] ?? 0]));
  const cap = (a: AgentRate) => (ok(a.rate) ? a.credits : (load[a.node] ?? 0) > 0 ? 0 : Math.min(1, a.credits));
  const known = agents.filter((a) => ok(a.rate));
  const speed = known.reduce((s, a) => s + a.rate!, 0);
  const work = known.reduce((s, a) => s + ((load[a.node] ?? 0) * a.rate!) / 1000, 0) + pending.reduce((s, x) => s + size(x), 0);
  const horizon = speed > 0 ? (work / speed) * 1000 : Infinity;
  const out: Assignment[] = [];
  for (const shard of pending) {
    const all = agents
      .map((a) => {
        const r = ok(a.rate) ? a.rate! : slowest;
        const ms = Number.isFinite(r) ? (size(shard) / r) * 1000 : 0;
        return { a, ms, end: queued.get(a.node)! + ms, free: (given.get(a.node) ?? 0) < cap(a) };
      })
      .sort((x, y) => x.end - y.end || (x.a.node < y.a.node ? -1 : 1));
    const best = all.find((x) => x.free);
    if (!best) break;
    const busy = all.find((x) => !x.free && ok(x.a.rate) && queued.get(x.a.node)! > 0);
    if (ok(best.a.rate) && best.end > horizon && busy && busy.end < best.end) break;
    given.set(best.a.node, (given.get(best.a.node) ?? 0) + 1);
    queued.set(best.a.node, best.end);
    const deadlineMs = ok(best.a.rate) ? Math.max(1000, best.ms * slack) : Math.max(30_000, best.ms * slack);
    out.push({ shard, node: best.a.node, deadlineMs });
  }
  return out;
}

test('assign: 3,000 small generated cases match the soonest-finisher reference, within credits, deterministic', () => {
  const rng = prng(SEED + 1);
  for (let c = 0; c < 3000; c++) {
    const agents = agentsOf(rng, rng.range(1, 6), rng.next() * 0.6, 3);
    const load: Record<string, number> = {};
    for (const a of agents) if (rng.next() < 0.5) load[a.node] = rng.int(3) * 250; // ties are common
    let at = 0;
    const pending = Array.from({ length: rng.int(10) }, () => {
      const start = at;
      at += rng.range(1, 4) * 50;
      return { id: `s${start}-${at}`, start, end: at };
    });
    const got = assign(pending, agents, load, { slack: 3 });
    assert.deepEqual(got, referenceAssign(pending, agents, load, 3), `case ${c}`);
    assert.deepEqual(assign(pending, rng.shuffle(agents), load, { slack: 3 }), got, `case ${c}: agent order matters`);
    assert.deepEqual(got.map((x) => x.shard), pending.slice(0, got.length), 'not a prefix of pending');
    for (const a of agents) {
      const n = got.filter((x) => x.node === a.node).length;
      assert.ok(n <= Math.max(0, a.credits), `case ${c}: ${a.node} over its credits`);
      if (a.rate === undefined) assert.ok(n <= ((load[a.node] ?? 0) > 0 ? 0 : 1), `case ${c}: unmeasured ${a.node} got ${n}`);
    }
    const room = agents.reduce((sum, a) => sum + (a.rate === undefined ? Math.min(1, a.credits) * ((load[a.node] ?? 0) > 0 ? 0 : 1) : a.credits), 0);
    const idle = agents.every((a) => !((load[a.node] ?? 0) > 0));
    // Nothing is busy at the start, so the first shard cannot be held for anyone.
    if (idle && room > 0 && pending.length > 0) assert.ok(got.length >= 1, `case ${c}: nothing assigned`);
    if (room === 0) assert.equal(got.length, 0);
  }
});

test('assign: deadlines are expected time x slack with a floor, generous for unmeasured agents', () => {
  const pending = [{ id: 's0-100', start: 0, end: 100 }, { id: 's100-101', start: 100, end: 101 }];
  const got = assign(pending, [{ node: 'a', rate: 10, credits: 1 }, { node: 'b', credits: 1 }], {}, { slack: 3 });
  assert.deepEqual(got, [
    { shard: pending[0], node: 'a', deadlineMs: 30_000 }, // 10 s x 3
    { shard: pending[1], node: 'b', deadlineMs: 30_000 }, // unmeasured default
  ]);
  const fast = assign([pending[1]!], [{ node: 'a', rate: 400, credits: 1 }], {}, { slack: 3, floorMs: 800 });
  assert.equal(fast[0]!.deadlineMs, 800);
  assert.deepEqual(assign(pending, [{ node: 'a', rate: 10, credits: 0 }], {}, { slack: 3 }), []);
});

test('assign: at the tail, a shard waits for a busy fast board rather than go to a slow free one', () => {
  const pi5 = { node: 'pi5', rate: 400, credits: 0 }, pi3 = { node: 'pi3', rate: 10, credits: 1 };
  const last = [{ id: 's0-100', start: 0, end: 100 }];
  // The Pi 5 frees a slot in 250 ms and would finish at 500 ms; the Pi 3 would take 10 s.
  assert.deepEqual(assign(last, [pi5, pi3], { pi5: 250 }, { slack: 3 }), []);
  // Plenty of work left (the balanced end is far away): the Pi 3 helps.
  const many = Array.from({ length: 100 }, (_, i) => ({ id: `s${i * 100}-${i * 100 + 100}`, start: i * 100, end: i * 100 + 100 }));
  assert.equal(assign(many, [pi5, pi3], { pi5: 250 }, { slack: 3 })[0]?.node, 'pi3');
  // An unmeasured board is never held back: one shard measures it.
  assert.equal(assign(last, [pi5, { node: 'new', credits: 1 }], { pi5: 250 }, { slack: 3 })[0]?.node, 'new');
});

// ---- stealFrom, split, shouldHedge -------------------------------------------------------------

test('stealFrom: the last queued shard of the most loaded agent, never the idle one, never a running shard', () => {
  const rng = prng(SEED + 2);
  for (let c = 0; c < 1000; c++) {
    const queued = new Map<string, Shard[]>();
    const running = new Set<string>();
    let at = 0;
    const nodes = rng.shuffle(['a', 'b', 'c', 'd', 'e']).slice(0, rng.range(1, 5));
    for (const node of nodes) {
      const run = { id: `s${at}-${at + 10}`, start: at, end: (at += 10) };
      running.add(run.id);
      queued.set(node, Array.from({ length: rng.int(4) }, () => ({ id: '', start: at, end: (at += rng.range(1, 3) * 10) })));
    }
    const idle = rng.next() < 0.5 ? nodes[0]! : 'z';
    const got = stealFrom(queued, idle);
    const loads = [...queued].filter(([n, q]) => n !== idle && q.length).map(([n, q]) => ({ n, l: q.reduce((s, x) => s + size(x), 0) }));
    if (loads.length === 0) { assert.equal(got, undefined); continue; }
    const max = Math.max(...loads.map((x) => x.l));
    const from = loads.filter((x) => x.l === max).map((x) => x.n).sort()[0]!;
    assert.equal(got?.from, from);
    assert.equal(got.shard, queued.get(from)!.at(-1));
    assert.ok(!running.has(got.shard.id));
  }
});

test('split: contiguous sub-shards covering the shard exactly, ids from bounds', () => {
  const rng = prng(SEED + 3);
  for (let c = 0; c < 1000; c++) {
    const start = rng.int(1000), end = start + rng.range(1, 300), parts = rng.range(1, 400);
    const got = split({ id: `s${start}-${end}`, start, end }, parts);
    assertCovers(got, start, end);
    assert.equal(got.length, Math.min(parts, end - start));
    assert.ok(Math.max(...got.map(size)) - Math.min(...got.map(size)) <= 1);
  }
  assert.deepEqual(split({ id: 's0-5', start: 0, end: 5 }, 0), [{ id: 's0-5', start: 0, end: 5 }]);
});

test('shouldHedge: only after hedgeAfter x expected time, and only with an idle agent', () => {
  const r = { shard: { id: 's0-10', start: 0, end: 10 }, node: 'a', startedMs: 1000, expectedMs: 500 };
  const o = { hedgeAfter: 2 };
  assert.equal(shouldHedge(r, 1999, 1, o), false);
  assert.equal(shouldHedge(r, 2000, 1, o), true);
  assert.equal(shouldHedge(r, 9000, 0, o), false);
  assert.equal(shouldHedge({ ...r, expectedMs: NaN }, 9000, 1, o), false);
  assert.equal(shouldHedge({ ...r, expectedMs: Infinity }, 9000, 1, o), false);
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

// ---- Simulated execution -----------------------------------------------------------------------

interface SimAgent { node: string; trueRate: number; rate?: number; queue: Shard[]; running?: { shard: Shard; end: number } }

/**
 * A tiny event simulation of the dispatcher: each agent has `slots` credits (one running, the rest
 * queued); whenever anything finishes, free credits are refilled by assign(), and an agent with
 * nothing to do steals when it would finish the stolen shard (or its later half) sooner.
 */
function simulate(total: number, trueRates: number[], o: { slots: number; unknown: boolean }): number {
  const agents: SimAgent[] = trueRates.map((r, i) => ({ node: `a${String(i).padStart(2, '0')}`, trueRate: r, queue: [], ...(o.unknown && i % 2 ? {} : { rate: r }) }));
  const view = (): AgentRate[] => agents.map((a) => ({ node: a.node, credits: o.slots - a.queue.length - (a.running ? 1 : 0), ...(a.rate ? { rate: a.rate } : {}) }));
  let pending = initialShards(total, view(), { targetShardMs: 500, minShard: 1, maxShard: 1000 });
  const ledger = new Ledger<number>(total);
  let t = 0;
  const msLeft = (a: SimAgent) => (a.running ? (a.running.end - t) * 1000 : 0) + (a.rate ? a.queue.reduce((s, x) => s + size(x), 0) / a.rate * 1000 : a.queue.length);
  for (let guard = 0; !ledger.isComplete; guard++) {
    assert.ok(guard < 1e6, 'simulation does not end');
    const load = Object.fromEntries(agents.map((a) => [a.node, msLeft(a)]));
    const given = assign(pending, view(), load, { slack: 3 });
    pending = pending.slice(given.length);
    for (const g of given) agents.find((a) => a.node === g.node)!.queue.push(g.shard);
    for (const a of agents) {
      if (a.running || a.queue.length || pending.length || !a.rate) continue;
      const queued = new Map(agents.map((b) => [b.node, b.queue]));
      const stolen = stealFrom(queued, a.node);
      if (!stolen) continue;
      const owner = agents.find((b) => b.node === stolen.from)!;
      const ownerEnd = t + msLeft(owner) / 1000;
      for (const piece of [stolen.shard, split(stolen.shard, 2).at(-1)!]) {
        if (t + size(piece) / a.rate >= ownerEnd) continue;
        owner.queue.pop();
        if (piece !== stolen.shard) owner.queue.push(split(stolen.shard, 2)[0]!);
        a.queue.push(piece);
        break;
      }
    }
    for (const a of agents) {
      if (!a.running && a.queue.length) {
        const shard = a.queue.shift()!;
        a.running = { shard, end: t + size(shard) / a.trueRate };
      }
    }
    const next = agents.filter((a) => a.running).sort((x, y) => x.running!.end - y.running!.end)[0]!;
    t = next.running!.end;
    for (let i = next.running!.shard.start; i < next.running!.shard.end; i++) ledger.accept(i, i);
    next.rate = next.trueRate; // measured
    next.running = undefined;
  }
  return t;
}

test('simulated execution: makespan within 1.15x of ideal on 1x/2x/4x boards for large jobs', () => {
  const meshes: [string, number[]][] = [
    ['1x,2x,4x', [10, 20, 40]],
    ['2 each of 1x,2x,4x', [10, 10, 20, 20, 40, 40]],
    ['1 fast, 7 slow', [40, 10, 10, 10, 10, 10, 10, 10]],
    ['16 mixed', Array.from({ length: 16 }, (_, i) => [10, 20, 40][i % 3]!)],
    ['Pi 5 beside Pi 3 x4', [400, 100, 100, 100, 100]],
    // Before assign() held tail shards for the fast board, 200-3,000 inputs on these took up to 4x-80x the ideal.
    ['1/s beside 400/s', [1, 400]],
    ['spread 3..390/s', [3, 7, 50, 120, 300, 390]],
  ];
  const report: string[] = [];
  for (const [name, rates] of meshes) {
    for (const total of [5000, 20000]) {
      for (const unknown of [false, true]) {
        for (const slots of [2, 4]) {
          const ideal = total / rates.reduce((s, r) => s + r, 0);
          const ratio = simulate(total, rates, { slots, unknown }) / ideal;
          report.push(`${name} total=${total} slots=${slots}${unknown ? ' half-unknown' : ''}: ${ratio.toFixed(3)}`);
          assert.ok(ratio <= 1.15, `${name}, ${total} inputs, slots ${slots}, unknown ${unknown}: makespan ${ratio.toFixed(3)}x ideal`);
        }
      }
    }
  }
  if (process.env.PLANNER_REPORT) console.log(report.join('\n'));
});
