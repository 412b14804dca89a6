/**
 * Placement on one board: the pure policy (models/placement.ts) case by case and as a property
 * over random request sequences, then the residency that acts on it (models/residency.ts) with
 * sessions that cost nothing, so every interleaving is driven by the test: concurrent requests
 * share one load, a model in use is never released, the queue is fair, loads that fail, models
 * dropped while in use, and an async property over random acquire/release sequences. Last, the
 * model store with onnxruntime and the built-in models: cold models, files changed since start, unload.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { KizunaError } from '../../mesh/errors.js';
import type { ModelSession } from '../../models/engine.js';
import {
  AUTO_MIN_BYTES, autoBudget, decide, estimateBytes, fitsNow, footprint, MEASURE_CAP_FACTOR, overflow, usedBytes, type Resident,
} from '../../models/placement.js';
import { Residency, type Candidate, type Lease } from '../../models/residency.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { ModelStore, PACKAGE_BUILTIN_DIR } from '../../models/store.js';
import { modelFolders } from '../helpers/model-folders.js';

const MiB = 1024 * 1024;
const r = (name: string, bytes: number, lastUsed: number, inUse = 0, loading = false): Resident => ({ name, bytes, lastUsed, inUse, ...(loading ? { loading } : {}) });

// ---------------------------------------------------------------- the numbers

test('the estimate is 3x the file and 1 MiB; a measure counts between the estimate and 8x it', () => {
  assert.equal(estimateBytes(0), MiB);
  assert.equal(estimateBytes(10 * MiB), 31 * MiB);
  assert.equal(estimateBytes(-5), MiB);
  const e = estimateBytes(3_655_640); // MobileNetV2 int8: 11.5 MB, its measured 10-11 MB
  assert.ok(e > 11 * MiB && e < 12 * MiB);
  assert.equal(footprint(e), e, 'nothing measured: the estimate');
  assert.equal(footprint(e, e / 2), e, 'never below the estimate (memory freed meanwhile is not the model\'s)');
  assert.equal(footprint(e, 2 * e), 2 * e);
  assert.equal(footprint(e, 100 * e), MEASURE_CAP_FACTOR * e, 'capped: another request\'s buffers are not the model\'s');
  assert.equal(footprint(e, Number.NaN), e);
});

test('the automatic budget is 40% of the memory, never under 64 MiB', () => {
  assert.equal(autoBudget(1024 * MiB), Math.floor(0.4 * 1024 * MiB));
  assert.equal(autoBudget(8192 * MiB), Math.floor(0.4 * 8192 * MiB));
  assert.equal(autoBudget(100 * MiB), AUTO_MIN_BYTES);
  assert.equal(autoBudget(0), AUTO_MIN_BYTES);
});

// ---------------------------------------------------------------- decide

test('decide: a resident or loading model is a hit', () => {
  assert.deepEqual(decide(10, [r('a', 5, 1)], { name: 'a', bytes: 5 }), { kind: 'hit' });
  assert.deepEqual(decide(10, [r('a', 5, 1, 0, true)], { name: 'a', bytes: 5 }), { kind: 'hit' });
});

test('decide: no budget loads everything, evicting nothing', () => {
  const many = Array.from({ length: 20 }, (_, i) => r(`m${i}`, 1e9, i));
  assert.deepEqual(decide(0, many, { name: 'x', bytes: 1e12 }), { kind: 'load', evict: [], over: false });
  assert.deepEqual(decide(-1, many, { name: 'x', bytes: 1 }), { kind: 'load', evict: [], over: false });
});

test('decide: room left, it loads beside the others', () => {
  assert.deepEqual(decide(10, [r('a', 4, 1), r('b', 3, 2)], { name: 'c', bytes: 3 }), { kind: 'load', evict: [], over: false });
});

test('decide: idle models go least recently used first, only as many as needed', () => {
  const resident = [r('new', 3, 9), r('old', 3, 1), r('mid', 3, 5)];
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 3 }), { kind: 'load', evict: ['old'], over: false });
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 7 }), { kind: 'load', evict: ['old', 'mid'], over: false });
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 10 }), { kind: 'load', evict: ['old', 'mid', 'new'], over: false });
});

test('decide: equal ages evict by name (every board decides the same)', () => {
  assert.deepEqual(decide(6, [r('b', 3, 1), r('a', 3, 1)], { name: 'x', bytes: 3 }), { kind: 'load', evict: ['a'], over: false });
});

test('decide: a model in use or loading is never evicted; older idle ones are, past it', () => {
  const resident = [r('busy', 3, 1, 2), r('idle', 3, 5), r('coming', 3, 6, 0, true)];
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 4 }), { kind: 'load', evict: ['idle'], over: false });
});

test('decide: when only busy models stand in the way it waits for the fewest, oldest first', () => {
  const resident = [r('b1', 4, 1, 1), r('b2', 4, 2, 1), r('idle', 2, 9)];
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 5 }), { kind: 'wait', until: ['b1'] });
  assert.deepEqual(decide(10, resident, { name: 'x', bytes: 9 }), { kind: 'wait', until: ['b1', 'b2'] });
  assert.deepEqual(decide(10, [r('l', 8, 3, 0, true)], { name: 'x', bytes: 5 }), { kind: 'wait', until: ['l'] });
});

test('decide: a model bigger than the budget loads alone, once nothing else is loaded', () => {
  assert.deepEqual(decide(10, [], { name: 'big', bytes: 50 }), { kind: 'load', evict: [], over: true });
  assert.deepEqual(decide(10, [r('a', 2, 1), r('b', 2, 2)], { name: 'big', bytes: 50 }), { kind: 'load', evict: ['a', 'b'], over: true });
  assert.deepEqual(decide(10, [r('a', 2, 1, 1), r('b', 2, 2)], { name: 'big', bytes: 50 }), { kind: 'wait', until: ['a'] });
});

test('overflow: idle models past the budget, oldest first, never the last one', () => {
  assert.deepEqual(overflow(10, [r('a', 6, 1), r('b', 6, 2)]), ['a']);
  assert.deepEqual(overflow(10, [r('a', 6, 1, 1), r('b', 6, 2)]), ['b']);
  assert.deepEqual(overflow(10, [r('a', 6, 1, 1), r('b', 6, 2, 1)]), []);
  assert.deepEqual(overflow(10, [r('a', 60, 1)]), []);
  assert.deepEqual(overflow(10, [r('a', 4, 1), r('b', 4, 2)]), []);
  assert.deepEqual(overflow(0, [r('a', 60, 1), r('b', 60, 2)]), []);
});

test('fitsNow: at start a model loads beside the others while they fit, or when nothing is loaded', () => {
  assert.equal(fitsNow(10, [], 50), true);
  assert.equal(fitsNow(10, [r('a', 5, 1)], 5), true);
  assert.equal(fitsNow(10, [r('a', 5, 1)], 6), false);
  assert.equal(fitsNow(0, [r('a', 5, 1)], 600), true);
});

// ---------------------------------------------------------------- the property of the policy

type Op = { kind: 'start'; model: number } | { kind: 'end'; pick: number };

test('property: after any sequence of requests the budget holds unless one model is loaded; no model in use is evicted; evictions are least recently used', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
      fc.integer({ min: 1, max: 80 }),
      fc.array(fc.oneof(fc.record({ kind: fc.constant('start' as const), model: fc.nat(5) }), fc.record({ kind: fc.constant('end' as const), pick: fc.nat(50) })), { maxLength: 120 }),
      (sizes, budget, ops: Op[]) => {
        const resident = new Map<string, Resident>();
        const running: string[] = [];
        const waiting: string[] = [];
        let clock = 0;
        const check = () => {
          const list = [...resident.values()];
          assert.ok(usedBytes(list) <= budget || list.length === 1, `${usedBytes(list)} bytes in ${list.length} models, budget ${budget}`);
          for (const m of list) assert.equal(m.inUse, running.filter((x) => x === m.name).length);
        };
        // Serves the waiting requests in order while they can (what the residency does).
        const serve = () => {
          while (waiting.length) {
            const name = waiting[0]!;
            const bytes = sizes[Number(name.slice(1))]!;
            const list = [...resident.values()];
            const d = decide(budget, list, { name, bytes });
            if (d.kind === 'wait') {
              for (const u of d.until) assert.ok(resident.get(u)!.inUse > 0 || resident.get(u)!.loading, `waits for idle ${u}`);
              return;
            }
            waiting.shift();
            if (d.kind === 'load') {
              const idle = list.filter((x) => x.inUse === 0);
              for (const e of d.evict) {
                const victim = resident.get(e);
                assert.ok(victim, `evicts ${e}, which is not resident`);
                assert.equal(victim.inUse, 0, `evicted ${e} while in use`);
                // Every idle model kept is more recent than every one evicted.
                for (const kept of idle.filter((x) => !d.evict.includes(x.name))) assert.ok(kept.lastUsed > victim.lastUsed, `kept ${kept.name} older than evicted ${e}`);
                resident.delete(e);
              }
              if (d.over) assert.equal(resident.size, 0, 'over the budget only alone');
              resident.set(name, { name, bytes, lastUsed: 0, inUse: 0 });
            }
            const m = resident.get(name)!;
            m.inUse++;
            m.lastUsed = ++clock;
            running.push(name);
            check();
          }
        };
        for (const op of ops) {
          if (op.kind === 'start') {
            const model = op.model % sizes.length;
            waiting.push(`m${model}`);
          } else if (running.length) {
            const name = running.splice(op.pick % running.length, 1)[0]!;
            resident.get(name)!.inUse--;
          }
          serve();
          check();
        }
        // Every request ends: everything waiting is served, nothing is stuck.
        while (running.length) {
          resident.get(running.pop()!)!.inUse--;
          serve();
        }
        assert.deepEqual(waiting, []);
      },
    ),
    { seed: 6, numRuns: 400 },
  );
});

// ---------------------------------------------------------------- the residency, with free sessions

/** A board of fake models: sessions that count what is open, rss that grows as sessions open. */
class Board {
  rss = 100 * MiB;
  open = new Map<string, number>();
  opened = 0;
  released: string[] = [];
  /** Loads wait on these (by model name) when set. */
  gates = new Map<string, Promise<void>>();
  failNext = new Set<string>();
  /** What a session really takes, by model (default: its estimate). */
  real = new Map<string, number>();

  candidate(name: string, fileBytes: number): Candidate {
    return {
      key: name,
      name,
      fileBytes,
      read: async () => Buffer.alloc(0),
      open: async () => {
        await this.gates.get(name);
        if (this.failNext.delete(name)) throw new KizunaError('KZ_ERR_MODEL_LOAD', `${name} cannot load`);
        const grows = this.real.get(name) ?? estimateBytes(fileBytes);
        this.rss += grows;
        this.open.set(name, (this.open.get(name) ?? 0) + 1);
        this.opened++;
        const session: ModelSession = {
          inputNames: ['x'],
          outputNames: ['y'],
          run: async () => ({}),
          release: async () => {
            this.released.push(name);
            this.open.set(name, this.open.get(name)! - 1);
            this.rss -= grows;
          },
        };
        return { session, measurable: true };
      },
    };
  }
}

/** A file size whose estimate is `mib` MiB. */
const file = (mib: number) => ((mib - 1) * MiB) / 3;
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

function residency(board: Board, budgetMiB: number, waitMs?: number): Residency {
  return new Residency({ budget: budgetMiB * MiB, rss: () => board.rss, ...(waitMs !== undefined ? { waitMs } : {}) });
}

test('residency: concurrent requests for a cold model share one load, and each says how long it waited', async () => {
  const board = new Board();
  const res = residency(board, 100);
  const g = gate();
  board.gates.set('a', g.promise);
  const a = board.candidate('a', file(10));
  const leases = [res.acquire(a), res.acquire(a), res.acquire(a)];
  await tick();
  assert.equal(res.isWarm('a'), false, 'loading is not warm');
  g.open();
  const got = await Promise.all(leases);
  assert.equal(board.opened, 1);
  for (const l of got) assert.equal(typeof l.loadMs, 'number');
  assert.equal(res.isWarm('a'), true);
  const again = await res.acquire(a);
  assert.equal(again.loadMs, undefined, 'in memory: no load');
  for (const l of [...got, again]) l.release();
  await res.close();
  assert.deepEqual(board.released, ['a']);
});

test('residency: loads within the budget, then evicts the least recently used idle model', async () => {
  const board = new Board();
  const res = residency(board, 25);
  const loaded: string[] = [];
  const evicted: string[] = [];
  res.on('loaded', (e: { name: string }) => loaded.push(e.name));
  res.on('evicted', (e: { name: string; why: string }) => evicted.push(`${e.name}:${e.why}`));
  const [a, b, c] = ['a', 'b', 'c'].map((n) => board.candidate(n, file(10)));
  for (const m of [a!, b!, a!]) (await res.acquire(m)).release();
  assert.deepEqual(loaded, ['a', 'b']);
  assert.equal(res.used, 20 * MiB);
  (await res.acquire(c!)).release();
  assert.deepEqual(evicted, ['b:lru'], 'b was used before a');
  assert.deepEqual(res.resident().map((x) => x.name), ['a', 'c']);
  await res.close();
});

test('residency: a model in use is never released; the next load waits for it, then replaces it', async () => {
  const board = new Board();
  const res = residency(board, 15);
  const a = board.candidate('a', file(10));
  const b = board.candidate('b', file(10));
  const holdA = await res.acquire(a);
  let gotB: Lease | undefined;
  const pendingB = res.acquire(b).then((l) => (gotB = l));
  await tick();
  assert.equal(gotB, undefined, 'b waits while a runs');
  assert.equal(board.open.get('a'), 1);
  // A new request for a queues behind b (else a busy model would never let b in).
  let gotA2: Lease | undefined;
  const pendingA2 = res.acquire(a).then((l) => (gotA2 = l));
  await tick();
  assert.equal(gotA2, undefined);
  holdA.release();
  await pendingB;
  assert.equal(board.open.get('a'), 0, 'a released once idle');
  assert.equal(board.open.get('b'), 1);
  await tick();
  assert.equal(gotA2, undefined, 'a waits for b now');
  gotB!.release();
  await pendingA2;
  assert.deepEqual(board.released, ['a', 'b']);
  gotA2!.release();
  await res.close();
});

test('residency: while one request waits, requests for other models in memory are served', async () => {
  const board = new Board();
  const res = residency(board, 25);
  const [a, b, c] = ['a', 'b', 'c'].map((n) => board.candidate(n, file(10)));
  const holdA = await res.acquire(a!);
  (await res.acquire(b!)).release();
  const holdB = await res.acquire(b!);
  const pendingC = res.acquire(c!);
  await tick();
  // c waits for a (the older one); b is in memory and not waited on.
  const b2 = await res.acquire(b!);
  b2.release();
  holdA.release();
  (await pendingC).release();
  assert.deepEqual(board.released, ['a']);
  holdB.release();
  await res.close();
});

test('residency: a model bigger than the budget loads alone', async () => {
  const board = new Board();
  const res = residency(board, 10);
  const small = board.candidate('small', file(4));
  const big = board.candidate('big', file(30));
  (await res.acquire(small)).release();
  const l = await res.acquire(big);
  assert.deepEqual(res.resident().map((x) => x.name), ['big']);
  assert.equal(res.used, 30 * MiB);
  l.release();
  (await res.acquire(small)).release();
  assert.deepEqual(res.resident().map((x) => x.name), ['small']);
  await res.close();
});

test('residency: the footprint is what the load measured (within the cap), and the next load expects as much', async () => {
  const board = new Board();
  const res = residency(board, 100);
  board.real.set('a', 30 * MiB);
  const a = board.candidate('a', file(10));
  const sizes: number[] = [];
  res.on('loaded', (e: { bytes: number }) => sizes.push(e.bytes));
  (await res.acquire(a)).release();
  assert.equal(res.used, 30 * MiB);
  board.real.set('b', 1000 * MiB);
  (await res.acquire(board.candidate('b', file(10)))).release();
  assert.deepEqual(sizes, [30 * MiB, 80 * MiB], 'b capped at 8x its estimate');
  await res.close();
});

test('residency: a footprint over its estimate makes idle models leave to fit the budget again', async () => {
  const board = new Board();
  const res = residency(board, 25);
  (await res.acquire(board.candidate('a', file(10)))).release();
  board.real.set('b', 20 * MiB);
  (await res.acquire(board.candidate('b', file(10)))).release();
  assert.deepEqual(res.resident().map((x) => x.name), ['b']);
  await res.close();
});

test('residency: preload loads what fits beside the others, or the first model whatever its size', async () => {
  const board = new Board();
  const res = residency(board, 25);
  assert.equal(await res.preload(board.candidate('huge', file(40))), true);
  assert.equal(await res.preload(board.candidate('a', file(10))), false);
  await res.close();
  const res2 = residency(board, 25);
  assert.equal(await res2.preload(board.candidate('a', file(10))), true);
  assert.equal(await res2.preload(board.candidate('b', file(10))), true);
  assert.equal(await res2.preload(board.candidate('c', file(10))), false, 'cold: it would need an eviction');
  assert.deepEqual(res2.resident().map((x) => x.name), ['a', 'b']);
  await res2.close();
  const unlimited = residency(board, 0);
  for (const n of ['x', 'y', 'z']) assert.equal(await unlimited.preload(board.candidate(n, file(1000))), true);
  await unlimited.close();
});

test('residency: a load that fails refuses its waiters, frees its place, and the next request tries again', async () => {
  const board = new Board();
  const res = residency(board, 25);
  const a = board.candidate('a', file(10));
  board.failNext.add('a');
  const results = await Promise.allSettled([res.acquire(a), res.acquire(a)]);
  for (const x of results) assert.equal(x.status === 'rejected' && (x.reason as KizunaError).code, 'KZ_ERR_MODEL_LOAD');
  assert.equal(res.used, 0);
  (await res.acquire(a)).release();
  assert.equal(res.isWarm('a'), true);
  await res.close();
});

test('residency: a model dropped while in use is released when its last inference ends; its waiters are refused', async () => {
  const board = new Board();
  const res = residency(board, 15);
  const a = board.candidate('a', file(10));
  const b = board.candidate('b', file(10));
  const holdA = await res.acquire(a);
  const holdB = res.acquire(b); // waits for a
  await tick();
  res.drop('b');
  await assert.rejects(holdB, (e: KizunaError) => e.code === 'KZ_ERR_UNKNOWN_MODEL');
  res.drop('a');
  assert.equal(res.isWarm('a'), false);
  assert.equal(board.open.get('a'), 1, 'still running');
  holdA.release();
  assert.equal(board.open.get('a'), 0);
  await res.close();
});

test('residency: a request that waits longer than waitMs for busy memory is refused as overloaded', async () => {
  const board = new Board();
  const res = residency(board, 15, 20);
  const holdA = await res.acquire(board.candidate('a', file(10)));
  await assert.rejects(res.acquire(board.candidate('b', file(10))), (e: KizunaError) => e.code === 'KZ_ERR_OVERLOADED' && /waited 20 ms/.test(e.message));
  // The refused request no longer blocks a.
  (await res.acquire(board.candidate('a', file(10)))).release();
  holdA.release();
  await res.close();
});

test('residency: close refuses the waiting requests and releases every session', async () => {
  const board = new Board();
  const res = residency(board, 15);
  const holdA = await res.acquire(board.candidate('a', file(10)));
  const waiting = res.acquire(board.candidate('b', file(10)));
  await res.close();
  await assert.rejects(waiting, (e: KizunaError) => e.code === 'KZ_ERR_SHUTTING_DOWN');
  await assert.rejects(res.acquire(board.candidate('a', file(10))), (e: KizunaError) => e.code === 'KZ_ERR_SHUTTING_DOWN');
  assert.deepEqual(board.released, ['a']);
  holdA.release();
});

test('property: the residency keeps sessions within the budget (or one alone), never releases one in use, and serves every request', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 5 }),
      fc.integer({ min: 5, max: 60 }),
      fc.array(fc.oneof(fc.record({ acquire: fc.nat(4) }), fc.record({ release: fc.nat(30) }), fc.constant({ settle: true })), { maxLength: 60 }),
      async (sizes, budgetMiB, ops) => {
        const board = new Board();
        const res = residency(board, budgetMiB);
        const held: { name: string; lease: Lease }[] = [];
        const pending = new Set<Promise<void>>();
        const running = new Map<string, number>();
        const check = () => {
          const live = [...board.open.entries()].filter(([, n]) => n > 0);
          const bytes = live.reduce((s, [name]) => s + estimateBytes(file(sizes[Number(name.slice(1))]!)), 0);
          assert.ok(bytes <= budgetMiB * MiB || live.length <= 1, `${live.length} sessions of ${bytes / MiB} MiB, budget ${budgetMiB}`);
          for (const [name, n] of running) if (n > 0) assert.equal(board.open.get(name), 1, `${name} released while ${n} inferences run`);
        };
        for (const op of ops) {
          if ('acquire' in op) {
            const i = op.acquire % sizes.length;
            const name = `m${i}`;
            const p = res.acquire(board.candidate(name, file(sizes[i]!))).then((lease) => {
              running.set(name, (running.get(name) ?? 0) + 1);
              held.push({ name, lease });
              check();
            });
            pending.add(p);
            void p.finally(() => pending.delete(p));
          } else if ('release' in op) {
            if (held.length) {
              const { name, lease } = held.splice(op.release % held.length, 1)[0]!;
              running.set(name, running.get(name)! - 1);
              lease.release();
            }
          }
          await tick();
          check();
        }
        // Everyone finishes in turn: every request is served in the end.
        while (held.length || pending.size) {
          await tick();
          const h = held.shift();
          if (h) {
            running.set(h.name, running.get(h.name)! - 1);
            h.lease.release();
          }
          check();
        }
        await res.close();
        assert.ok([...board.open.values()].every((n) => n === 0), 'every session released at close');
      },
    ),
    { seed: 6, numRuns: 150 },
  );
});

// ---------------------------------------------------------------- the store, with onnxruntime

const folders = modelFolders('placement-store');
test.after(() => folders.remove());
const builtin = (f: string) => fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, f));
const digitsFolder = () =>
  folders.folder(Object.fromEntries(['digits.json', 'digits.onnx', 'digits-int8.json', 'digits-int8.onnx'].map((f) => [f, builtin(f)])));
const zeros = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: new Float32Array(784) } };

test('store: with a budget for one, the second model is served cold; a request loads it and unloads the first', async (t) => {
  const store = new ModelStore(new OnnxEngine(), {}, undefined, { budgetBytes: 3 * MiB });
  t.after(() => store.close());
  await store.loadFolders([digitsFolder()]);
  assert.deepEqual(store.problems, []);
  assert.deepEqual(store.list().map((m) => m.manifest.name), ['digits-int8', 'digits']);
  assert.deepEqual([...store.memory().warm], ['digits-int8']);
  const lease = await store.acquire('digits');
  assert.ok(lease && lease.loadMs !== undefined);
  assert.deepEqual([...store.memory().warm], ['digits']);
  assert.deepEqual((await lease.model.session.run(zeros)).logits!.shape, [1, 10]);
  lease.release();
  assert.equal(await store.acquire('nope'), undefined);
  assert.equal(await store.acquire('digits', '9.9.9'), undefined);
  // get()'s session loads a cold model too (what tests and tools call).
  assert.deepEqual((await store.get('digits-int8')!.session.run(zeros)).logits!.shape, [1, 10]);
  assert.deepEqual([...store.memory().warm], ['digits-int8']);
});

test('store: a cold model whose file changed since start fails its request and is no longer served', async (t) => {
  const dir = digitsFolder();
  const store = new ModelStore(new OnnxEngine(), {}, undefined, { budgetBytes: 3 * MiB });
  t.after(() => store.close());
  await store.loadFolders([dir]);
  const changes: string[] = [];
  store.on('unservable', (e: { name: string; code: string }) => changes.push(`${e.name}:${e.code}`));
  const onnx = path.join(dir, 'digits.onnx');
  fs.writeFileSync(onnx, Buffer.concat([builtin('digits.onnx'), Buffer.from('tampered')]));
  await assert.rejects(store.acquire('digits'), (e: KizunaError) => e.code === 'KZ_ERR_MODEL_INTEGRITY');
  assert.deepEqual(changes, ['digits:KZ_ERR_MODEL_INTEGRITY']);
  assert.equal(store.get('digits'), undefined);
  assert.equal(store.problems.at(-1)?.code, 'KZ_ERR_MODEL_INTEGRITY');
  // The other model still serves (it was unloaded to make room for the load that failed: loaded again).
  const lease = await store.acquire('digits-int8');
  assert.deepEqual((await lease!.model.session.run(zeros)).logits!.shape, [1, 10]);
  lease!.release();
});

test('store: unload stops serving a model; its session goes when its last inference ends', async (t) => {
  const store = new ModelStore(new OnnxEngine());
  t.after(() => store.close());
  await store.loadFolders([digitsFolder()]);
  assert.deepEqual([...store.memory().warm].sort(), ['digits', 'digits-int8'], 'no budget: all loaded at start');
  const lease = (await store.acquire('digits'))!;
  const evicted: string[] = [];
  store.on('evicted', (e: { name: string; why: string }) => evicted.push(`${e.name}:${e.why}`));
  assert.equal(await store.unload('digits'), true);
  assert.equal(store.get('digits'), undefined);
  assert.deepEqual(evicted, []);
  assert.deepEqual((await lease.model.session.run(zeros)).logits!.shape, [1, 10], 'the running inference keeps its session');
  lease.release();
  assert.deepEqual(evicted, ['digits:dropped']);
});
