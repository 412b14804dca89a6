/**
 * Jobs end to end on a simulated mesh (test/helpers/jobs-sim.ts): the real Dispatcher and Jobs on
 * an in-memory broker and a virtual clock, agents with a true time per input, an app collecting
 * the job's result messages. Deterministic: no timers, no sleeps, seeded inputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng } from '../helpers/prng.js';
import { Sim, SimApp, goodResult, itemOf, type AgentSpec, type Received } from '../helpers/jobs-sim.js';
import type { ItemResult, JobResultItem } from '../../mesh/jobs.js';

const SEED = 0x6a6f6273; // 'jobs'
const items = (n: number, pad = 0) => Array.from({ length: n }, (_, i) => itemOf(i, pad));

/** 12 boards: four each at 16, 8 and 4 ms per input (1x, 2x, 4x). */
const HETERO: AgentSpec[] = [16, 8, 4].flatMap((ms, s) => Array.from({ length: 4 }, (_, k) => ({ node: `pi${s}${k}`, ms })));
/** Six boards, two of each speed. */
const SIX = HETERO.filter((_, i) => i % 4 < 2);
const rateOf = (agents: AgentSpec[]) => agents.reduce((r, a) => r + 1 / a.ms, 0);
/** Defaults of jobs.ts the bounds below are derived from. */
const TARGET_MS = 500;
const SLACK = 3;

const overloaded: ItemResult = { ok: false, error: { code: 'KZ_ERR_OVERLOADED', message: 'queue full' } };
const corrupt: ItemResult = { ok: false, error: { code: 'KZ_ERR_IMAGE_CORRUPT', message: 'not a PNG' } };

/**
 * What the app relies on: inputs from..n-1 once each, in order across the messages (each message's
 * `from` is its first index), `complete` on the last message only, each with its own result.
 */
function assertExactlyOnce(msgs: Received[], n: number, opts: { from?: number; what?: string; error?: (i: number) => string | undefined } = {}) {
  const { from = 0, what = 'job', error = () => undefined } = opts;
  const ok = msgs.filter((r) => r.msg.ok);
  assert.equal(ok.length, msgs.length, `${what}: no job error`);
  const results: JobResultItem[] = ok.flatMap((r) => (r.msg.ok ? r.msg.results : []));
  assert.deepEqual(results.map((r) => r.index), Array.from({ length: n - from }, (_, k) => from + k), `${what}: indices in order, once each`);
  for (const r of results) {
    const code = error(r.index);
    if (code) {
      assert.ok(!r.ok && r.error.code === code, `${what}: input ${r.index} should be ${code}: ${JSON.stringify(r)}`);
      continue;
    }
    assert.ok(r.ok, `${what}: input ${r.index} failed: ${JSON.stringify(r)}`);
    assert.equal((r.answers as { index: number }[])[0]!.index, r.index % 10, `${what}: input ${r.index} has another input's answer`);
  }
  let at = from;
  for (const [k, r] of ok.entries()) {
    if (!r.msg.ok) continue;
    assert.equal(r.msg.complete, k === ok.length - 1, `${what}: complete on the last message only`);
    if (r.msg.results.length) assert.equal(r.msg.from, at, `${what}: a message's from is its first index`);
    at += r.msg.results.length;
  }
  return results;
}

/** A mesh whose speeds are measured: a warm-up job first. */
async function warmed(agents: AgentSpec[], warm = 1200) {
  const sim = await Sim.create({ agents });
  sim.app.send('warm', items(warm));
  sim.runJob('warm');
  assertExactlyOnce(sim.app.of('warm'), warm, { what: 'warm-up' });
  return sim;
}

// ---- 1, 2: speed ---------------------------------------------------------------------------------

test('1x/2x/4x boards: every result once, in order; makespan within 1.1x of inputs / sum of rates; shares by speed', async () => {
  const sim = await warmed(HETERO);
  const n = 6000;
  sim.app.send('main', items(n));
  const makespan = sim.runJob('main');
  assertExactlyOnce(sim.app.of('main'), n);
  const ideal = n / rateOf(HETERO); // 3429 ms
  assert.ok(makespan <= 1.1 * ideal, `makespan ${makespan} ms, ideal ${ideal.toFixed(0)} ms`);
  const last = sim.app.of('main').at(-1)!.msg;
  assert.ok(last.ok);
  for (const a of HETERO) {
    const expected = (n * (1 / a.ms)) / rateOf(HETERO);
    const got = last.progress.by_agent[a.node] ?? 0;
    assert.ok(Math.abs(got - expected) <= 0.1 * expected, `${a.node} (${a.ms} ms/input) ran ${got} inputs, its share is ${expected.toFixed(0)}`);
  }
  assert.equal(last.progress.done, n);
  assert.deepEqual(sim.violations, []);
});

// ---- 3, 4: failures --------------------------------------------------------------------------------

for (const detectMs of [300, 3000]) {
  test(`a 4x board dies halfway (its will ${detectMs} ms later): exactly once, makespan within 1.25x of the ideal with the kill`, async () => {
    const sim = await warmed(HETERO);
    const n = 6000, R = rateOf(HETERO), victim = sim.agent('pi20');
    const t0 = sim.clock.now, tk = n / R / 2;
    sim.app.send('main', items(n));
    sim.clock.at(t0 + tk, () => victim.kill(detectMs));
    const makespan = sim.runJob('main');
    assertExactlyOnce(sim.app.of('main'), n);
    // Its rate counts until the kill only (as in the scaling benchmark).
    const ideal = tk + (n - R * tk) / (R - 1 / victim.spec.ms); // 3714 ms
    assert.ok(makespan <= 1.25 * ideal, `makespan ${makespan} ms, ideal with the kill ${ideal.toFixed(0)} ms`);
    assert.equal(sim.bus.shards.filter((s) => s.node === 'pi20' && s.t >= t0 + tk + detectMs).length, 0, 'no shard for a dead board');
    const { stats } = sim.dispatcher.jobs;
    if (t0 + tk + detectMs < sim.clock.now) assert.ok(stats.requeued > 0, 'its shards went back to pending when its will came');
    else assert.ok(stats.late > 0 && stats.hedged > 0, 'its shards were found late and copied before its will came');
    assert.deepEqual(sim.violations, []);
  });
}

test('a board slowed 20x mid-job: its shards are found late and copied; the job ends long before that board would', async () => {
  const sim = await warmed(HETERO);
  const n = 6000, R = rateOf(HETERO), slow = sim.agent('pi20');
  const t0 = sim.clock.now, ts = n / R / 2;
  slow.slowdown = { at: t0 + ts, factor: 20 };
  sim.app.send('main', items(n));
  const makespan = sim.runJob('main');
  assertExactlyOnce(sim.app.of('main'), n);
  const { stats } = sim.dispatcher.jobs;
  assert.ok(stats.late > 0 && stats.hedged > 0, JSON.stringify(stats));
  // Without copies the job would end when the slowed board ends what it was given.
  const given = slow.received.filter((r) => r.t >= t0).map((r) => r.ref.end - r.ref.start);
  const slowEnds = given.reduce((t, size) => slow.finishAt(t, size), t0) - t0;
  // The ideal counts its full rate until the slowdown, 1/20 of it after (ts + ~2.0 s). The slowed
  // board holds its 2 slots of shards of TARGET_MS each; a copy is late SLACK x TARGET_MS after it
  // should have started, the later one starting TARGET_MS after the slowdown: both are late by
  // ts + 4 x TARGET_MS; a copy then waits at most a tick and one shard for a slot and runs at most
  // TARGET_MS elsewhere: the lost work is redone by ts + ~3.1 s. So the job ends within one
  // SLACK x TARGET_MS (1.5 s) of the ideal; waiting for the slowed board would take ~12 s more.
  const r = 1 / slow.spec.ms;
  const ideal = ts + (n - R * ts) / (R - r + r / 20); // 3698 ms
  assert.ok(makespan <= ideal + SLACK * TARGET_MS, `makespan ${makespan} ms, ideal ${ideal.toFixed(0)} ms`);
  assert.ok(makespan < slowEnds / 2, `makespan ${makespan} ms, the slowed board ends at ${slowEnds.toFixed(0)} ms`);
  assert.deepEqual(sim.violations, []);
});

test('a board that loses its connection: its shards are sent again when it is back, each result still once', async () => {
  const sim = await warmed(SIX);
  const n = 3000, flaky = sim.agent('pi10');
  const t0 = sim.clock.now;
  sim.app.send('main', items(n));
  sim.clock.at(t0 + 500, () => flaky.disconnect());
  sim.clock.at(t0 + 900, () => flaky.reconnect());
  sim.runJob('main');
  assertExactlyOnce(sim.app.of('main'), n);
  assert.ok(flaky.duplicates > 0, 'what it held was sent again (and absorbed)');
  assert.ok(flaky.answered.some((a) => a.t > t0 + 900), 'it works on after reconnecting');
  assert.deepEqual(sim.violations, []);
});

// ---- 5: garbage ----------------------------------------------------------------------------------

const GARBAGE: Record<string, (rs: ItemResult[]) => unknown[]> = {
  'one result too few': (rs) => rs.slice(1),
  'NaN in an output tensor': (rs) =>
    rs.map((r) => (r.ok ? { ...r, outputs: { logits: { dtype: 'float32', shape: [1, 10], b64: Buffer.from(new Float32Array(10).fill(NaN).buffer).toString('base64') } } } : r)),
  'an output of the wrong shape': (rs) => rs.map((r) => (r.ok ? { ...r, outputs: { logits: { dtype: 'float32', shape: [1, 9], data: new Array(9).fill(0.1) } } } : r)),
  'results of another model': (rs) => rs.map((r) => (r.ok ? { ...r, model: 'mnist' } : r)),
};

for (const [kind, tamper] of Object.entries(GARBAGE)) {
  test(`a board that returns garbage (${kind}): refused, every input still answered once by others, no shards for a while`, async () => {
    const distrustMs = 5000;
    const agents: AgentSpec[] = [...Array.from({ length: 5 }, (_, k) => ({ node: `good${k}`, ms: 8 })), { node: 'bad', ms: 4, tamper }];
    const sim = await Sim.create({ agents, jobs: { distrustMs } });
    const n = 2000;
    sim.app.send('j', items(n));
    const makespan = sim.runJob('j');
    const results = assertExactlyOnce(sim.app.of('j'), n);
    assert.ok(results.every((r) => r.agent !== 'bad'), 'nothing from the bad board');
    assert.ok(sim.dispatcher.jobs.stats.garbage >= 1);
    const bad = sim.agent('bad');
    const refusedAt = bad.answered[0]!.t;
    assert.deepEqual(sim.bus.shards.filter((s) => s.node === 'bad' && s.t > refusedAt).map((s) => s.t), [], 'no shard after its garbage');
    assert.ok(makespan <= 1.1 * (n / (5 / 8)), `makespan ${makespan} ms: the good boards did it all`);
    // Another job inside the distrust window: still nothing; after it: tried again.
    sim.app.send('k', items(500));
    sim.runJob('k');
    assert.equal(sim.bus.shards.filter((s) => s.node === 'bad' && s.t > refusedAt).length, 0, 'still distrusted');
    sim.run(() => sim.clock.now > refusedAt + distrustMs + 200);
    sim.app.send('l', items(500));
    sim.runJob('l');
    assertExactlyOnce(sim.app.of('l'), 500, { what: 'job after the distrust' });
    assert.ok(sim.bus.shards.some((s) => s.node === 'bad' && s.ref.job === 'l'), 'trusted again after distrustMs');
    assert.deepEqual(sim.violations, []);
  });
}

test(
  'a measured board that sends garbage once: its other shards are run elsewhere at once, the job is not held up',
  async () => {
    let when = Infinity;
    const bad: AgentSpec = {
      node: 'bad', ms: 4,
      tamper: (rs, _ref, a) => (a.answered.at(-1)!.t >= when && when !== -1 ? ((when = -1), rs.slice(1)) : rs),
    };
    const agents: AgentSpec[] = [...Array.from({ length: 5 }, (_, k) => ({ node: `good${k}`, ms: 8 })), bad];
    const sim = await warmed(agents, 500);
    const n = 3000, R = rateOf(agents), t0 = sim.clock.now;
    when = t0 + 1000; // its first shard to end after 1 s of the job is garbage; it has another queued
    sim.app.send('j', items(n));
    const makespan = sim.runJob('j');
    assertExactlyOnce(sim.app.of('j'), n);
    const tg = sim.agent('bad').answered.find((a) => a.t >= t0 + 1000)!.t - t0;
    const ideal = tg + (n - R * tg) / (R - 1 / 4); // its rate counts until its garbage
    assert.ok(makespan <= 1.1 * ideal, `makespan ${makespan} ms, ideal ${ideal.toFixed(0)} ms`);
  },
);

// ---- 6: errors per input -----------------------------------------------------------------------

test('a final error (KZ_ERR_IMAGE_CORRUPT) is that input\'s result, once; a passing KZ_ERR_OVERLOADED is run again', async () => {
  const bad = (i: number) => (i % 13 === 0 ? 'KZ_ERR_IMAGE_CORRUPT' : undefined);
  const answer = (i: number): ItemResult => (bad(i) ? corrupt : goodResult(i));
  // 'busy' is overloaded for its first two shards, then works.
  const busy: AgentSpec = { node: 'busy', ms: 4, answer: (i, a) => (a.answered.length <= 2 ? overloaded : answer(i)) };
  const agents: AgentSpec[] = [...Array.from({ length: 4 }, (_, k) => ({ node: `ok${k}`, ms: 8, answer })), busy];
  const sim = await Sim.create({ agents });
  const n = 2000;
  sim.app.send('j', items(n));
  sim.runJob('j');
  const results = assertExactlyOnce(sim.app.of('j'), n, { error: bad });
  const last = sim.app.of('j').at(-1)!.msg;
  assert.ok(last.ok);
  assert.equal(last.progress.failed, results.filter((r) => !r.ok).length);
  assert.equal(last.progress.failed, Math.ceil(n / 13));
  assert.ok(sim.dispatcher.jobs.stats.requeued > 0, 'the overloaded inputs went back to pending');
  assert.deepEqual(sim.violations, []);
});

test(
  'a board that answers KZ_ERR_OVERLOADED to every input: those inputs are run elsewhere, no app sees OVERLOADED',
  async () => {
    const agents: AgentSpec[] = [
      ...Array.from({ length: 4 }, (_, k) => ({ node: `ok${k}`, ms: 8 })),
      // Refuses at once (its queue is full), as agent/worker.ts does.
      { node: 'busy', ms: 0.01, answer: () => overloaded },
    ];
    const sim = await Sim.create({ agents });
    const n = 2000;
    sim.app.send('j', items(n));
    sim.runJob('j');
    const failed = sim.app.results('j').filter((r) => !r.ok).length;
    assert.equal(failed, 0, `${failed} of ${n} inputs ended in KZ_ERR_OVERLOADED`);
    assertExactlyOnce(sim.app.of('j'), n);
  },
);

// ---- 7: asking again -----------------------------------------------------------------------------

test('the app asks again: from == what it has gets progress; from k gets k.. once; a finished job gets complete', async () => {
  const sim = await Sim.create({ agents: SIX });
  const n = 3000;
  sim.app.send('j', items(n));
  sim.run(() => sim.app.results('j').length >= 1000);

  // It lost nothing: a progress message (no results), and the stream goes on without a duplicate.
  const have = sim.app.results('j').length;
  const m1 = sim.app.of('j').length;
  sim.app.send('j', items(n), { from: have });
  const reply = sim.app.of('j').slice(m1);
  assert.equal(reply.length, 1);
  assert.ok(reply[0]!.msg.ok && reply[0]!.msg.results.length === 0 && !reply[0]!.msg.complete && reply[0]!.msg.from === have);

  sim.run(() => sim.app.results('j').length >= 2000);
  const next = sim.app.results('j', m1).map((r) => r.index);
  assert.deepEqual(next, Array.from({ length: next.length }, (_, i) => have + i), 'the stream goes on from where it was, no duplicate');

  // It lost results after k (a failover, a reconnect): it gets k.. once each, in order.
  const k = 1234;
  const m2 = sim.app.of('j').length;
  sim.app.send('j', items(n), { from: k });
  sim.runJob('j');
  assertExactlyOnce(sim.app.of('j').slice(m2), n, { from: k, what: 'after from k' });
  assert.equal(sim.dispatcher.jobs.stats.jobs, 1, 'the same job, not a new one');

  // Finished: from == total gets one complete message and nothing runs; from k < total runs k.. again.
  const shards = sim.bus.shards.length;
  const m3 = sim.app.of('j').length;
  sim.app.send('j', items(n), { from: n });
  const done = sim.app.of('j').slice(m3);
  assert.equal(done.length, 1);
  assert.ok(done[0]!.msg.ok && done[0]!.msg.complete && done[0]!.msg.from === n && done[0]!.msg.results.length === 0);
  assert.equal(sim.bus.shards.length, shards, 'nothing ran again');
  const m4 = sim.app.of('j').length;
  sim.app.send('j', items(n), { from: n - 100 });
  sim.runJob('j');
  assertExactlyOnce(sim.app.of('j').slice(m4), n, { from: n - 100, what: 'finished job, from total - 100' });
  assert.deepEqual(sim.violations, []);
});

test('a broker failover: the new dispatcher runs the job from where the app is, late results of old shards count', async () => {
  const sim = await Sim.create({ agents: SIX });
  const n = 3000;
  sim.app.send('j', items(n));
  sim.run(() => sim.app.results('j').length >= 1200);
  await sim.failover();
  const tf = sim.clock.now;
  const k = sim.app.results('j').length;
  const m = sim.app.of('j').length;
  // The agents go on with what the old broker gave them while the app reconnects (100 ms).
  sim.clock.after(100, () => sim.app.send('j', items(n), { from: k }));
  sim.runJob('j', undefined, m);
  const results = assertExactlyOnce(sim.app.of('j').slice(m), n, { from: k, what: 'after the failover' });
  // Results no shard of the new dispatcher asked for: they came from the old broker's shards.
  const old = results.filter((r) => !sim.agent(r.agent).received.some((x) => x.t >= tf && x.ref.start <= r.index && r.index < x.ref.end));
  assert.ok(old.length > 0, 'late results of the old shards were used');
  assert.deepEqual(sim.violations, []);
});

/** Inputs the dispatcher sent (in a shard's first copy) after `since` that an agent had already answered to it since `since`. */
function rerunAfter(sim: Sim, job: string, since: number): number {
  const sent = new Set<string>();
  const firstCopies = sim.bus.shards.filter((s) => {
    const key = `${s.ref.job}/${s.ref.start}-${s.ref.end}`;
    const first = !sent.has(key);
    sent.add(key);
    return first && s.ref.job === job && s.t >= since;
  });
  let n = 0;
  for (const s of firstCopies) {
    for (let i = s.ref.start; i < s.ref.end; i++) {
      if (sim.bus.shardResults.some((r) => r.ref.job === job && r.t >= since && r.t < s.t && r.ref.start <= i && i < r.ref.end)) n++;
    }
  }
  return n;
}

test(
  'after a failover, inputs the old broker\'s shards answered are not run again',
  async () => {
    const sim = await Sim.create({ agents: SIX });
    const n = 3000, R = rateOf(SIX);
    sim.app.send('j', items(n));
    sim.run(() => sim.app.results('j').length >= 1200);
    await sim.failover();
    const k = sim.app.results('j').length;
    sim.app.send('j', items(n), { from: k });
    const t = sim.clock.now;
    const makespan = sim.runJob('j');
    const rerun = rerunAfter(sim, 'j', t);
    assert.equal(rerun, 0, `${rerun} inputs ran again (makespan ${makespan} ms, ideal ${((n - k) / R).toFixed(0)} ms)`);
  },
);

// ---- 8: bad jobs ---------------------------------------------------------------------------------

test('bad jobs get a job error with a stable code; the job running beside them is untouched', async () => {
  const sim = await Sim.create({ agents: SIX, jobs: { maxJobBytes: 200_000, maxJobItems: 5000 } });
  const n = 2000;
  sim.app.send('good', items(n));
  const expected: Record<string, string> = {};
  sim.clock.at(sim.clock.now + 300, () => {
    const bad = (id: string, code: string, send: () => void) => ((expected[id] = code), send());
    bad('b1', 'KZ_ERR_MALFORMED', () => sim.app.raw('b1', Buffer.from('{"items": [')));
    bad('b2', 'KZ_ERR_BAD_REQUEST', () => sim.app.raw('b2', Buffer.from('{"items":[]}')));
    bad('b3', 'KZ_ERR_UNKNOWN_MODEL', () => sim.app.send('b3', items(10), {}, 'nope'));
    bad('b4', 'KZ_ERR_TOO_LARGE', () => sim.app.send('b4', items(3000, 100)));
    bad('b5', 'KZ_ERR_BAD_REQUEST', () => sim.app.send('b5', items(10), { from: 11 }));
    bad('b6', 'KZ_ERR_TOO_MANY_ELEMENTS', () => sim.app.send('b6', items(5001)));
    bad('b7', 'KZ_ERR_BAD_REQUEST', () => sim.app.raw('b7', Buffer.from('{"items":[{}],"colour":"red"}')));
    bad('b8', 'KZ_ERR_BAD_REQUEST', () => sim.app.raw('b8', Buffer.from('{"items":"all of them"}')));
    bad('b9', 'KZ_ERR_BAD_NAME', () => void sim.bus.publish('kizuna/v1/home/job/bad+model/app/b9', Buffer.from('{"items":[{}]}')));
  });
  sim.runJob('good');
  for (const [id, code] of Object.entries(expected)) {
    const msgs = sim.app.of(id);
    assert.equal(msgs.length, 1, `${id}: one message`);
    const msg = msgs[0]!.msg;
    assert.ok(!msg.ok && msg.id === id, `${id}: a job error`);
    assert.equal(msg.error.code, code, `${id}: ${msg.error.message}`);
    assert.ok(msg.error.message.length > 0);
  }
  assert.equal(sim.bus.shards.filter((s) => s.ref.job !== 'good').length, 0, 'no shard of a bad job');
  assertExactlyOnce(sim.app.of('good'), n);
  assert.equal(sim.dispatcher.jobs.running, 0);
});

// ---- 9: shards -------------------------------------------------------------------------------------

/** A job of 1,500 inputs of 20 to 700 bytes each, with a 4 KB shard budget. */
async function budgeted() {
  const rng = prng(SEED);
  const n = 1500, maxShardBytes = 4000;
  const its = Array.from({ length: n }, (_, i) => itemOf(i, rng.range(20, 700)));
  const sim = await Sim.create({ agents: SIX, jobs: { maxShardBytes } });
  sim.app.send('j', its, { top_k: 3 });
  sim.runJob('j');
  assertExactlyOnce(sim.app.of('j'), n);
  return { sim, maxShardBytes };
}

test('each shard holds exactly the job\'s items of its range, with the job\'s options', async () => {
  const { sim } = await budgeted();
  assert.ok(sim.bus.shards.length > 100);
  assert.deepEqual(sim.violations, []);
  for (const s of sim.bus.shards) assert.equal(JSON.parse(s.payload.toString()).top_k, 3);
});

test('no shard is over the byte budget (maxShardBytes)', async () => {
  const { sim, maxShardBytes } = await budgeted();
  const over = sim.bus.shards.filter((s) => s.payload.length > maxShardBytes).map((s) => `${s.ref.start}-${s.ref.end}: ${s.payload.length} bytes`);
  assert.deepEqual(over, []);
});

test('two apps: a small job sent right after a big one of another app is not queued behind it', async () => {
  const sim = await warmed(SIX);
  const other = new SimApp(sim, 'app2');
  await other.start();
  const t0 = sim.clock.now;
  sim.app.send('big', items(3000));
  other.send('small', items(60));
  sim.run(() => other.completedAt('small') !== undefined && sim.app.completedAt('big') !== undefined);
  assertExactlyOnce(sim.app.of('big'), 3000);
  assertExactlyOnce(other.of('small'), 60);
  const small = other.completedAt('small')! - t0;
  const big = sim.app.completedAt('big')! - t0;
  // Served in turn, the small job is not held until the big one is handed out (it was: it ended
  // after it). It still waits behind the shard already queued on the board it gets (2 slots each).
  assert.ok(small < 0.5 * big, `small job done at ${small} ms, big at ${big} ms`);
  assert.deepEqual(sim.violations, []);
});
