import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Semaphore } from '../../agent/semaphore.js';

/** Lets every pending promise continuation run (one macrotask turn; no timer). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

test('never more than N tasks at once, and each waiter starts as a slot frees', async () => {
  const sem = new Semaphore(2);
  const gates = Array.from({ length: 6 }, gate);
  const started: number[] = [];
  let active = 0;
  let most = 0;
  const runs = gates.map((g, i) =>
    sem.run(async () => {
      started.push(i);
      most = Math.max(most, ++active);
      await g.opened;
      active--;
      return i * 10;
    }),
  );
  await settle();
  assert.deepEqual(started, [0, 1]);
  for (let i = 0; i < 6; i++) {
    gates[i]!.open();
    await settle();
    assert.deepEqual(started, [0, 1, 2, 3, 4, 5].slice(0, Math.min(6, i + 3)));
    assert.ok(active <= 2, `${active} running`);
  }
  assert.deepEqual(await Promise.all(runs), [0, 10, 20, 30, 40, 50]);
  assert.equal(most, 2);
});

test('waiters are served in arrival order', async () => {
  const sem = new Semaphore(1);
  await sem.acquire();
  const order: string[] = [];
  for (const name of ['a', 'b', 'c', 'd']) void sem.acquire().then(() => order.push(name));
  await settle();
  assert.deepEqual(order, []);
  for (let i = 1; i <= 4; i++) {
    sem.release();
    await settle();
    assert.deepEqual(order, ['a', 'b', 'c', 'd'].slice(0, i));
  }
});

test('a throwing task releases its slot and its error reaches the caller', async () => {
  const sem = new Semaphore(1);
  const g = gate();
  const failing = sem.run(async () => {
    await g.opened;
    throw new Error('boom');
  });
  let nextRan = false;
  const next = sem.run(async () => (nextRan = true));
  await settle();
  assert.equal(nextRan, false);
  g.open();
  await assert.rejects(failing, /boom/);
  assert.equal(await next, true);
  // A synchronous throw inside an async task is released too.
  await assert.rejects(sem.run(() => { throw new Error('sync'); }), /sync/);
  assert.equal(await sem.run(async () => 'free'), 'free');
});

test('a released slot goes straight to the next waiter, not to a later caller', async () => {
  const sem = new Semaphore(1);
  await sem.acquire();
  const order: string[] = [];
  void sem.acquire().then(() => order.push('waiter'));
  await settle();
  sem.release();
  // Arrives after the release but before the waiter has run: must not take the slot.
  void sem.acquire().then(() => order.push('newcomer'));
  await settle();
  assert.deepEqual(order, ['waiter']);
  sem.release();
  await settle();
  assert.deepEqual(order, ['waiter', 'newcomer']);
});

test('all slots are free again once every task is done', async () => {
  const sem = new Semaphore(3);
  await Promise.all(Array.from({ length: 10 }, (_, i) => sem.run(async () => i)));
  const got: number[] = [];
  for (let i = 0; i < 3; i++) void sem.acquire().then(() => got.push(i));
  void sem.acquire().then(() => got.push(99));
  await settle();
  assert.deepEqual(got, [0, 1, 2]);
});
