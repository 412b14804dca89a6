/** The dashboard's pure parts: the feed's times, the login gate, the Host check and the start-up policy. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import type http from 'node:http';
import { cookie, Gate, sameSecret, SESSION_COOKIE } from '../../agent/dashboard/auth.js';
import { Feed, type BoardView } from '../../agent/dashboard/feed.js';
import { dashboardPolicy, trustedHost } from '../../agent/dashboard/policy.js';
import { Roster } from '../../mesh/roster.js';
import type { NodeStatus } from '../../mesh/status.js';
import { KizunaError } from '../../mesh/errors.js';
import { initMesh, issueToken } from '../../agent/credentials.js';
import fs from 'node:fs';
import path from 'node:path';

const status = (node: string, online: boolean, seq = 1): NodeStatus => ({ v: 1, node, instance: 'i1', started: 1, seq, online, role: 'agent' });
const req = (headers: http.IncomingHttpHeaders) => ({ headers }) as http.IncomingMessage;

test('the feed: a board first seen has no known time; a change of online/offline is stamped with the clock', () => {
  const roster = new Roster();
  roster.set(status('old', true));
  let now = 1000;
  const feed = new Feed(roster, () => now);
  const seen: BoardView[] = [];
  feed.on('board', (b: BoardView) => seen.push(b));
  feed.start();
  assert.equal(feed.all()[0]!.since, null, 'in the roster before the dashboard started');
  roster.set(status('dead', false)); // a retained will, maybe of last week
  assert.equal(seen.at(-1)!.since, null);
  now = 2000;
  roster.set(status('old', false, 1));
  assert.equal(seen.at(-1)!.since, 2000, 'went offline while watched');
  now = 3000;
  roster.set({ ...status('old', false, 1), role: 'standby' });
  assert.equal(seen.at(-1)!.since, 2000, 'another change keeps the time of death');
  feed.setHealth('old', { v: 1 }, 2500);
  assert.deepEqual([feed.all().find((b) => b.node === 'old')!.health, feed.all().find((b) => b.node === 'old')!.healthAt], [{ v: 1 }, 2500]);
  roster.remove('dead');
  assert.deepEqual(seen.at(-1), { node: 'dead', removed: true });
  feed.stop();
  roster.set(status('later', true));
  assert.equal(feed.all().some((b) => b.node === 'later'), false, 'stopped: no longer follows the roster');
});

test('the gate: open when no login is required; else the token as Bearer, or a session that expires', () => {
  assert.equal(new Gate(undefined, false).allows(req({})), true);
  let now = 0;
  const gate = new Gate('kz1.secret', true, () => now);
  assert.equal(gate.allows(req({})), false);
  assert.equal(gate.allows(req({ authorization: 'Bearer kz1.secret' })), true);
  assert.equal(gate.allows(req({ authorization: 'Bearer kz1.secreT' })), false);
  assert.equal(gate.allows(req({ authorization: 'Basic kz1.secret' })), false);
  assert.equal(gate.login('wrong'), undefined);
  const s = gate.login('kz1.secret')!;
  assert.match(s.id, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(gate.allows(req({ cookie: `other=1; ${SESSION_COOKIE}=${s.id}` })), true);
  assert.equal(gate.allows(req({ cookie: `${SESSION_COOKIE}=${s.id}x` })), false);
  now = s.maxAgeS * 1000 + 1;
  assert.equal(gate.allows(req({ cookie: `${SESSION_COOKIE}=${s.id}` })), false, 'expired');
  now = 0;
  const first = gate.login('kz1.secret')!;
  for (let i = 0; i < 64; i++) gate.login('kz1.secret');
  assert.equal(gate.allows(req({ cookie: `${SESSION_COOKIE}=${first.id}` })), false, 'the oldest of more than 64 sessions is dropped');
  const last = gate.login('kz1.secret')!;
  gate.logout(req({ cookie: `${SESSION_COOKIE}=${last.id}` }));
  assert.equal(gate.allows(req({ cookie: `${SESSION_COOKIE}=${last.id}` })), false, 'logged out');
  assert.equal(sameSecret('a', 'a'), true);
  assert.equal(sameSecret('a', 'ab'), false, 'lengths differ: still compared, as digests');
  assert.equal(cookie(req({ cookie: ' a = 1 ;b=2' }), 'a'), '1');
});

test('Host names of this machine: IP addresses, localhost, its host name; anything else is refused', () => {
  for (const h of ['127.0.0.1:8080', '127.0.0.1', '[::1]:8080', '192.168.1.20:80', 'localhost:1', 'LOCALHOST', `${os.hostname()}:8080`, `${os.hostname()}.local:8080`]) assert.equal(trustedHost(h), true, h);
  for (const h of [undefined, '', 'evil.example', 'evil.example:8080', '127.0.0.1.evil.example', `${os.hostname()}.evil.example`, 'localhost.evil']) assert.equal(trustedHost(h), false, String(h));
});

test('the start-up policy: loopback needs no login; off loopback a mesh with credentials needs its app token', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-dash-policy-'));
  try {
    const creds = initMesh(dir, 'home', 'p-a');
    const app = issueToken(creds, 'app', 'dashboard');
    const key = creds.publicKey;
    assert.deepEqual(dashboardPolicy({ host: '127.0.0.1', mesh: 'home' }), { loginRequired: false });
    assert.deepEqual(dashboardPolicy({ host: '127.0.0.1', mesh: 'home', publicKey: key }), { loginRequired: false });
    assert.deepEqual(dashboardPolicy({ host: '0.0.0.0', mesh: 'home', publicKey: key, token: app }), { loginRequired: true });
    assert.deepEqual(dashboardPolicy({ host: '0.0.0.0', mesh: 'home' }), { loginRequired: false }, 'an open mesh: open');
    assert.deepEqual(dashboardPolicy({ host: '0.0.0.0', mesh: 'home', token: 'kz1.anything' }), { loginRequired: true }, 'an open mesh with a token: its password');
    const refused = (o: Parameters<typeof dashboardPolicy>[0], re: RegExp) =>
      assert.throws(() => dashboardPolicy(o), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG' && re.test(e.message));
    refused({ host: '0.0.0.0', mesh: 'home', publicKey: key }, /app token as its login/);
    refused({ host: '127.0.0.1', mesh: 'home', publicKey: key, token: issueToken(creds, 'board', 'p-b') }, /board's token/);
    refused({ host: '127.0.0.1', mesh: 'work', publicKey: key, token: app }, /not home|for mesh "home", not work/);
    refused({ host: '127.0.0.1', mesh: 'home', publicKey: key, token: 'kz1.a.b' }, /dashboardToken/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
