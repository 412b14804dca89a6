import { test } from 'node:test';
import assert from 'node:assert/strict';
import { advertFromTxt, MAX_TERM } from '../../agent/advert.js';
import { prng, type Rng } from '../helpers/prng.js';
import {
  compareRank,
  decide,
  nextTerm,
  rankOrder,
  resolveSplit,
  successors,
  type BrokerClaim,
  type RankInputs,
  type View,
} from '../../agent/election.js';

// ---- Deterministic generated cases -------------------------------------------------------------

const SEED = 0x6b697a75; // 'kizu'
const VIEWS = 2000;


// Board sizes as reported: a little under the nominal size (firmware, kernel, GPU split).
const SIZES_MIB = [512, 1024, 2048, 4096, 8192, 16384];
// Mixed case, digits and '-' so code-unit order ('Z' < 'a' < 'pi') is exercised.
const ID_CHARS = 'abcXYZ019-';

function nodeId(rng: Rng): string {
  const prefix = rng.pick(['pi', 'Pi', 'node', 'a', 'Z']);
  let s = '';
  for (let i = 0, n = 1 + rng.int(4); i < n; i++) s += rng.pick([...ID_CHARS]);
  return prefix + s;
}

function member(rng: Rng, node: string): RankInputs {
  return {
    node,
    eligible: rng.next() < 0.75,
    throttled: rng.next() < 0.25,
    ramMiB: rng.pick(SIZES_MIB) - rng.int(300),
    cores: rng.pick([1, 2, 4, 4, 8]),
  };
}

/** 1-12 members with unique node ids; some share every rank input but the id. */
function genMembers(rng: Rng, max = 12): RankInputs[] {
  const ids = new Set<string>();
  const want = 1 + rng.int(max);
  while (ids.size < want) ids.add(nodeId(rng));
  const out: RankInputs[] = [];
  for (const node of ids) {
    const twin = out.length > 0 && rng.next() < 0.3 ? rng.pick(out) : undefined;
    out.push(twin ? { ...twin, node } : member(rng, node));
  }
  return out;
}

function genViews(seed: number, n = VIEWS): RankInputs[][] {
  const rng = prng(seed);
  return Array.from({ length: n }, () => genMembers(rng));
}

/** Independent oracle for the documented rule: a lexicographic key, compared step by step. */
function oracle(a: RankInputs, b: RankInputs): number {
  const key = (m: RankInputs) => [m.eligible ? 0 : 1, m.throttled ? 1 : 0, -Math.floor(m.ramMiB / 1024), -m.cores];
  const ka = key(a);
  const kb = key(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}

const sign = (x: number) => (x < 0 ? -1 : x > 0 ? 1 : 0);
const eligibleOf = (ms: RankInputs[]) => ms.filter((m) => m.eligible);
const byNode = (ms: RankInputs[], node: string | undefined) => ms.find((m) => m.node === node);

// ---- compareRank ---------------------------------------------------------------------------------

test(`compareRank follows the documented rule, and is antisymmetric and total (seed ${SEED})`, () => {
  for (const ms of genViews(SEED)) {
    for (const a of ms) {
      for (const b of ms) {
        const ab = compareRank(a, b);
        assert.equal(sign(ab), oracle(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
        assert.equal(sign(ab), sign(-compareRank(b, a)), 'antisymmetric');
        assert.equal(ab === 0, a.node === b.node, 'zero only for the same node');
      }
    }
  }
});

test(`compareRank is transitive on sampled triples (seed ${SEED + 1})`, () => {
  const rng = prng(SEED + 1);
  // A small pool of values makes chains a < b < c common rather than rare.
  const pool = Array.from({ length: 40 }, (_, i) => ({ ...member(rng, ''), node: `n${i % 7}-${i}` }));
  for (let i = 0; i < 20000; i++) {
    const [a, b, c] = [rng.pick(pool), rng.pick(pool), rng.pick(pool)];
    if (compareRank(a, b) < 0 && compareRank(b, c) < 0) assert.ok(compareRank(a, c) < 0, JSON.stringify({ a, b, c }));
    if (compareRank(a, b) === 0 && compareRank(b, c) === 0) assert.equal(compareRank(a, c), 0);
  }
  // Sorting by it gives a chain every later member is below.
  const sorted = rankOrder(pool);
  for (let i = 0; i < sorted.length; i++)
    for (let j = i + 1; j < sorted.length; j++) assert.ok(compareRank(sorted[i]!, sorted[j]!) < 0);
});

test('rankOrder returns a sorted copy and leaves its input alone', () => {
  const ms = genMembers(prng(SEED + 2), 12);
  const before = JSON.stringify(ms);
  const sorted = rankOrder(ms);
  assert.notEqual(sorted, ms);
  assert.equal(JSON.stringify(ms), before);
  assert.deepEqual([...sorted].sort(oracle), sorted);
});

// ---- decide ------------------------------------------------------------------------------------

test(`decide: the arrival order of adverts does not matter (seed ${SEED + 3})`, () => {
  const rng = prng(SEED + 3);
  for (const ms of genViews(SEED + 3)) {
    const incumbent = rng.next() < 0.5 ? { node: rng.pick(ms).node, term: 1 + rng.int(5) } : undefined;
    const failed = ms.filter(() => rng.next() < 0.3).map((m) => m.node);
    const view: View = { members: ms, ...(incumbent && { incumbent }) };
    const want = decide(view);
    const wantNext = successors(view, failed);
    for (let k = 0; k < 5; k++) {
      const shuffled: View = { ...view, members: rng.shuffle(ms) };
      assert.deepEqual(decide(shuffled), want);
      assert.deepEqual(successors(shuffled, rng.shuffle(failed)), wantNext);
    }
  }
});

test(`decide without an incumbent: the best-ranked eligible member is broker, the next is standby (seed ${SEED + 4})`, () => {
  for (const ms of genViews(SEED + 4)) {
    const { broker, standby } = decide({ members: ms });
    const eligible = eligibleOf(ms);
    if (eligible.length === 0) {
      assert.equal(broker, undefined, 'no eligible members -> no broker');
      assert.equal(standby, undefined);
      continue;
    }
    const b = byNode(ms, broker);
    assert.ok(b?.eligible, 'broker is an eligible member');
    for (const m of eligible) if (m !== b) assert.ok(compareRank(b, m) < 0, `${broker} outranks ${m.node}`);
    if (eligible.length === 1) {
      assert.equal(standby, undefined);
      continue;
    }
    const s = byNode(ms, standby);
    assert.ok(s?.eligible && standby !== broker, 'standby is eligible and not the broker');
    for (const m of eligible) if (m !== b && m !== s) assert.ok(compareRank(s, m) < 0, `${standby} outranks ${m.node}`);
  }
});

test(`decide with an incumbent: kept while a member and eligible, replaced otherwise (seed ${SEED + 5})`, () => {
  const rng = prng(SEED + 5);
  for (const ms of genViews(SEED + 5)) {
    const fresh = decide({ members: ms });
    const inc = rng.pick(ms);
    const d = decide({ members: ms, incumbent: { node: inc.node, term: 3 } });
    if (inc.eligible) {
      assert.equal(d.broker, inc.node, 'no pre-emption');
      const rest = eligibleOf(ms).filter((m) => m !== inc).sort(compareRank);
      assert.equal(d.standby, rest[0]?.node, 'standby is the best of the rest');
    } else {
      assert.deepEqual(d, fresh, 'an ineligible incumbent is replaced as if there were none');
    }
    const gone = decide({ members: ms.filter((m) => m !== inc), incumbent: { node: inc.node, term: 3 } });
    assert.deepEqual(gone, decide({ members: ms.filter((m) => m !== inc) }), 'an absent incumbent is replaced');
    assert.notEqual(gone.broker, inc.node);
  }
});

test(`decide tolerates duplicate node ids: the first by rank wins (seed ${SEED + 6})`, () => {
  const rng = prng(SEED + 6);
  for (const ms of genViews(SEED + 6, 500)) {
    const dup = [...ms, ...ms.filter(() => rng.next() < 0.5).map((m) => member(rng, m.node))];
    const d = decide({ members: dup });
    assert.ok(d.standby === undefined || d.standby !== d.broker, 'standby != broker');
    const next = successors({ members: dup }, []);
    assert.equal(new Set(next).size, next.length, 'successors name each node once');
    for (let k = 0; k < 3; k++) assert.deepEqual(decide({ members: rng.shuffle(dup) }), d);
  }
  const pi = { eligible: true, throttled: false, ramMiB: 4000, cores: 4 };
  const d = decide({
    members: [
      { ...pi, node: 'pi-a', eligible: false },
      { ...pi, node: 'pi-a' },
      { ...pi, node: 'pi-b', ramMiB: 2000 },
    ],
  });
  assert.deepEqual(d, { broker: 'pi-a', standby: 'pi-b' });
  assert.deepEqual(decide({ members: [{ ...pi, node: 'pi-a' }, { ...pi, node: 'pi-a' }] }), { broker: 'pi-a' });
});

// ---- successors --------------------------------------------------------------------------------

test(`successors: standby first, never a failed node, and every agent stops at the same live one (seed ${SEED + 7})`, () => {
  const rng = prng(SEED + 7);
  for (const ms of genViews(SEED + 7)) {
    const inc = rng.pick(ms);
    const view: View = { members: ms, incumbent: { node: inc.node, term: 2 } };
    const { broker, standby } = decide(view);
    const dead = new Set(ms.filter(() => rng.next() < 0.3).map((m) => m.node));
    if (broker && rng.next() < 0.8) dead.add(broker);
    const failed = [...dead];
    const list = successors(view, failed);

    assert.ok(list.every((n) => !dead.has(n)), 'no failed node');
    assert.ok(!list.includes(inc.node), 'never the old broker');
    assert.equal(new Set(list).size, list.length, 'no node twice');
    assert.ok(list.every((n) => byNode(ms, n)?.eligible), 'only eligible members');
    if (broker === inc.node && standby && !dead.has(standby)) assert.equal(list[0], standby, 'standby first');
    const members = list.map((n) => byNode(ms, n)!);
    assert.deepEqual(members, [...members].sort(compareRank), 'then by rank');
    const expected = eligibleOf(ms).map((m) => m.node).filter((n) => !dead.has(n) && n !== inc.node);
    assert.deepEqual(new Set(list), new Set(expected), 'every other live eligible member is listed');
    assert.deepEqual(successors(view, []).filter((n) => !dead.has(n)), list, 'one order minus the failed');

    // Agents may know of different failures, and some may already have dropped the old broker
    // from their view; each walks its own list to the first node alive.
    const alive = (n: string) => !dead.has(n);
    const agentView = (): View => ({ ...view, members: rng.shuffle(rng.next() < 0.5 ? ms : ms.filter((m) => m !== inc)) });
    const agreed = successors(view, failed).find(alive);
    for (let k = 0; k < 5; k++) assert.equal(successors(agentView(), failed.filter(() => rng.next() < 0.5)).find(alive), agreed);
  }
});

// ---- resolveSplit and nextTerm -----------------------------------------------------------------

/** Three claims with distinct node ids; terms 1-3 so equal terms are common. */
function genClaims(rng: Rng): [BrokerClaim, BrokerClaim, BrokerClaim] {
  let ms = genMembers(rng, 12);
  while (ms.length < 3) ms = genMembers(rng, 12);
  const [a, b, c] = ms.map((m) => ({ ...m, term: 1 + rng.int(3) }));
  return [a!, b!, c!];
}

test(`resolveSplit: higher term, then better rank; symmetric and associative (seed ${SEED + 8})`, () => {
  const rng = prng(SEED + 8);
  for (let i = 0; i < VIEWS; i++) {
    const [a, b, c] = genClaims(rng);
    const w = resolveSplit(a, b);
    assert.equal(resolveSplit(b, a).node, w.node, 'symmetric');
    assert.equal(w.term, Math.max(a.term, b.term), 'higher term wins');
    if (a.term === b.term) assert.equal(w.node, rankOrder([a, b])[0]!.node, 'equal terms: better rank wins');

    const orders = [[a, b, c], [a, c, b], [b, a, c], [b, c, a], [c, a, b], [c, b, a]];
    const winners = orders.map(([x, y, z]) => resolveSplit(resolveSplit(x!, y!), z!).node);
    assert.equal(new Set(winners).size, 1, `associative: ${winners.join(',')}`);
    assert.equal(resolveSplit(a, resolveSplit(b, c)).node, winners[0]);
  }
});

test('nextTerm is one more than the highest term seen, and at least 1', () => {
  assert.equal(nextTerm([]), 1);
  assert.equal(nextTerm([0]), 1);
  assert.equal(nextTerm([3, 7, 2]), 8);
  assert.equal(nextTerm([NaN, 4, Infinity]), 5);
  assert.equal(nextTerm([2.5]), 3);
});

test('nextTerm never passes MAX_TERM, and an advert claiming more is invalid', () => {
  assert.equal(nextTerm([MAX_TERM - 1]), MAX_TERM);
  assert.equal(nextTerm([MAX_TERM, Number.MAX_SAFE_INTEGER]), MAX_TERM);
  const txt = { v: '1', mesh: 'home', node: 'pi', inst: '0123abcd', role: 'broker', port: '1883', elig: '1', ram: '1024', cores: '4', thr: '0' };
  assert.equal(advertFromTxt({ ...txt, term: String(MAX_TERM) }, [])?.term, MAX_TERM);
  assert.equal(advertFromTxt({ ...txt, term: String(MAX_TERM + 1) }, []), undefined);
});

// ---- Hand-written cases (these read like the rule in docs/MESH.md) ---------------------------

const pi5x8: RankInputs = { node: 'pi5-kitchen', eligible: true, throttled: false, ramMiB: 8052, cores: 4 };
const pi3x1: RankInputs = { node: 'pi3-garage', eligible: true, throttled: false, ramMiB: 906, cores: 4 };
const pi4x4: RankInputs = { node: 'pi4-office', eligible: true, throttled: false, ramMiB: 3796, cores: 4 };

test('a Pi 5 8GB outranks a Pi 3 1GB, whatever its id', () => {
  assert.ok(compareRank(pi5x8, pi3x1) < 0);
  assert.deepEqual(decide({ members: [pi3x1, pi5x8] }), { broker: 'pi5-kitchen', standby: 'pi3-garage' });
  assert.deepEqual(decide({ members: [{ ...pi3x1, node: 'a' }, { ...pi5x8, node: 'z' }] }), { broker: 'z', standby: 'a' });
});

test('a throttled 8GB board ranks below an unthrottled 4GB one', () => {
  const hot = { ...pi5x8, throttled: true };
  assert.ok(compareRank(pi4x4, hot) < 0);
  assert.deepEqual(decide({ members: [hot, pi4x4] }), { broker: 'pi4-office', standby: 'pi5-kitchen' });
});

test('two identical boards: the smaller id wins, a few MiB of RAM do not decide', () => {
  const a = { ...pi4x4, node: 'pi-a', ramMiB: 3790 };
  const b = { ...pi4x4, node: 'pi-b', ramMiB: 3796 };
  assert.ok(compareRank(a, b) < 0);
  assert.deepEqual(decide({ members: [b, a] }), { broker: 'pi-a', standby: 'pi-b' });
  // Plain code units, not locale: 'Pi-z' < 'pi-a' because 'P' (0x50) < 'p' (0x70).
  assert.ok(compareRank({ ...a, node: 'Pi-z' }, a) < 0);
});

test('an ineligible board is never broker nor standby, however big', () => {
  const big = { ...pi5x8, eligible: false, ramMiB: 16000, cores: 8 };
  assert.deepEqual(decide({ members: [big, pi3x1] }), { broker: 'pi3-garage' });
  assert.deepEqual(decide({ members: [big] }), {});
  assert.deepEqual(decide({ members: [] }), {});
});

test('no pre-emption: a better board joining does not move a healthy broker', () => {
  const view: View = { members: [pi3x1, pi4x4, pi5x8], incumbent: { node: 'pi3-garage', term: 4 } };
  assert.deepEqual(decide(view), { broker: 'pi3-garage', standby: 'pi5-kitchen' });
  assert.deepEqual(successors(view, ['pi3-garage']), ['pi5-kitchen', 'pi4-office']);
  assert.deepEqual(successors(view, ['pi3-garage', 'pi5-kitchen']), ['pi4-office']);
  // An agent that already dropped the dead broker from its view walks the same list.
  assert.deepEqual(successors({ ...view, members: [pi4x4, pi5x8] }, []), ['pi5-kitchen', 'pi4-office']);
});

test('after a partition: the higher term wins, then the better board', () => {
  const old = { ...pi5x8, term: 3 };
  const young = { ...pi3x1, term: 4 };
  assert.equal(resolveSplit(old, young).node, 'pi3-garage');
  assert.equal(resolveSplit({ ...young, term: 3 }, old).node, 'pi5-kitchen');
});
