/**
 * The broker's access rules, tried from every identity: each board, app and topic kind, with the
 * owner right and wrong; and the filter containment they rest on, against brute force.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng } from '../helpers/prng.js';
import { filterWithin, mayPublish, maySubscribe, type Identity } from '../../broker/acl.js';
import { topicMatches, topics } from '../../mesh/topics.js';
import { haSafe, haTopics } from '../../agent/home-assistant/ids.js';

const MESH = 'home';
const boards = ['pi-a', 'pi-b'];
const apps = ['cam', 'door'];
const ids: Identity[] = [...boards.map((node) => ({ kind: 'board', node }) as const), ...apps.map((name) => ({ kind: 'app', name }) as const)];
const who = (id: Identity) => (id.kind === 'board' ? id.node : id.kind === 'app' ? id.name : '*');

/** Every kind of mesh topic, with its owner (the board or app named in it) and who may publish it. */
function publishCases(): { topic: string; retain: boolean; allowed: (id: Identity) => boolean }[] {
  const out: { topic: string; retain: boolean; allowed: (id: Identity) => boolean }[] = [];
  const req = { model: 'digits', id: '1' };
  for (const owner of [...boards, ...apps]) {
    const isBoard = (id: Identity, n: string) => id.kind === 'board' && id.node === n;
    const isApp = (id: Identity, n: string) => id.kind === 'app' && id.name === n;
    out.push({ topic: topics.nodeStatus(MESH, owner), retain: true, allowed: (id) => isBoard(id, owner) });
    out.push({ topic: topics.nodeStatus(MESH, owner), retain: false, allowed: (id) => isBoard(id, owner) });
    // Health reports: a board publishes its own only (retained, so a new dashboard sees it at once).
    out.push({ topic: topics.nodeHealth(MESH, owner), retain: true, allowed: (id) => isBoard(id, owner) });
    out.push({ topic: topics.nodeHealth(MESH, owner), retain: false, allowed: (id) => isBoard(id, owner) });
    out.push({ topic: topics.request(MESH, 'digits', owner, '1'), retain: false, allowed: (id) => isApp(id, owner) });
    out.push({ topic: topics.request(MESH, 'digits', owner, '1'), retain: true, allowed: () => false });
    out.push({ topic: topics.job(MESH, 'digits', owner, 'j1'), retain: false, allowed: (id) => isApp(id, owner) });
    out.push({ topic: topics.reply(MESH, owner, '1'), retain: false, allowed: (id) => id.kind === 'board' });
    out.push({ topic: topics.reply(MESH, owner, '1'), retain: true, allowed: () => false });
    out.push({ topic: topics.shardResult(MESH, { client: owner, job: 'j1', start: 0, end: 4 }), retain: false, allowed: (id) => id.kind === 'board' });
    // Only the dispatcher, inside the broker, hands out work: no client may.
    out.push({ topic: topics.task(MESH, owner, { ...req, client: 'cam' }), retain: false, allowed: () => false });
    out.push({ topic: topics.shard(MESH, owner, { model: 'digits', client: 'cam', job: 'j', start: 0, end: 2 }), retain: false, allowed: () => false });
    out.push({ topic: topics.jobResults(MESH, owner, 'j1'), retain: false, allowed: () => false });
    // Models across the mesh: a board asks for chunks only as itself; whoever holds a file (a
    // board, or an app pushing one) sends chunks only in its own name, never retained.
    const sha = 'ab'.repeat(32);
    out.push({ topic: topics.blobRequest(MESH, 'pi-a', owner, sha), retain: false, allowed: (id) => isBoard(id, owner) });
    out.push({ topic: topics.blobRequest(MESH, owner, 'pi-b', sha), retain: false, allowed: (id) => isBoard(id, 'pi-b') });
    out.push({ topic: topics.blobRequest(MESH, 'pi-a', owner, sha), retain: true, allowed: () => false });
    out.push({ topic: topics.blobChunk(MESH, 'pi-b', owner, sha, 0), retain: false, allowed: (id) => isBoard(id, owner) || isApp(id, owner) });
    out.push({ topic: topics.blobChunk(MESH, owner, 'pi-a', sha, 7), retain: false, allowed: (id) => isBoard(id, 'pi-a') });
    out.push({ topic: topics.blobChunk(MESH, 'pi-b', owner, sha, 0), retain: true, allowed: () => false });
    // Home Assistant discovery: a board announces its own entities only, retained, under any
    // one-level prefix but Kizuna's own root; nothing else of Home Assistant's, and no app.
    for (const prefix of ['homeassistant', 'ha-test_1']) {
      out.push({ topic: haTopics.config(prefix, 'sensor', MESH, owner, 'cpu'), retain: true, allowed: (id) => isBoard(id, owner) });
      out.push({ topic: haTopics.config(prefix, 'sensor', MESH, owner, 'p95'), retain: false, allowed: (id) => isBoard(id, owner) });
      out.push({ topic: haTopics.config(prefix, 'binary_sensor', MESH, owner, 'throttled'), retain: true, allowed: (id) => isBoard(id, owner) });
    }
    const oid = `kizuna_${MESH}_${haSafe(owner)}`;
    out.push({ topic: `homeassistant/switch/${oid}_cpu/config`, retain: true, allowed: () => false });
    out.push({ topic: `homeassistant/sensor/${oid}_cpu/state`, retain: true, allowed: () => false });
    out.push({ topic: `homeassistant/sensor/${oid}/cpu/config`, retain: true, allowed: () => false });
    out.push({ topic: `homeassistant/sensor/${oid}_cpu_x/config`, retain: true, allowed: () => false });
    out.push({ topic: `homeassistant/sensor/${oid}_/config`, retain: true, allowed: () => false });
    out.push({ topic: `homeassistant/sensor/${oid}_CPU/config`, retain: true, allowed: () => false });
    out.push({ topic: `kizuna/sensor/${oid}_cpu/config`, retain: true, allowed: () => false });
    out.push({ topic: `a/homeassistant/sensor/${oid}_cpu/config`, retain: true, allowed: () => false });
    out.push({ topic: haTopics.config('homeassistant', 'sensor', 'other', owner, 'cpu'), retain: true, allowed: () => false });
  }
  // Home Assistant's birth: what Home Assistant itself publishes, as an app.
  out.push({ topic: haTopics.status('homeassistant'), retain: false, allowed: (id) => id.kind === 'app' });
  out.push({ topic: haTopics.status('ha-test_1'), retain: true, allowed: (id) => id.kind === 'app' });
  out.push({ topic: haTopics.status('kizuna'), retain: false, allowed: () => false });
  out.push({ topic: 'homeassistant/status/x', retain: false, allowed: () => false });
  out.push({ topic: 'homeassistant/sensor/x/config', retain: true, allowed: () => false });
  // Catalogue entries: any board or app, retained (the broker then checks the content: see
  // test/integration/distribution.test.ts); never another mesh's.
  out.push({ topic: topics.catalog(MESH, 'digits'), retain: true, allowed: (id) => id.kind === 'board' || id.kind === 'app' });
  out.push({ topic: topics.catalog(MESH, 'digits'), retain: false, allowed: (id) => id.kind === 'board' || id.kind === 'app' });
  out.push({ topic: topics.catalog('other', 'digits'), retain: true, allowed: () => false });
  out.push({ topic: `kizuna/v1/${MESH}/catalog/digits/x`, retain: true, allowed: () => false });
  out.push({ topic: `kizuna/v1/${MESH}/blob/pi-b/pi-a/${'ab'.repeat(32)}`, retain: false, allowed: () => false });
  out.push({ topic: topics.brokerRecord(MESH), retain: true, allowed: () => false });
  out.push({ topic: `kizuna/v1/${MESH}/revoked`, retain: true, allowed: () => false });
  out.push({ topic: topics.nodeStatus('other', 'pi-a'), retain: true, allowed: () => false });
  out.push({ topic: topics.nodeHealth('other', 'pi-a'), retain: true, allowed: () => false });
  out.push({ topic: `kizuna/v1/${MESH}/node/pi-a/health/x`, retain: true, allowed: () => false });
  out.push({ topic: `kizuna/v1/${MESH}/node/pi-a/metrics`, retain: true, allowed: () => false });
  out.push({ topic: topics.request('other', 'digits', 'cam', '1'), retain: false, allowed: () => false });
  out.push({ topic: 'somewhere/else', retain: false, allowed: () => false });
  return out;
}

test('publish: every topic kind from every identity, owner right and wrong', () => {
  let checked = 0;
  for (const c of publishCases()) {
    for (const id of ids) {
      const v = mayPublish(id, c.topic, c.retain, MESH);
      assert.equal(v.ok, c.allowed(id), `${id.kind} ${who(id)} publish ${c.topic} retain=${c.retain}: ${v.ok ? 'allowed' : v.why}`);
      checked++;
    }
  }
  assert.ok(checked > 150);
});

test('subscribe: each identity reads its own tasks or answers and the mesh view, nothing else', () => {
  const m = `kizuna/v1/${MESH}`;
  const cases: { filter: string; allowed: (id: Identity) => boolean }[] = [
    { filter: `${m}/node/+/status`, allowed: () => true },
    { filter: `${m}/node/pi-a/status`, allowed: () => true },
    { filter: `${m}/broker`, allowed: () => true },
    { filter: `${m}/revoked`, allowed: () => true },
    { filter: '#', allowed: () => false },
    { filter: `${m}/#`, allowed: () => false },
    { filter: `${m}/req/#`, allowed: () => false },
    { filter: `${m}/res/#`, allowed: () => false },
    { filter: `${m}/res/+/+`, allowed: () => false },
    { filter: `${m}/task/+/#`, allowed: () => false },
    { filter: `kizuna/v1/+/node/+/status`, allowed: () => false },
    // Health reports: every board and app may read them all (a dashboard, kizuna status), nothing wider.
    { filter: `${m}/node/+/health`, allowed: () => true },
    { filter: `${m}/node/pi-a/health`, allowed: () => true },
    { filter: `${m}/node/+/+`, allowed: () => false },
    { filter: `${m}/node/#`, allowed: () => false },
    { filter: `kizuna/v1/+/node/+/health`, allowed: () => false },
    { filter: `$SYS/#`, allowed: () => false },
    { filter: `${m}/catalog/+`, allowed: () => true },
    { filter: `${m}/catalog/digits`, allowed: () => true },
    { filter: `${m}/catalog/#`, allowed: () => false },
    { filter: `${m}/blobreq/+/+/+`, allowed: () => false },
    { filter: `${m}/blobreq/#`, allowed: () => false },
    { filter: `${m}/blob/+/+/+/+`, allowed: () => false },
    { filter: `${m}/blob/#`, allowed: () => false },
  ];
  // Home Assistant: a board reads its birth; an app (Home Assistant itself) everything under a prefix.
  for (const prefix of ['homeassistant', 'ha-test_1']) {
    cases.push({ filter: haTopics.status(prefix), allowed: () => true });
    cases.push({ filter: `${prefix}/#`, allowed: (id) => id.kind === 'app' });
    cases.push({ filter: `${prefix}/+/+/config`, allowed: (id) => id.kind === 'app' });
    cases.push({ filter: haTopics.config(prefix, 'sensor', MESH, 'pi-a', 'cpu'), allowed: (id) => id.kind === 'app' });
  }
  cases.push({ filter: '+/status', allowed: () => false });
  cases.push({ filter: '+/#', allowed: () => false });
  cases.push({ filter: 'kizuna/status', allowed: () => false });
  cases.push({ filter: 'kizuna/#', allowed: () => false });
  cases.push({ filter: '$SYS/status', allowed: () => false });
  cases.push({ filter: 'homeassistant/status/#', allowed: (id) => id.kind === 'app' });
  for (const owner of [...boards, ...apps]) {
    cases.push({ filter: `${m}/task/${owner}/#`, allowed: (id) => id.kind === 'board' && id.node === owner });
    cases.push({ filter: `${m}/shard/${owner}/#`, allowed: (id) => id.kind === 'board' && id.node === owner });
    cases.push({ filter: `${m}/task/${owner}/digits/cam/1`, allowed: (id) => id.kind === 'board' && id.node === owner });
    cases.push({ filter: `${m}/res/${owner}/+`, allowed: (id) => id.kind === 'app' && id.name === owner });
    cases.push({ filter: `${m}/res/${owner}/42`, allowed: (id) => id.kind === 'app' && id.name === owner });
    cases.push({ filter: `${m}/res/${owner}/#`, allowed: () => false });
    cases.push({ filter: `${m}/jobres/${owner}/+`, allowed: (id) => id.kind === 'app' && id.name === owner });
    cases.push({ filter: `${m}/shardres/${owner}/+/+`, allowed: () => false });
    // Chunk requests to oneself (a board, or an app serving what it pushes); chunks for oneself (boards).
    cases.push({ filter: `${m}/blobreq/${owner}/+/+`, allowed: (id) => who(id) === owner });
    cases.push({ filter: `${m}/blobreq/${owner}/pi-b/${'ab'.repeat(32)}`, allowed: (id) => who(id) === owner });
    cases.push({ filter: `${m}/blobreq/+/${owner}/+`, allowed: () => false });
    cases.push({ filter: `${m}/blob/${owner}/+/+/+`, allowed: (id) => id.kind === 'board' && id.node === owner });
    cases.push({ filter: `${m}/blob/${owner}/#`, allowed: () => false });
    cases.push({ filter: `${m}/blob/+/${owner}/+/+`, allowed: () => false });
  }
  for (const c of cases) {
    for (const id of ids) {
      const v = maySubscribe(id, c.filter, MESH);
      assert.equal(v.ok, c.allowed(id), `${id.kind} ${who(id)} subscribe ${c.filter}: ${v.ok ? 'allowed' : v.why}`);
    }
  }
});

test('Home Assistant ids: no board may announce another board\'s entities, whatever their node ids (the 1,412 ids of up to 5 of a _ . : -: one device id each; 57 of them as boards against all 4,236 topics)', () => {
  const alphabet = ['a', '_', '.', ':', '-'];
  const nodes: string[] = [];
  const grow = (s: string) => {
    if (s.length && /^[A-Za-z0-9_]/.test(s) && !s.includes('..')) nodes.push(s);
    if (s.length < 5) for (const c of alphabet) grow(s + c);
  };
  grow('');
  const ids = new Map(nodes.map((n) => [n, `kizuna_${haSafe(MESH)}_${haSafe(n)}`]));
  assert.equal(new Set(ids.values()).size, nodes.length, 'one device id per node id');
  assert.equal(nodes.length, 1412);
  const keys = ['cpu', 'p95', 'acpu'];
  const owners = new Map<string, string>();
  for (const n of nodes) for (const k of keys) owners.set(haTopics.config('homeassistant', 'sensor', MESH, n, k), n);
  assert.equal(owners.size, nodes.length * keys.length, 'one topic per node and key');
  // Every board may publish exactly its own topics among them all.
  for (const n of nodes.filter((_, i) => i % 25 === 0)) {
    const board: Identity = { kind: 'board', node: n };
    for (const [topic, owner] of owners) assert.equal(mayPublish(board, topic, true, MESH).ok, owner === n, `board ${n} publish ${topic}`);
  }
  assert.equal(haSafe('pi-kitchen-3f1c'), 'pi-kitchen-3f1c', 'the usual node ids stay as they are');
});

test('an open mesh (loopback, no credentials) allows everything', () => {
  for (const c of publishCases()) assert.equal(mayPublish({ kind: 'open' }, c.topic, c.retain, MESH).ok, true);
  assert.equal(maySubscribe({ kind: 'open' }, '#', MESH).ok, true);
});

test('filterWithin: never wider than the rule, exact without #, by brute force over a small universe (20,000 generated pairs)', () => {
  const levels = ['a', 'b', 'c'];
  const universe: string[] = [];
  const grow = (prefix: string[]) => {
    if (prefix.length) universe.push(prefix.join('/'));
    if (prefix.length < 4) for (const l of levels) grow([...prefix, l]);
  };
  grow([]);
  const rng = prng(0x61636c);
  const randomFilter = () => {
    const n = rng.range(1, 4);
    const parts = Array.from({ length: n }, () => rng.pick(['a', 'b', '+']));
    if (rng.next() < 0.3) parts[n - 1] = '#';
    return parts.join('/');
  };
  for (let i = 0; i < 20_000; i++) {
    const f = randomFilter();
    const a = randomFilter();
    const expected = universe.every((t) => !topicMatches(f, t) || topicMatches(a, t));
    const got = filterWithin(f, a);
    // Never allows what the rule does not cover; exact for filters without '#' (for those with
    // it, it may refuse an equivalent spelling such as '#' for '+/#': safe, and no client needs it).
    if (got) assert.equal(expected, true, `filterWithin(${f}, ${a}) allowed more than the rule`);
    if (!f.includes('#')) assert.equal(got, expected, `filterWithin(${f}, ${a})`);
  }
});
