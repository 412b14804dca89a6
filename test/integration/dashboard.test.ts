/**
 * The web dashboard over HTTP, with real agents: the page's files and nothing else (traversal,
 * listing, methods, Host names refused), the security headers, the SSE stream carrying the
 * statuses of a 2-agent mesh (and a board going offline), the playground answering a digit
 * through the mesh, its limits, the stream cap, and on a mesh with credentials the login with the
 * dashboard's app token and the playground over TLS with it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import type { Agent } from '../../agent/agent.js';
import { initMesh, issueToken } from '../../agent/credentials.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import mqtt from 'mqtt';
import { healthProblems, isNodeHealth } from '../../mesh/health.js';
import { topics } from '../../mesh/topics.js';
import { startAgent } from '../helpers/agent.js';
import { freePorts } from '../helpers/ports.js';
import { boardsOf, SseReader } from '../helpers/sse.js';

const digit = loadDigits().heldOut[0]!;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: () => { code?: string; message?: string; [k: string]: unknown };
}

/** One HTTP request to the dashboard, headers and body exactly as given. */
async function call(port: number, urlPath: string, o: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Answer> {
  const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: o.method ?? 'GET', headers: o.headers ?? {}, agent: false });
  req.on('error', () => undefined); // a connection closed after a refusal while we still sent
  req.end(o.body);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  let body = '';
  for await (const chunk of res) body += chunk;
  return { status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body) };
}

/** A request line sent byte for byte (no client normalises the path). */
async function raw(port: number, requestLine: string): Promise<{ status: number; body: string }> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  s.end(`${requestLine}\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  let text = '';
  for await (const chunk of s) text += chunk;
  return { status: Number(text.split(' ')[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

const dashPort = (a: Agent) => a.dashboard!.port;
const png = async () => Buffer.from(await digitToPng(digit.pixels));

describe('the dashboard of an open mesh on loopback (2 agents)', () => {
  let a: Agent;
  let b: Agent;
  let port: number;

  before(async () => {
    const [pa, pb] = await freePorts(2);
    a = await startAgent({ node: 'dash-a', port: pa!, peers: [`127.0.0.1:${pb}`], formationMs: 0, dashboardPort: 0, maxPayloadBytes: 64 * 1024, healthIntervalS: 0.5 });
    b = await startAgent({ node: 'dash-b', port: pb!, peers: [`127.0.0.1:${pa}`], formationMs: 400, healthIntervalS: 0.5 });
    port = dashPort(a);
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
  });

  test('serves the page, its script, style and icon, with the security headers', async () => {
    const page = await call(port, '/');
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type']!, /^text\/html/);
    assert.match(page.body, /<script type="module" src="\/app.js"><\/script>/);
    const csp = page.headers['content-security-policy']!;
    for (const rule of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) assert.ok(csp.includes(rule), `${rule} in ${csp}`);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.equal(page.headers['access-control-allow-origin'], undefined, 'no CORS');
    for (const [p, type] of [['/app.js', /^text\/javascript/], ['/charts.js', /^text\/javascript/], ['/dom.js', /^text\/javascript/], ['/playground.js', /^text\/javascript/], ['/app.css', /^text\/css/], ['/favicon.svg', /^image\/svg\+xml/], ['/index.html', /^text\/html/]] as const) {
      const r = await call(port, p);
      assert.equal(r.status, 200, p);
      assert.match(r.headers['content-type']!, type, p);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', p);
    }
    // Nothing the page loads comes from elsewhere: every src and href is one of the served paths.
    for (const ref of page.body.matchAll(/(?:src|href)="([^"]+)"/g)) assert.match(ref[1]!, /^\/[a-z]+\.(js|css|svg)$/, ref[1]);
    // Every module the page imports is served.
    for (const script of ['/app.js', '/playground.js', '/charts.js', '/dom.js']) {
      for (const m of (await call(port, script)).body.matchAll(/from '\.(\/[a-z-]+\.js)'/g)) assert.equal((await call(port, m[1]!)).status, 200, `${script} imports ${m[1]}`);
    }
    const etag = page.headers.etag!;
    assert.equal((await call(port, '/', { headers: { 'If-None-Match': etag } })).status, 304);
    const head = await call(port, '/app.js', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  test('nothing else: traversal, other files, listings, other methods and foreign Host names are refused with a JSON error', async () => {
    for (const line of ['GET /../package.json HTTP/1.1', 'GET /%2e%2e/package.json HTTP/1.1', 'GET /..%2f..%2fpackage.json HTTP/1.1', 'GET //etc/passwd HTTP/1.1', 'GET /public/ HTTP/1.1', 'GET /agent/dashboard/public/app.js HTTP/1.1', 'GET /app.js/ HTTP/1.1', 'GET /app.js%00 HTTP/1.1', 'GET /dist/agent/agent.js HTTP/1.1']) {
      const r = await raw(port, line);
      assert.equal(r.status, 404, line);
      assert.equal(JSON.parse(r.body).code, 'KZ_ERR_BAD_REQUEST', line);
      assert.doesNotMatch(r.body, /"name":\s*"kizuna"|root:/, line);
    }
    const post = await call(port, '/', { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.json().code, 'KZ_ERR_BAD_REQUEST');
    const preflight = await call(port, '/api/infer?model=digits', { method: 'OPTIONS', headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' } });
    assert.equal(preflight.status, 405);
    assert.equal(preflight.headers['access-control-allow-origin'], undefined, 'no CORS');
    assert.equal((await call(port, '/events', { method: 'DELETE' })).status, 405);
    // A DNS name pointed at this machine by someone else's page (DNS rebinding) is not this machine.
    const rebound = await call(port, '/events', { headers: { Host: `evil.example:${port}` } });
    assert.equal(rebound.status, 403);
    assert.equal(rebound.json().code, 'KZ_ERR_FORBIDDEN');
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `${os.hostname()}:${port}`]) assert.equal((await call(port, '/', { headers: { Host: host } })).status, 200, host);
  });

  test('the SSE stream carries both boards with their roles, then a board going offline', async () => {
    const s = await SseReader.open(`http://127.0.0.1:${port}/events`);
    try {
      assert.equal(s.status, 200);
      assert.match(s.headers['content-type']!, /^text\/event-stream/);
      const snap = await s.until((e) => e.event === 'snapshot', 5000, 'a snapshot');
      const d = snap.data as { mesh: string; self: string; now: number };
      assert.equal(d.mesh, 'home');
      assert.equal(d.self, 'dash-a');
      assert.ok(Math.abs(d.now - Date.now()) < 5000);
      await s.until(() => {
        const boards = boardsOf(s);
        return boards.get('dash-a')?.status.role === 'broker' && boards.get('dash-b')?.status.role === 'standby' && boards.get('dash-b')?.status.online === true;
      }, 10_000, 'dash-a broker and dash-b standby, online');
      const models = (boardsOf(s).get('dash-b')!.status as { models?: { name: string }[] }).models!.map((m) => m.name);
      assert.ok(models.includes('digits'), models.join());
    } finally {
      s.close();
    }
  });

  test('the playground answers a digit through the mesh', async () => {
    const r = await call(port, '/api/infer?model=digits', { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: await png() });
    assert.equal(r.status, 200, r.body);
    const body = r.json() as { ok: boolean; model: string; agent: string; answers: { label: string; score: number; top: unknown[] }[]; round_trip_ms: number };
    assert.equal(body.ok, true);
    assert.equal(body.model, 'digits');
    assert.equal(body.answers[0]!.label, String(digit.label));
    assert.ok(body.answers[0]!.top.length >= 3);
    assert.ok(['dash-a', 'dash-b'].includes(body.agent), body.agent);
    assert.ok(body.round_trip_ms > 0);
    assert.equal(r.headers['cache-control'], 'no-store');
  });

  test('the playground\'s limits: content type, image bytes, size, model name, unknown model, another origin', async () => {
    const image = await png();
    const post = (query: string, headers: Record<string, string>, body: Buffer | string) => call(port, `/api/infer?${query}`, { method: 'POST', headers, body });
    const cases: [Answer, number, string][] = [
      [await post('model=digits', { 'Content-Type': 'text/plain' }, image), 415, 'KZ_ERR_BAD_REQUEST'],
      [await post('model=digits', { 'Content-Type': 'image/svg+xml' }, '<svg/>'), 415, 'KZ_ERR_BAD_REQUEST'],
      [await post('model=digits', { 'Content-Type': 'image/png' }, '{"inputs":{}}'), 422, 'KZ_ERR_IMAGE_CORRUPT'],
      // 64 KiB of mesh payload: at most 47 KiB of image (base64 JSON on the wire).
      [await post('model=digits', { 'Content-Type': 'image/png' }, Buffer.concat([image, Buffer.alloc(60 * 1024)])), 413, 'KZ_ERR_TOO_LARGE'],
      [await post('model=..%2Fx', { 'Content-Type': 'image/png' }, image), 400, 'KZ_ERR_BAD_NAME'],
      [await post('model=digits%2F%23', { 'Content-Type': 'image/png' }, image), 400, 'KZ_ERR_BAD_NAME'],
      [await post('', { 'Content-Type': 'image/png' }, image), 400, 'KZ_ERR_BAD_NAME'],
      [await post('model=no-such-model', { 'Content-Type': 'image/png' }, image), 404, 'KZ_ERR_UNKNOWN_MODEL'],
      [await post('model=digits', { 'Content-Type': 'image/png', Origin: 'http://evil.example' }, image), 403, 'KZ_ERR_FORBIDDEN'],
      [await post('model=digits', { 'Content-Type': 'image/png', 'Sec-Fetch-Site': 'cross-site' }, image), 403, 'KZ_ERR_FORBIDDEN'],
    ];
    for (const [r, status, code] of cases) {
      assert.equal(r.status, status, r.body);
      assert.equal(r.json().code, code, r.body);
      assert.equal(typeof r.json().message, 'string');
    }
    // A declared length over the limit is refused before the body is read.
    const big = await call(port, '/api/infer?model=digits', { method: 'POST', headers: { 'Content-Type': 'image/png', 'Content-Length': String(10 * 1024 * 1024) }, body: image.subarray(0, 100) });
    assert.equal(big.status, 413);
    // The same page's own POST (same origin) is served.
    const same = await post('model=digits', { 'Content-Type': 'image/png', Origin: `http://127.0.0.1:${port}`, 'Sec-Fetch-Site': 'same-origin' }, image);
    assert.equal(same.status, 200, same.body);
  });

  test('event streams are capped (16): one more is refused with KZ_ERR_OVERLOADED; a closed one frees its place', async () => {
    const open: SseReader[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const s = await SseReader.open(`http://127.0.0.1:${port}/events`);
        assert.equal(s.status, 200, `stream ${i}`);
        open.push(s);
      }
      const refused = await SseReader.open(`http://127.0.0.1:${port}/events`);
      assert.equal(refused.status, 503);
      assert.equal(JSON.parse(refused.body).code, 'KZ_ERR_OVERLOADED');
      open.pop()!.close();
      const deadline = Date.now() + 5000;
      while (a.dashboard!.streams > 15 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const again = await SseReader.open(`http://127.0.0.1:${port}/events`);
      assert.equal(again.status, 200);
      open.push(again);
    } finally {
      for (const s of open) s.close();
    }
  });

  test('the stream carries both boards\' health reports; a malformed one, or one under another board\'s topic, is dropped', async () => {
    const s = await SseReader.open(`http://127.0.0.1:${port}/events`);
    const forger = await mqtt.connectAsync(a.brokerUrl, { protocolVersion: 4, reconnectPeriod: 0 });
    try {
      const healthOf = (node: string) => s.until((e) => e.event === 'health' && (e.data as { node: string }).node === node, 10_000, `a health report of ${node}`);
      const [ha] = await Promise.all([healthOf('dash-a'), healthOf('dash-b')]);
      const report = (ha.data as { health: Record<string, unknown> }).health;
      assert.ok(isNodeHealth(report), JSON.stringify(healthProblems(report)));
      // An open mesh lets anyone publish: dash-a's report under dash-b's topic, garbage, then a valid sentinel.
      await forger.publishAsync(topics.nodeHealth('home', 'dash-b'), JSON.stringify(report));
      await forger.publishAsync(topics.nodeHealth('home', 'dash-b'), '{"v":1,"node":"dash-b","cpu":"hot"}');
      await forger.publishAsync(topics.nodeHealth('home', 'sentinel'), JSON.stringify({ ...report, node: 'sentinel' }));
      await healthOf('sentinel');
      for (const e of s.events.filter((x) => x.event === 'health')) {
        const d = e.data as { node: string; health: { node: string }; at: number };
        assert.equal(d.health.node, d.node);
        assert.ok(isNodeHealth(d.health));
        assert.equal(typeof d.at, 'number');
      }
      // A snapshot carries the latest report of each board.
      const again = await SseReader.open(`http://127.0.0.1:${port}/events`);
      try {
        const snap = await again.until((e) => e.event === 'snapshot', 5000, 'a snapshot');
        const boards = (snap.data as { boards: { node: string; health?: { node: string } }[] }).boards;
        assert.equal(boards.find((x) => x.node === 'dash-b')?.health?.node, 'dash-b');
      } finally {
        again.close();
      }
    } finally {
      await forger.endAsync();
      s.close();
    }
  });

  test('a board that stops shows offline on the stream, with the time this agent saw it go', async () => {
    const s = await SseReader.open(`http://127.0.0.1:${port}/events`);
    try {
      await s.until(() => boardsOf(s).get('dash-b')?.status.online === true, 10_000, 'dash-b online');
      const t0 = Date.now();
      await b.stop();
      await s.until(() => boardsOf(s).get('dash-b')?.status.online === false, 10_000, 'dash-b offline');
      const [since, t1] = [boardsOf(s).get('dash-b')!.since!, Date.now()];
      assert.ok(since >= t0 && since <= t1, `since ${since} between ${t0} and ${t1}`);
    } finally {
      s.close();
    }
  });
});

describe('the dashboard of a mesh with credentials', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-dash-'));
  let creds: ReturnType<typeof initMesh>;
  let token: string;
  const agents: Agent[] = [];

  before(() => {
    creds = initMesh(root, 'home', 'sec-a');
    token = issueToken(creds, 'app', 'dashboard');
  });
  after(async () => {
    for (const a of agents.reverse()) await a.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const start = async (o: Parameters<typeof startAgent>[0]) => {
    const a = await startAgent({ dataDir: root, node: 'sec-a', dashboardPort: 0, ...o });
    agents.push(a);
    return a;
  };

  test('refused at start: off loopback without a token, a board\'s token, another mesh\'s token', async () => {
    const other = initMesh(path.join(root, 'other'), 'home', 'x');
    const bad: [Parameters<typeof startAgent>[0], RegExp][] = [
      [{ dashboardHost: '0.0.0.0' }, /give it an app token as its login/],
      [{ dashboardToken: issueToken(creds, 'board', 'sec-b') }, /a board's token/],
      [{ dashboardToken: issueToken(other, 'app', 'dashboard') }, /not signed by this mesh/],
    ];
    for (const [o, message] of bad) {
      await assert.rejects(startAgent({ dataDir: root, node: 'sec-a', dashboardPort: 0, ...o }), (err: Error & { code?: string }) => err.code === 'KZ_ERR_CONFIG' && message.test(err.message));
    }
  });

  test('on loopback without a token: the boards are shown, the playground says it needs a token', async () => {
    const a = await start({ host: '127.0.0.1', port: 0 });
    const port = dashPort(a);
    const session = (await call(port, '/api/session')).json();
    assert.deepEqual(session, { login_required: false, authenticated: true, playground: false });
    const s = await SseReader.open(`http://127.0.0.1:${port}/events`);
    try {
      await s.until(() => boardsOf(s).get('sec-a')?.status.online === true, 10_000, 'sec-a online');
    } finally {
      s.close();
    }
    const r = await call(port, '/api/infer?model=digits', { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: await png() });
    assert.equal(r.status, 503);
    assert.equal(r.json().code, 'KZ_ERR_CONFIG');
    assert.match(r.json().message!, /--dashboard-token/);
    await a.stop();
    agents.pop();
  });

  test('off loopback with the token: a login is needed (Bearer or session cookie), the playground runs over TLS as the dashboard app', async () => {
    // Listens on every interface; this test talks to it over loopback only.
    const a = await start({ host: '127.0.0.1', port: 0, dashboardHost: '0.0.0.0', dashboardToken: token });
    const port = dashPort(a);
    assert.equal((await call(port, '/')).status, 200, 'the page itself is public');
    assert.deepEqual((await call(port, '/api/session')).json(), { login_required: true, authenticated: false, playground: true });
    const anon = await SseReader.open(`http://127.0.0.1:${port}/events`);
    assert.equal(anon.status, 401);
    assert.equal(JSON.parse(anon.body).code, 'KZ_ERR_UNAUTHORIZED');
    const image = await png();
    const infer = (headers: Record<string, string>) => call(port, '/api/infer?model=digits', { method: 'POST', headers: { 'Content-Type': 'image/png', ...headers }, body: image });
    assert.equal((await infer({})).status, 401);
    assert.equal((await infer({ Authorization: `Bearer ${token}x` })).status, 401);
    assert.equal((await infer({ Authorization: `Bearer ${issueToken(creds, 'app', 'other')}` })).status, 401, 'another app token of the mesh is not the dashboard\'s');

    // Bearer: each request.
    const bearer = await SseReader.open(`http://127.0.0.1:${port}/events`, { Authorization: `Bearer ${token}` });
    assert.equal(bearer.status, 200);
    bearer.close();

    // Login: a session cookie, HttpOnly and SameSite=Strict, holding a random id and not the token.
    const json = { 'Content-Type': 'application/json' };
    const wrong = await call(port, '/api/login', { method: 'POST', headers: json, body: JSON.stringify({ token: token.slice(0, -2) }) });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers['set-cookie'], undefined);
    assert.equal((await call(port, '/api/login', { method: 'POST', headers: { ...json, Origin: 'http://evil.example' }, body: JSON.stringify({ token }) })).status, 403);
    const ok = await call(port, '/api/login', { method: 'POST', headers: json, body: JSON.stringify({ token }) });
    assert.equal(ok.status, 200);
    const setCookie = ok.headers['set-cookie']![0]!;
    assert.match(setCookie, /^kizuna_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\//);
    assert.ok(!setCookie.includes(token.split('.')[2]!), 'the token is not in the cookie');
    const cookie = setCookie.split(';')[0]!;
    assert.deepEqual((await call(port, '/api/session', { headers: { Cookie: cookie } })).json(), { login_required: true, authenticated: true, playground: true });
    const s = await SseReader.open(`http://127.0.0.1:${port}/events`, { Cookie: cookie });
    try {
      assert.equal(s.status, 200);
      await s.until(() => boardsOf(s).get('sec-a')?.status.online === true, 10_000, 'sec-a online');
    } finally {
      s.close();
    }
    const answered = await infer({ Cookie: cookie });
    assert.equal(answered.status, 200, answered.body);
    assert.equal((answered.json().answers as { label: string }[])[0]!.label, String(digit.label));
    // Logged out: the session is gone.
    assert.equal((await call(port, '/api/logout', { method: 'POST', headers: { Cookie: cookie } })).status, 204);
    assert.equal((await infer({ Cookie: cookie })).status, 401);
    assert.equal((await call(port, '/api/session', { headers: { Cookie: 'kizuna_session=forged' } })).json().authenticated, false);
  });
});
