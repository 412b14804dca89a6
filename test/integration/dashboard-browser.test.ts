/**
 * The dashboard end to end in real headless Chromium (Debian's, driven by playwright-core): a mesh
 * of three agent processes on loopback, one serving the dashboard; the page shows the live boards
 * with their roles, answers a digit dropped into the playground (and draws a detector's boxes when
 * the shared YOLOX-Nano is there), shows a SIGKILLed board go offline (the time it took is printed:
 * the health benchmark's death_to_offline_ms), and leaves a screenshot in test-artifacts/.
 * Skips, saying why, where /usr/bin/chromium is missing; CI installs it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Browser, Page } from 'playwright-core';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';
import type { Agent } from '../../agent/agent.js';
import { initMesh, issueToken } from '../../agent/credentials.js';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { ARTIFACTS, chromiumMissing, launchChromium, offlineShownAt, openDashboard, untilBoardsShown } from '../helpers/browser.js';
import { startAgent } from '../helpers/agent.js';
import { spawnAgent } from '../helpers/cli.js';
import { MeshWatch } from '../helpers/mesh-watch.js';
import { freePorts } from '../helpers/ports.js';
import { sharedPath } from '../helpers/shared.js';
import { sharedModelsDir, type SharedModels } from '../helpers/shared-models.js';

const missing = chromiumMissing();
const NODES = ['board-a', 'board-b', 'board-c'] as const;

describe('the dashboard in headless Chromium', { skip: missing }, () => {
  const procs = new Map<string, ChildProcess>();
  const logs = new Map<string, () => string>();
  let dir: string;
  let shared: SharedModels | undefined;
  let dashboardUrl: string;
  let urls: string[];
  let roles: Record<string, string>;
  let browser: Browser;
  let page: Page;
  const digit = loadDigits().heldOut[7]!;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-dash-browser-'));
    // The detector only where the shared folder has it (the digit part needs nothing from it).
    shared = await sharedModelsDir(['yolox-nano']);
    const ports = await freePorts(3);
    const peers = (i: number) => ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`).join(',');
    const start = async (i: number, extra: string[]) => {
      const node = NODES[i]!;
      const s = await spawnAgent(['--port', String(ports[i]), '--node', node, '--peers', peers(i), '--data-dir', path.join(dir, node), '--keepalive-seconds', '1', '--health-interval-s', '0.5', ...extra]);
      procs.set(node, s.child);
      logs.set(node, s.stderr);
      return s;
    };
    // board-a first and alone in its formation window: the broker, and the one serving the page.
    const models = 'dir' in shared ? ['--models', `${BUILTIN_MODELS_DIR},${shared.dir}`] : [];
    const a = await start(0, ['--formation-ms', '0', '--dashboard-port', '0', ...models]);
    urls = ports.map((p) => `mqtt://127.0.0.1:${p}`);
    dashboardUrl = /dashboard on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(a.stderr())![1]!;
    await Promise.all([start(1, ['--formation-ms', '400']), start(2, ['--formation-ms', '400'])]);
    const watch = await MeshWatch.connect(ports.map((p) => `mqtt://127.0.0.1:${p}`));
    try {
      await watch.until((w) => Object.values(w.roles()).sort().join() === 'agent,broker,standby', 15_000, 'a broker, a standby and an agent');
      roles = watch.roles();
    } finally {
      await watch.close();
    }
    browser = await launchChromium();
    page = await openDashboard(browser, dashboardUrl);
  });

  after(async () => {
    await browser?.close();
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    if (shared && 'dir' in shared) await shared.remove();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('shows the live boards with their roles, addresses and models', async () => {
    await untilBoardsShown(page, roles);
    assert.equal(await page.locator('#boards tbody tr').count(), 3);
    assert.equal((await page.textContent('#tile-online'))?.trim(), '3 / 3');
    assert.equal((await page.textContent('#tile-broker'))?.trim(), 'board-a');
    assert.match((await page.textContent('#mesh-name')) ?? '', /mesh home/);
    const rowA = page.locator('#boards tbody tr[data-node="board-a"]');
    assert.match((await rowA.textContent()) ?? '', /broker.*online.*127\.0\.0\.1:\d+.*digits/);
    // Four charts drawn (empty ones say so until health reports arrive).
    assert.equal(await page.locator('.charts svg.chart').count(), 4);
  });

  test('the playground answers a digit dropped in through the mesh', async () => {
    const file = path.join(dir, `digit-${digit.label}.png`);
    await fs.writeFile(file, await digitToPng(digit.pixels));
    await page.waitForSelector('#model option[value="digits"]', { state: 'attached', timeout: 10_000 });
    await page.selectOption('#model', 'digits');
    await page.setInputFiles('#file', file);
    await page.waitForSelector('#answer[data-state="done"], #answer[data-state="error"]', { timeout: 20_000 });
    const answer = page.locator('#answer');
    assert.equal(await answer.getAttribute('data-state'), 'done', (await answer.textContent()) ?? '');
    assert.equal(await answer.getAttribute('data-label'), String(digit.label));
    assert.equal((await page.textContent('#answer-label'))?.trim(), String(digit.label));
    assert.ok(NODES.includes((await answer.getAttribute('data-agent')) as (typeof NODES)[number]));
    assert.ok(await page.isVisible('#picture'));
    assert.ok((await page.locator('#answer .scores li').count()) >= 3, 'the top classes with their scores');
  });

  test('the charts and figures follow the boards\' health reports while the mesh works', async () => {
    // Work for the mesh until the page shows a throughput (health every 0.5 s here).
    const client = await KizunaClient.connect({ url: [...urls], client: 'load', timeoutMs: 20_000 });
    const input = { input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digit.pixels } };
    let busy = true;
    const load = (async () => {
      while (busy) await Promise.all(Array.from({ length: 8 }, () => client.infer('digits', input)));
    })();
    try {
      await page.locator('#tile-rate', { hasText: /^[1-9]/ }).waitFor({ timeout: 15_000 });
      await page.waitForSelector('#chart-rate polyline', { state: 'attached', timeout: 10_000 });
    } finally {
      busy = false;
      await load;
      await client.close();
    }
    assert.equal(await page.locator('#chart-load polyline').count(), 3, 'a load line per board');
    const rowB = page.locator('#boards tbody tr[data-node="board-b"]');
    assert.match((await rowB.locator('td').nth(5).textContent()) ?? '', /^\d+%$/, 'load shown');
    assert.match((await rowB.locator('td').nth(7).textContent()) ?? '', /MiB/, 'memory shown');
    assert.equal(await page.isHidden('#no-health'), true);
  });

  test('a SIGKILLed board shows offline, with its time of death; the time it took is measured', async (t) => {
    // The plain agent: killing it changes no role, so the rest of the page stays as it was.
    const victim = Object.entries(roles).find(([, r]) => r === 'agent')![0];
    await page.waitForSelector(`#boards tbody tr[data-node="${victim}"][data-state="online"]`, { timeout: 10_000 });
    const t0 = Date.now();
    procs.get(victim)!.kill('SIGKILL');
    const shownAt = await offlineShownAt(page, victim, 15_000);
    const ms = shownAt - t0;
    t.diagnostic(`death_to_offline_ms ${ms} (SIGKILL of ${victim} to the dashboard page showing it offline; MQTT keepalive 1 s)`);
    console.log(`dashboard: ${victim} SIGKILLed, shown offline on the page after ${ms} ms`);
    assert.ok(ms >= 0 && ms < 6000, `shown offline after ${ms} ms`);
    const row = page.locator(`#boards tbody tr[data-node="${victim}"]`);
    assert.match((await row.textContent()) ?? '', /offline since \d\d:\d\d:\d\d/);
    assert.equal((await page.textContent('#tile-online'))?.trim(), '2 / 3');
    // The others are still shown live, in their roles.
    await untilBoardsShown(page, Object.fromEntries(Object.entries(roles).filter(([n]) => n !== victim)), 5000);
  });

  test('a screenshot of the dashboard is kept as a test artefact', async () => {
    await fs.mkdir(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    const png = await fs.readFile(file);
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    console.log(`dashboard screenshot: ${file}`);
  });

  test('a detector\'s boxes are drawn over the picture (shared YOLOX-Nano)', async (t) => {
    const bus = sharedPath('samples', 'coco', 'bus.jpg');
    if (!shared || !('dir' in shared) || !bus) return t.skip(`shared model or sample missing: ${shared && 'missing' in shared ? shared.missing : 'samples/coco/bus.jpg'}`);
    await page.waitForSelector('#model option[value="yolox-nano"]', { state: 'attached', timeout: 10_000 });
    await page.selectOption('#model', 'yolox-nano');
    await page.setInputFiles('#file', bus);
    await page.waitForSelector('#answer[data-state="done"][data-label], #answer[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('#answer', 'data-state'), 'done', (await page.textContent('#answer')) ?? '');
    const boxes = page.locator('#boxes rect.box');
    assert.ok((await boxes.count()) >= 2, 'boxes drawn');
    const labels = await page.locator('#boxes text').allTextContents();
    assert.ok(labels.some((l) => l.startsWith('bus')) && labels.some((l) => l.startsWith('person')), labels.join(', '));
    // The overlay is in the image's own pixels: its viewBox is the picture's natural size.
    const [w, h] = (await page.evaluate("[document.getElementById('picture').naturalWidth, document.getElementById('picture').naturalHeight]")) as [number, number];
    assert.equal(await page.getAttribute('#boxes', 'viewBox'), `0 0 ${w} ${h}`);
    const file = path.join(ARTIFACTS, 'dashboard-detector.png');
    await fs.mkdir(ARTIFACTS, { recursive: true });
    await page.locator('#playground').screenshot({ path: file });
    console.log(`dashboard detector screenshot: ${file}`);
  });

  test('a frozen board (SIGSTOP: a hung process, or a board whose power or cable was cut) shows offline after 1.5 keepalives', async (t) => {
    const frozen = Object.entries(roles).find(([, r]) => r === 'standby')![0];
    await page.waitForSelector(`#boards tbody tr[data-node="${frozen}"][data-state="online"]`, { timeout: 10_000 });
    const t0 = Date.now();
    procs.get(frozen)!.kill('SIGSTOP');
    const ms = (await offlineShownAt(page, frozen, 15_000)) - t0;
    t.diagnostic(`silent_to_offline_ms ${ms} (SIGSTOP of ${frozen}: its socket stays open, the broker waits 1.5 keepalives of 1 s)`);
    console.log(`dashboard: ${frozen} frozen, shown offline on the page after ${ms} ms`);
    // The broker counts 1.5 keepalives from the last packet it had (a ping or a report up to 0.5 s earlier).
    assert.ok(ms >= 500 && ms < 5000, `shown offline after ${ms} ms`);
  });
});

describe('the dashboard\'s login in headless Chromium (a mesh with credentials, the dashboard off loopback)', { skip: missing }, () => {
  let root: string;
  let agent: Agent;
  let browser: Browser;
  let token: string;

  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-dash-login-'));
    const creds = initMesh(root, 'home', 'login-a');
    token = issueToken(creds, 'app', 'dashboard');
    // The dashboard listens on every interface (so it asks for a login); the browser uses loopback.
    agent = await startAgent({ dataDir: root, node: 'login-a', dashboardPort: 0, dashboardHost: '0.0.0.0', dashboardToken: token, logLevel: 'error' });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await agent?.stop();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  test('asks for the token, refuses a wrong one, then shows the mesh and answers through TLS; the session cookie is out of the page\'s reach', async () => {
    const page = await browser.newPage();
    await page.goto(agent.dashboard!.url);
    await page.waitForSelector('#login:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.isHidden('#main'), true);
    await page.fill('#login-token', `${token}x`);
    await page.click('#login-form button[type="submit"]');
    await page.locator('#login-error', { hasText: /not the dashboard token/ }).waitFor({ timeout: 10_000 });
    await page.fill('#login-token', token);
    await page.click('#login-form button[type="submit"]');
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
    await untilBoardsShown(page, { 'login-a': 'broker' });
    assert.equal(await page.evaluate('document.cookie'), '', 'HttpOnly: no script reads the session');
    const cookies = await page.context().cookies();
    assert.equal(cookies.find((c) => c.name === 'kizuna_session')?.httpOnly, true);
    const file = path.join(root, 'digit.png');
    const digit = loadDigits().heldOut[3]!;
    await fs.writeFile(file, await digitToPng(digit.pixels));
    await page.waitForSelector('#model option[value="digits"]', { state: 'attached', timeout: 10_000 });
    await page.selectOption('#model', 'digits');
    await page.setInputFiles('#file', file);
    await page.waitForSelector('#answer[data-state="done"], #answer[data-state="error"]', { timeout: 20_000 });
    assert.equal(await page.getAttribute('#answer', 'data-label'), String(digit.label), (await page.textContent('#answer')) ?? '');
    await page.click('#logout');
    await page.waitForSelector('#login:not([hidden])', { timeout: 10_000 });
    await page.reload();
    await page.waitForSelector('#login:not([hidden])', { timeout: 10_000 });
    await page.close();
  });
});

