/**
 * Sharded jobs through real agent processes and the real embedded broker (loopback, static peers):
 * one message of many inputs, cut into shards by the elected broker's dispatcher, each input's
 * result streamed to the app exactly once and in input order, and right (the class each digit
 * gets from a single request), when things go wrong:
 *   - malformed jobs get a job error with a stable code, and the mesh serves the next job;
 *   - a board answers its shards with garbage (a rogue MQTT client that advertises the model: NaN,
 *     wrong count, shape or model, not JSON, or only retryable errors): none of it reaches the app;
 *   - a board much slower than the others: the job does not wait for it;
 *   - a board frozen (SIGSTOP), then one SIGKILLed, right after a shard was sent to it, while a
 *     second app connected through that board's own port reconnects and asks again with "from";
 *   - the broker's own board SIGKILLed mid-job: a new broker's dispatcher finishes the job from
 *     where the app was;
 *   - a running job id sent again with another number of inputs: a job error (KZ_ERR_BAD_REQUEST).
 * The tests share one mesh and run in order; each waits for the mesh it needs first. The tap sees
 * every shard, shard result and job on the wire, so faults are injected at known moments.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { topics } from '../../mesh/topics.js';
import { isErrorCode } from '../../mesh/errors.js';
import { MeshWatch } from '../helpers/mesh-watch.js';
import { collect, JobsMesh, JobTap, type ShardEvent } from '../helpers/jobs-mesh.js';
import { RawApp } from '../helpers/jobs-raw.js';
import { RogueAgent, type Garbage } from '../helpers/rogue-agent.js';

const MESH = 'home';
const DISTINCT = 100;
const digits = loadDigits().heldOut.slice(0, DISTINCT);
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % DISTINCT]!.pixels } });
const inputs = (n: number) => Array.from({ length: n }, (_, i) => tensorOf(i));
/** The model's answer to each digit, from single requests (it is wrong on ~2% of digits, everywhere alike). */
const expected: number[] = [];
const want = (i: number) => expected[i % DISTINCT]!;

/** Simulated time per input of the fast boards (the real model takes ~0.1 ms). */
const FAST_MS = 10;
/** The slow board: its first (probe) shard of 2 inputs alone takes longer than the whole job on the fast ones. */
const SLOW_MS = 3000;
const FAST = ['a', 'b', 'c'];
/** Digit i as a raw job item (a tensor in base64). */
const b64 = (i: number) => Buffer.from(digits[i]!.pixels.buffer, digits[i]!.pixels.byteOffset, digits[i]!.pixels.byteLength).toString('base64');
const good = (i: number) => ({ inputs: { input: { dtype: 'float32', shape: [1, 1, 28, 28], b64: b64(i % DISTINCT) } } });

describe('sharded jobs across agent processes', () => {
  let mesh: JobsMesh;
  let watch: MeshWatch;
  let tap: JobTap;
  let client: KizunaClient;

  const roles = () => watch.roles();
  const holder = (role: string) => Object.entries(roles()).find(([, r]) => r === role)?.[0];
  const threeFast = () => watch.until((w) => Object.values(w.roles()).sort().join() === 'agent,broker,standby' && FAST.every((n) => n in w.roles()), 15_000, 'a, b and c online: one broker, one standby, one agent');

  before(async () => {
    mesh = await JobsMesh.plan(FAST, ['--formation-ms', '400', '--rejoin-grace-ms', '1500']);
    await mesh.add('slow');
    await Promise.all(FAST.map((n) => mesh.spawn(n, FAST_MS)));
    watch = await MeshWatch.connect(mesh.urls(FAST), MESH);
    await threeFast();
    // The app and the tap know every board and start on the broker's own: a board killed or
    // frozen in the tests below leaves them alone, until the broker's board is killed.
    const broker = holder('broker')!;
    const urls = [broker, ...FAST.filter((n) => n !== broker)].map((n) => mesh.url(n));
    tap = await JobTap.connect(urls, MESH);
    client = await KizunaClient.connect({ url: urls, mesh: MESH, client: 'jobs-app', keepaliveSeconds: 1, resendMs: 1000, timeoutMs: 20_000 });
    let next = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        for (let i = next++; i < DISTINCT; i = next++) expected[i] = ((await client.infer('digits', tensorOf(i))).answers![0] as { index: number }).index;
      }),
    );
    assert.ok(expected.filter((e, i) => e === digits[i]!.label).length >= DISTINCT * 0.9, 'the model is right on most digits');
  }, { timeout: 40_000 });

  after(async () => {
    await client?.close().catch(() => undefined);
    await tap?.close().catch(() => undefined);
    await watch?.close().catch(() => undefined);
    await mesh?.stopAll();
  });

  test('a malformed job gets a job error with a stable code; the mesh serves the next job', { timeout: 15_000 }, async () => {
    const raw = await RawApp.connect(mesh.url(holder('broker')!), MESH, 'raw');
    try {
      const cases: [string, string, string | Buffer, string][] = [
        ['not-json', 'digits', '{"items": [', 'KZ_ERR_MALFORMED'],
        ['binary', 'digits', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]), 'KZ_ERR_MALFORMED'],
        ['no-items', 'digits', '{"items": []}', 'KZ_ERR_BAD_REQUEST'],
        ['items-not-a-list', 'digits', '{"items": {"image": "x"}}', 'KZ_ERR_BAD_REQUEST'],
        ['unknown-key', 'digits', JSON.stringify({ items: [good(0)], priority: 9 }), 'KZ_ERR_BAD_REQUEST'],
        ['from-past-end', 'digits', JSON.stringify({ items: [good(0)], from: 2 }), 'KZ_ERR_BAD_REQUEST'],
        ['negative-from', 'digits', JSON.stringify({ items: [good(0)], from: -1 }), 'KZ_ERR_BAD_REQUEST'],
        ['unknown-model', 'nope', JSON.stringify({ items: [good(0)] }), 'KZ_ERR_UNKNOWN_MODEL'],
      ];
      for (const [id, model, payload, code] of cases) {
        const msgs = await raw.send(topics.job(MESH, model, 'raw', id), id, payload);
        assert.equal(msgs.length, 1, `${id}: one answer`);
        assert.equal(msgs[0]!.ok, false, `${id}: a job error`);
        assert.equal(msgs[0]!.error?.code, code, `${id}: ${JSON.stringify(msgs[0])}`);
      }
      // A model level that is not one safe segment: the error still reaches the job's reply topic.
      const badName = await raw.send(`kizuna/v1/${MESH}/job/dig.its..x/raw/bad-name`, 'bad-name', JSON.stringify({ items: [good(0)] }));
      assert.equal(badName[0]!.error?.code, 'KZ_ERR_BAD_NAME');

      // Right after: a raw job with one bad input among good ones. The bad one gets its own error
      // (with a stable code), the others their right answers, in order.
      const items = [good(0), good(1), { image: Buffer.from('not an image').toString('base64') }, good(3), { inputs: { input: { dtype: 'float32', shape: [1, 2], b64: b64(4) } } }, good(5)];
      const msgs = await raw.send(topics.job(MESH, 'digits', 'raw', 'mixed'), 'mixed', JSON.stringify({ items }));
      const results = msgs.flatMap((m) => m.results ?? []);
      assert.deepEqual(results.map((r) => r.index), [0, 1, 2, 3, 4, 5]);
      assert.equal(results[2]!.error?.code, 'KZ_ERR_IMAGE_CORRUPT');
      assert.equal(results[4]!.error?.code, 'KZ_ERR_BAD_SHAPE');
      for (const i of [0, 1, 3, 5]) assert.equal(results[i]!.answers![0]!.index, want(i), `input ${i}`);
      // And a job through the client.
      await collect(client.job('digits', inputs(50)), want);
    } finally {
      await raw.close();
    }
  });

  /** Runs a 120-input job while a rogue board of `garbage` is in the mesh; its results must never reach the app. */
  const withRogue = async (garbage: Garbage) => {
    await threeFast();
    const rogue = await RogueAgent.start({ url: mesh.url(holder('broker')!), mesh: MESH, node: `rogue-${garbage}`, model: 'digits', garbage });
    let job: string | undefined;
    try {
      await watch.until((w) => w.roster.get(rogue.node)?.online === true, 5000, 'the rogue in the roster');
      const broker = holder('broker')!;
      const logMark = mesh.members.get(broker)!.stderr().length;
      const run = client.job('digits', inputs(120));
      job = run.id;
      const { agents } = await collect(run, want);
      assert.ok(rogue.shards.length >= 1, 'the rogue was given a shard (an unmeasured board gets one first)');
      assert.ok(!agents.includes(rogue.node), `no result from ${rogue.node} reached the app`);
      return { rogue, broker, logMark };
    } finally {
      await rogue.stop();
      await watch.until((w) => w.roster.get(rogue.node) === undefined, 5000, 'the rogue forgotten (its retained status cleared)');
      // Even when the app gave up on it, the job ends in the dispatcher before the next test.
      if (job) await tap.next(0, (e) => e.kind === 'complete' && e.job === job, 5000, `job ${job} complete`);
    }
  };

  /** Each kind of garbage, and why the dispatcher refuses it (its log says). */
  const garbage: [Garbage, string][] = [
    ['nan-scores', 'an answer has a score that is not a number'],
    ['nan-logits', 'output "?logits"? holds NaN or infinite values'],
    ['wrong-count', '\\d+ results for \\d+ inputs'],
    ['wrong-shape', 'output "?logits"? has shape \\[1,9\\]'],
    ['wrong-model', 'a result is for model "digits-int8", not digits'],
    ['not-json', 'shard result is not valid JSON'],
  ];
  for (const [kind, reason] of garbage) {
    test(`a board that answers with garbage (${kind}): refused, and every input still gets its one right result`, { timeout: 15_000 }, async () => {
      const { rogue, broker, logMark } = await withRogue(kind);
      // The dispatcher refused the shard, and said why in the broker board's log.
      const refused = new RegExp(`refused the results of \\d+-\\d+ from (${rogue.node}|an unknown agent): ${reason}`);
      await mesh.waitForLog(broker, refused, 2000);
      assert.match(mesh.members.get(broker)!.stderr().slice(logMark), refused);
    });
  }

  test('a board whose every inference fails (retryable errors): its inputs run elsewhere, never answered with its error', { timeout: 15_000 }, async () => {
    await withRogue('always-failing');
  });

  test('a board much slower than the others: the job does not wait for it', { timeout: 20_000 }, async () => {
    await threeFast();
    await mesh.spawn('slow', SLOW_MS);
    try {
      await watch.until((w) => w.roster.get('slow')?.online === true, 10_000, 'the slow board online');
      const N = 450;
      const run = client.job('digits', inputs(N));
      const { byAgent, ms } = await collect(run, want);
      assert.ok(tap.events.some((e) => e.kind === 'shard' && e.job === run.id && e.node === 'slow'), `the slow board was given a shard; shards: ${tap.events.filter((e) => e.job === run.id && e.kind === 'shard').map((e) => `${e.node}:${e.start}-${e.end}`).join(' ')}; slow: ${JSON.stringify(watch.roster.get('slow'))}; broker log: ${mesh.members.get(holder('broker')!)!.stderr().slice(-3000)}`);
      // The fast boards alone would take N x FAST_MS / 3 (the slow one adds 0.2% to the mesh's
      // speed); waiting for the slow board's first shard alone would take 2 x SLOW_MS.
      const ideal = (N * FAST_MS) / FAST.length;
      const bound = ideal * 2 + 500;
      assert.ok(bound < 2 * SLOW_MS, 'the bound tells a job that waited for the slow board');
      const slow = byAgent.slow ?? 0;
      console.log(`slow board: ${N} inputs in ${Math.round(ms)} ms (fast boards' ideal ${ideal} ms), by agent ${JSON.stringify(byAgent)}`);
      assert.ok(ms < bound, `makespan ${Math.round(ms)} ms against the fast boards' ideal of ${ideal} ms`);
      assert.ok(slow <= Math.ceil(ms / SLOW_MS) && slow <= N * 0.03, `the slow board answered ${slow} of ${N}`);
    } finally {
      await mesh.signal('slow', 'SIGKILL');
      await watch.until((w) => w.roster.get('slow')?.online === false, 5000, 'the slow board offline');
    }
  });

  /**
   * Two apps run a job each: one through a board that survives, the other through `victim`'s own
   * port (its job first: the dispatcher serves the oldest job first). Once that second app has
   * results and `victim` has returned a shard, the next shard of 5+ inputs sent to `victim` is
   * the moment to send it `signal`: that shard is in its hands, unfinished. The app on its port
   * loses its connection, reconnects through another board and asks again with "from".
   */
  const jobHitting = async (victim: string, signal: NodeJS.Signals) => {
    const others = FAST.filter((x) => x !== victim);
    const side = await KizunaClient.connect({ url: [victim, ...others].map((x) => mesh.url(x)), mesh: MESH, client: `jobs-side-${signal}`, keepaliveSeconds: 1, resendMs: 1000, timeoutMs: 20_000 });
    try {
      const sideRun = side.job('digits', inputs(600));
      const run = client.job('digits', inputs(300));
      const jobs = [run.id, sideRun.id];
      let sideHasResults!: () => void;
      const sideStarted = new Promise<void>((resolve) => (sideHasResults = resolve));
      const hitting = (async () => {
        await sideStarted;
        // From now on (events seen before are history): its next result, then its next shard.
        const first = await tap.next(tap.mark, (e) => e.kind === 'result' && jobs.includes(e.job) && e.node === victim, 10_000, `a result from ${victim}`);
        const from = tap.events.indexOf(first) + 1;
        const hit = await tap.next(from, (e) => e.kind === 'shard' && jobs.includes(e.job) && e.node === victim && e.end - e.start >= 5, 10_000, `another shard of 5+ inputs for ${victim}`);
        await mesh.signal(victim, signal);
        return { hit, mark: tap.mark };
      })();
      const [main, sideCollected, { hit, mark }] = await Promise.all([
        collect(run, want),
        collect(sideRun, want, (k) => void (k === 1 && sideHasResults())),
        hitting,
      ]);
      const served = (hit.job === run.id ? main : sideCollected).agents.slice(hit.start, hit.end);
      assert.ok(served.every((a) => a !== victim), `the shard ${hit.start}-${hit.end} it held was run elsewhere: ${served.join()}`);
      assert.ok(!tap.events.some((e) => e.kind === 'result' && e.job === hit.job && e.node === victim && e.start === hit.start), `${victim} never returned it`);
      const resent = tap.events.slice(mark).find((e) => e.kind === 'job' && e.job === sideRun.id && e.start > 0);
      assert.ok(resent, `the app on ${victim}'s port asked again for the results it lacked ("from" > 0)`);
      return { main, side: sideCollected, resentFrom: resent.start };
    } finally {
      await side.close();
    }
  };

  test('a board frozen (SIGSTOP) mid-job: its shards are run elsewhere, and an app on its port moves on; the jobs end without it', { timeout: 20_000 }, async () => {
    await threeFast();
    const victim = holder('agent')!;
    try {
      const { main, side, resentFrom } = await jobHitting(victim, 'SIGSTOP');
      console.log(`frozen board: the app on its port: 600 inputs in ${Math.round(side.ms)} ms (asked again from ${resentFrom}), by agent ${JSON.stringify(side.byAgent)}; the other app: 300 in ${Math.round(main.ms)} ms`);
      // The broker drops a silent client after 1.5 keepalives (its will marks it offline).
      await watch.until((w) => w.roster.get(victim)?.online === false, 5000, `${victim} offline while frozen`);
    } finally {
      await mesh.signal(victim, 'SIGCONT');
    }
    await watch.until((w) => w.roster.get(victim)?.online === true, 10_000, `${victim} back after SIGCONT`);
  });

  test('a board SIGKILLed mid-job: its shards are run elsewhere, and an app on its port moves on; every input gets its one right result', { timeout: 20_000 }, async () => {
    await threeFast();
    const victim = holder('agent')!;
    const { main, side, resentFrom } = await jobHitting(victim, 'SIGKILL');
    console.log(`killed board: the app on its port: 600 inputs in ${Math.round(side.ms)} ms (asked again from ${resentFrom}), by agent ${JSON.stringify(side.byAgent)}; the other app: 300 in ${Math.round(main.ms)} ms`);
    await watch.until((w) => w.roster.get(victim)?.online === false, 5000, `${victim} offline (its will)`);
  });

  test("the broker's board SIGKILLed mid-job: a new broker is elected and finishes the job from where the app was", { timeout: 30_000 }, async () => {
    for (const n of FAST) {
      const child = mesh.members.get(n)!.child;
      if (child.exitCode !== null || child.signalCode !== null) await mesh.spawn(n, FAST_MS);
    }
    await threeFast();
    const killed = holder('broker')!;
    const N = 600;
    const run = client.job('digits', inputs(N));
    let atKill = 0;
    let elected: Promise<number> | undefined;
    const { ms, byAgent } = await collect(run, want, async (k) => {
      if (k !== 150) return;
      atKill = k;
      await mesh.signal(killed, 'SIGKILL');
      // From when the mesh shows its new broker, every shard comes from the new dispatcher.
      elected = watch
        .until((w) => !(killed in w.roles()) && Object.values(w.roles()).includes('broker'), 10_000, `a broker other than ${killed}`)
        .then(() => tap.mark);
    });
    console.log(`broker killed: ${N} inputs in ${Math.round(ms)} ms, by agent ${JSON.stringify(byAgent)}`);
    const mark = await elected!;
    const successor = holder('broker')!;
    assert.notEqual(successor, killed);
    const later = tap.events.slice(mark).filter((e) => e.kind === 'shard' && e.job === run.id);
    assert.ok(later.length > 0, `the new dispatcher (on ${successor}) sent shards of the job`);
    assert.ok(later.every((e) => e.start >= atKill && e.node !== killed), `it ran only what the app lacked (from ${atKill} on): ${later.map((e) => `${e.node}:${e.start}-${e.end}`).join(' ')}`);
  });

  test(
    'a job id sent again with other inputs while it runs: a job error (KZ_ERR_BAD_REQUEST), never a job that hangs or mixes answers',
    { timeout: 15_000 },
    async () => {
      await watch.until((w) => Object.values(w.roles()).includes('broker'), 10_000, 'a broker');
      const raw = await RawApp.connect(mesh.url(holder('broker')!), MESH, 'raw-reuse');
      try {
        const mark = tap.mark;
        await raw.publish('digits', 'reused', JSON.stringify({ items: Array.from({ length: 120 }, (_, i) => good(i)) }));
        // Its shards are out, one reaching past input 30...
        await tap.next(mark, (e) => e.kind === 'shard' && e.job === 'reused' && e.end > 30, 5000, 'a shard of the first job past input 30');
        // ...when the same id comes again with 30 other inputs (an app restarted with new data).
        const msgs = await raw.send(topics.job(MESH, 'digits', 'raw-reuse', 'reused'), 'reused', JSON.stringify({ items: Array.from({ length: 30 }, (_, i) => good(50 + i)) }));
        const last = msgs.at(-1)!;
        assert.equal(last.ok, false, 'the second job under a running id is refused');
        assert.ok(isErrorCode(last.error?.code), `a job error with a stable code: ${JSON.stringify(last.error)}`);
        assert.equal(last.error?.code, 'KZ_ERR_BAD_REQUEST');
      } finally {
        await raw.close();
      }
    },
  );
});
