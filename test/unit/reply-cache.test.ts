import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyCache, type CachedReply } from '../../agent/reply-cache.js';

/** A cache on a hand-driven clock. */
function cache(maxEntries: number, ttlMs: number) {
  const clock = { now: 1_000 };
  return { clock, c: new ReplyCache(maxEntries, ttlMs, () => clock.now) };
}
const reply = (n: number): CachedReply => ({ topic: `kizuna/v1/home/res/app/${n}`, payload: Buffer.from(`reply ${n}`) });
const keys = (c: ReplyCache, all: string[]) => all.filter((k) => c.get(k) !== undefined);

test('get returns what set stored, by key; unknown keys give undefined', () => {
  const { c } = cache(10, 1_000);
  const [r1, r2] = [reply(1), reply(2)];
  c.set('app/1', r1);
  c.set('app/2', r2);
  assert.equal(c.get('app/1'), r1);
  assert.equal(c.get('app/2'), r2);
  assert.equal(c.get('app/3'), undefined);
  assert.equal(c.size, 2);
  c.set('app/1', r2);
  assert.equal(c.get('app/1'), r2, 'a second set replaces the reply');
  assert.equal(c.size, 2);
});

test('an entry lives exactly ttlMs: kept at the boundary, gone one ms later', () => {
  const { c, clock } = cache(10, 100);
  c.set('k', reply(1));
  clock.now += 100;
  assert.deepEqual(c.get('k'), reply(1));
  clock.now += 1;
  assert.equal(c.get('k'), undefined);
  assert.equal(c.size, 0, 'an expired entry is dropped when read');
  clock.now -= 1; // the clock going back does not revive it
  assert.equal(c.get('k'), undefined);
});

test('ttlMs 0 keeps an entry for the same millisecond only', () => {
  const { c, clock } = cache(10, 0);
  c.set('k', reply(1));
  assert.ok(c.get('k'));
  clock.now += 1;
  assert.equal(c.get('k'), undefined);
});

test('beyond maxEntries the oldest entries are evicted first', () => {
  const { c, clock } = cache(3, 60_000);
  for (let i = 1; i <= 5; i++) {
    c.set(`k${i}`, reply(i));
    clock.now += 1;
  }
  assert.equal(c.size, 3);
  assert.deepEqual(keys(c, ['k1', 'k2', 'k3', 'k4', 'k5']), ['k3', 'k4', 'k5']);
});

test('re-setting a key moves it to the newest place and restarts its ttl', () => {
  const { c, clock } = cache(2, 100);
  c.set('a', reply(1));
  clock.now += 90;
  c.set('b', reply(2));
  c.set('a', reply(3)); // a is now newer than b
  c.set('c', reply(4)); // evicts b, not a
  assert.deepEqual(keys(c, ['a', 'b', 'c']), ['a', 'c']);
  clock.now += 100; // 190 ms after a's first set, 100 after its second
  assert.deepEqual(c.get('a'), reply(3));
});

test('reading does not change the eviction order (oldest written goes first)', () => {
  const { c } = cache(2, 1_000);
  c.set('a', reply(1));
  c.set('b', reply(2));
  assert.ok(c.get('a'));
  c.set('c', reply(3));
  assert.deepEqual(keys(c, ['a', 'b', 'c']), ['b', 'c']);
});

test('maxEntries 0 disables the cache', () => {
  const { c } = cache(0, 60_000);
  c.set('k', reply(1));
  assert.equal(c.get('k'), undefined);
  assert.equal(c.size, 0);
});

test('maxEntries 1 keeps only the last reply', () => {
  const { c } = cache(1, 60_000);
  c.set('a', reply(1));
  c.set('b', reply(2));
  assert.deepEqual(keys(c, ['a', 'b']), ['b']);
  assert.equal(c.size, 1);
});

test('expired entries never take a slot from a live one', () => {
  const { c, clock } = cache(2, 100);
  c.set('old-1', reply(1));
  c.set('old-2', reply(2));
  clock.now += 101;
  c.set('new', reply(3));
  assert.equal(c.size, 1, 'both expired entries were dropped when a new one arrived');
  c.set('newer', reply(4));
  assert.deepEqual(keys(c, ['new', 'newer']), ['new', 'newer']);
});

test('the cache keeps to its byte budget, dropping the oldest replies first', () => {
  const big = (n: number): CachedReply => ({ topic: `t/${n}`, payload: Buffer.alloc(400) });
  const c = new ReplyCache(100, 60_000, () => 0, 1000);
  c.set('a', big(1));
  c.set('b', big(2));
  assert.equal(c.bytes, 800);
  c.set('c', big(3));
  assert.equal(c.bytes, 800, 'a went to make room for c');
  assert.deepEqual(keys(c, ['a', 'b', 'c']), ['b', 'c']);
  c.set('huge', { topic: 't/h', payload: Buffer.alloc(2000) });
  assert.equal(c.get('huge'), undefined, 'a reply over the whole budget is not cached');
  assert.deepEqual(keys(c, ['b', 'c']), ['b', 'c']);
});
