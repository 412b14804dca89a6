/**
 * `npm run bench -- health`: what the health reporter costs a board, and how fast the mesh shows
 * a dead board as offline. Every agent is a real `kizuna agent` process on 127.0.0.1.
 *
 *   cost   three idle agents side by side, measured over the same windows (so machine noise hits
 *          each alike): reports at the default interval (10 s), reports off (healthIntervalS 0:
 *          no timer, no per-request bookkeeping), and reports every 0.1 s. CPU of each process
 *          from /proc/<pid>/stat. reporter_cpu_pct = (on - off) / window, in % of one core (near
 *          the clock-tick resolution of /proc at 10 s: it is the honest figure, noise included);
 *          the fast agent's (fast - off) / reports gives the cost of one report, and
 *          reporter_cpu_pct_extrapolated that cost at the default interval. The reports' own
 *          reporter_cpu_ms (process.cpuUsage around each) and the RSS of each agent too.
 *   load   the on and off agents under the same stream of requests (built-in digits at real
 *          speed, --rate per second), in alternated blocks (on off off on ...): the extra CPU per
 *          request of the reporter's per-request bookkeeping (a worker event tap).
 *   death  a broker agent and a victim agent (same machine, static peers); a subscriber to the
 *          statuses records when the victim's offline status arrives. kill -9 of the victim
 *          (--kills times, restarted in between): death_to_offline_ms is the median from the kill
 *          to that message. The same for a board that goes silent (SIGSTOP: a hung process or a
 *          cut cable, noticed by the broker's keepalive): silent_to_offline_ms. Keepalive 1 s.
 *   dashboard  the same kill -9, seen on the web dashboard of the broker agent (--dashboard-port 0):
 *          from the kill to the page showing the victim offline, in Debian's Chromium when
 *          /usr/bin/chromium exists (the page's table), else on the dashboard's event stream
 *          (`dashboard_death_to_offline_via` says which); dashboard_death_to_offline_ms is the
 *          median of --kills (test/helpers/browser.ts measureDeathToOffline).
 *
 * Options: --parts cost,load,death,dashboard (default all)  --window-s S (cost window, 10)  --rounds N (6)
 *          --rate N (load, requests/s, 100)  --block-s S (load, 5)  --blocks N (per agent, 4)
 *          --kills N (5)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { r2, summarize, table } from '../../agent/stats.js';
import { KizunaClient } from '../../mesh/client.js';
import { parseNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { Transport } from '../../mesh/mqtt.js';
import { parseNodeStatus } from '../../mesh/status.js';
import { parseNodeHealthTopic, parseNodeStatusTopic, topics } from '../../mesh/topics.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { InferenceMeter } from '../../agent/health/inference.js';
import { WorkerTap } from '../../agent/health/tap.js';
import { spawnGuarded, type GuardedChild } from '../helpers/child.js';
import { CLI } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';
import { chromiumMissing, launchChromium, measureDeathToOffline } from '../helpers/browser.js';

interface Options {
  parts: Set<string>;
  windowMs: number;
  rounds: number;
  rate: number;
  blockMs: number;
  blocks: number;
  kills: number;
}

function options(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: { parts: { type: 'string' }, 'window-s': { type: 'string' }, rounds: { type: 'string' }, rate: { type: 'string' }, 'block-s': { type: 'string' }, blocks: { type: 'string' }, kills: { type: 'string' } },
    strict: true,
  });
  const num = (v: string | undefined, d: number, min: number) => {
    const n = v === undefined ? d : Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`bench health: bad number ${v}`);
    return n;
  };
  return {
    parts: new Set((values.parts ?? 'cost,load,death,dashboard').split(',').map((p) => p.trim())),
    windowMs: num(values['window-s'], 10, 1) * 1000, rounds: num(values.rounds, 6, 1), rate: num(values.rate, 100, 1),
    blockMs: num(values['block-s'], 5, 1) * 1000, blocks: num(values.blocks, 4, 1), kills: num(values.kills, 5, 1),
  };
}

// ---------------------------------------------------------------- agent processes

interface Agent {
  child: GuardedChild;
  pid: number;
  url: string;
  node: string;
  /** Its web dashboard, when started with --dashboard-port. */
  dashboardUrl?: string;
}

const dirs: string[] = [];

async function spawnAgent(node: string, extra: string[]): Promise<Agent> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kz-bench-health-${node}-`));
  dirs.push(dir);
  const child = spawnGuarded([CLI, 'agent', '--host', '127.0.0.1', '--port', '0', '--node', node, '--data-dir', dir, '--log-level', 'info', '--threads', '1', ...extra], 2000);
  const lines: string[] = [];
  let dashboardUrl: string | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    let found = 0;
    const timer = setTimeout(() => reject(new Error(`agent ${node} did not serve within 30 s:\n${lines.join('\n')}`)), 30_000);
    child.proc.once('exit', (code, signal) => (clearTimeout(timer), reject(new Error(`agent ${node} exited (${code ?? signal}) before serving:\n${lines.join('\n')}`))));
    readline.createInterface({ input: child.proc.stderr! }).on('line', (line) => {
      if (lines.push(line) > 40) lines.shift();
      found ||= Number(/broker listening on 127\.0\.0\.1:(\d+)/.exec(line)?.[1] ?? 0);
      dashboardUrl ??= /dashboard on (http:\/\/\S+\/)/.exec(line)?.[1];
      if (/serving mesh/.test(line)) {
        clearTimeout(timer);
        resolve(found);
      }
    });
  });
  // The hub of the death part follows no one: its own port. A follower serves through its own port too.
  return { child, pid: child.proc.pid!, url: `mqtt://127.0.0.1:${port}`, node, ...(dashboardUrl ? { dashboardUrl } : {}) };
}

/** CPU time a process has used (user + system), in ms, from /proc/<pid>/stat (10 ms ticks). */
function procCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

function procRssMb(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) / 1024;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A subscriber to the statuses and health reports of the mesh at `url`, recording arrival times. */
async function watch(url: string, onMessage: (kind: 'status' | 'health', node: string, at: number, value: unknown) => void): Promise<Transport> {
  const t = await Transport.connect({ url, keepaliveSeconds: 5 });
  t.onMessage((topic, payload) => {
    const at = performance.now();
    const s = parseNodeStatusTopic(topic);
    if (s) return onMessage('status', s, at, parseNodeStatus(payload));
    const h = parseNodeHealthTopic(topic);
    if (h) onMessage('health', h, at, parseNodeHealth(payload));
  });
  await t.subscribe([topics.allNodeStatus('home'), topics.allNodeHealth('home')], 1);
  return t;
}

// ---------------------------------------------------------------- cost

async function costPart(o: Options): Promise<Record<string, unknown>> {
  const [on, off, fast] = await Promise.all([
    spawnAgent('health-on', ['--discovery', 'none', '--health-interval-s', '10']),
    spawnAgent('health-off', ['--discovery', 'none', '--health-interval-s', '0']),
    spawnAgent('health-fast', ['--discovery', 'none', '--health-interval-s', '0.1']),
  ]);
  const reports = new Map<string, NodeHealth[]>();
  const subs = await Promise.all(
    [on, fast].map((a) =>
      watch(a.url, (kind, node, _at, value) => {
        if (kind !== 'health' || !value) return;
        (reports.get(node) ?? reports.set(node, []).get(node)!).push(value as NodeHealth);
      }),
    ),
  );
  try {
    // Let start-up settle (model loading, first connections) before measuring.
    await sleep(2000);
    const rows: { on: number; off: number; fast: number; fastReports: number }[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const fastBefore = reports.get('health-fast')?.length ?? 0;
      const before = [on, off, fast].map((a) => procCpuMs(a.pid));
      const t0 = performance.now();
      await sleep(o.windowMs);
      const elapsed = performance.now() - t0;
      const after = [on, off, fast].map((a) => procCpuMs(a.pid));
      const pct = (i: number) => ((after[i]! - before[i]!) / elapsed) * 100;
      rows.push({ on: pct(0), off: pct(1), fast: pct(2), fastReports: (reports.get('health-fast')?.length ?? 0) - fastBefore });
      process.stderr.write(`cost round ${r + 1}/${o.rounds}: on ${pct(0).toFixed(3)}%  off ${pct(1).toFixed(3)}%  fast ${pct(2).toFixed(3)}%\n`);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / (xs.length || 1);
    const diffs = rows.map((r) => r.on - r.off);
    const reporterPct = mean(diffs);
    const windowS = (o.windowMs / 1000) * o.rounds;
    const fastReports = rows.reduce((n, r) => n + r.fastReports, 0);
    const perReportMs = ((mean(rows.map((r) => r.fast)) - mean(rows.map((r) => r.off))) / 100) * (windowS * 1000) / Math.max(1, fastReports);
    const selfOn = summarize((reports.get('health-on') ?? []).slice(1).map((h) => h.reporter_cpu_ms));
    const selfFast = summarize((reports.get('health-fast') ?? []).slice(1).map((h) => h.reporter_cpu_ms));
    const rss = [on, off, fast].map((a) => procRssMb(a.pid));
    const fmt = (x: number) => x.toFixed(3);
    console.log(`\ncost: three idle agents side by side, CPU over the same ${o.rounds} windows of ${o.windowMs / 1000} s (/proc/<pid>/stat, 10 ms ticks)\n`);
    console.log(
      table(
        ['agent', 'interval', 'CPU % (mean)', 'min', 'max', 'reports', 'reporter_cpu_ms p50', 'p95', 'RSS MB'],
        [
          ['health-on', '10 s', fmt(mean(rows.map((r) => r.on))), fmt(Math.min(...rows.map((r) => r.on))), fmt(Math.max(...rows.map((r) => r.on))), String(reports.get('health-on')?.length ?? 0), fmt(selfOn.p50), fmt(selfOn.p95), rss[0]!.toFixed(1)],
          ['health-off', 'off', fmt(mean(rows.map((r) => r.off))), fmt(Math.min(...rows.map((r) => r.off))), fmt(Math.max(...rows.map((r) => r.off))), '0', '-', '-', rss[1]!.toFixed(1)],
          ['health-fast', '0.1 s', fmt(mean(rows.map((r) => r.fast))), fmt(Math.min(...rows.map((r) => r.fast))), fmt(Math.max(...rows.map((r) => r.fast))), String(fastReports), fmt(selfFast.p50), fmt(selfFast.p95), rss[2]!.toFixed(1)],
        ],
      ),
    );
    const extrapolated = (perReportMs / 10_000) * 100;
    const selfPct = (selfOn.mean / 10_000) * 100;
    console.log(`\nreporter at 10 s: on - off = ${reporterPct.toFixed(3)}% of one core (rounds: ${diffs.map((d) => d.toFixed(3)).join(', ')});`);
    console.log(`one report costs ${perReportMs.toFixed(3)} ms of CPU (fast - off over ${fastReports} reports), so ${extrapolated.toFixed(4)}% at 10 s;`);
    console.log(`the reports' own reporter_cpu_ms: p50 ${selfOn.p50?.toFixed(3)} ms at 10 s (${selfPct.toFixed(4)}%), ${selfFast.p50?.toFixed(3)} ms at 0.1 s. Goal: under 1% of one core.`);
    return {
      reporter_cpu_pct: Math.round(reporterPct * 1000) / 1000,
      reporter_cpu_pct_rounds: diffs.map((d) => Math.round(d * 1000) / 1000),
      reporter_cpu_ms_per_report: Math.round(perReportMs * 1000) / 1000,
      reporter_cpu_pct_extrapolated: Math.round(extrapolated * 10_000) / 10_000,
      reporter_cpu_ms_self_p50: selfOn.n ? Math.round(selfOn.p50 * 1000) / 1000 : null,
      reporter_cpu_ms_self_fast_p50: selfFast.n ? Math.round(selfFast.p50 * 1000) / 1000 : null,
      reporter_cpu_pct_self: Math.round(selfPct * 10_000) / 10_000,
      agent_idle_cpu_pct_off: Math.round(mean(rows.map((r) => r.off)) * 1000) / 1000,
      rss_mb_on: r2(rss[0]!), rss_mb_off: r2(rss[1]!), rss_mb_fast: r2(rss[2]!),
    };
  } finally {
    await Promise.all(subs.map((s) => s.close(true).catch(() => undefined)));
    await Promise.all([on, off, fast].map((a) => a.child.stop()));
  }
}

// ---------------------------------------------------------------- load

async function loadPart(o: Options): Promise<Record<string, unknown>> {
  const [on, off] = await Promise.all([
    spawnAgent('load-on', ['--discovery', 'none', '--health-interval-s', '10']),
    spawnAgent('load-off', ['--discovery', 'none', '--health-interval-s', '0']),
  ]);
  const digits = loadDigits().heldOut.slice(0, 32);
  const clients = await Promise.all([on, off].map((a) => KizunaClient.connect({ url: a.url, client: `bench-${a.node}`, timeoutMs: 30_000 })));
  try {
    // Warm both up (first inferences, JIT) before measuring.
    for (const c of clients) for (let i = 0; i < 50; i++) await c.infer('digits', { input: { dtype: 'float32', shape: [1, 1, 28, 28], data: digits[i % 32]!.pixels } });
    const per = { on: { cpu: 0, requests: 0 }, off: { cpu: 0, requests: 0 } };
    const order = Array.from({ length: o.blocks * 2 }, (_, i) => (i % 4 === 0 || i % 4 === 3 ? 'on' : 'off') as 'on' | 'off');
    for (const [b, which] of order.entries()) {
      const agent = which === 'on' ? on : off;
      const client = clients[which === 'on' ? 0 : 1]!;
      const before = procCpuMs(agent.pid);
      const sent = await paced(client, digits, o.rate, o.blockMs);
      per[which].cpu += procCpuMs(agent.pid) - before;
      per[which].requests += sent;
      process.stderr.write(`load block ${b + 1}/${order.length} (${which}): ${sent} requests\n`);
    }
    const usPer = (w: 'on' | 'off') => (per[w].cpu * 1000) / Math.max(1, per[w].requests);
    const extraUs = usPer('on') - usPer('off');
    console.log(`\nload: ${o.rate} requests/s of digits, ${o.blocks} blocks of ${o.blockMs / 1000} s per agent, alternated (on off off on ...)\n`);
    console.log(
      table(
        ['agent', 'requests', 'agent CPU ms', 'CPU us per request'],
        (['on', 'off'] as const).map((w) => [w === 'on' ? 'reports every 10 s' : 'reports off', String(per[w].requests), per[w].cpu.toFixed(0), usPer(w).toFixed(1)]),
      ),
    );
    console.log(`\nextra CPU per request with reports on: ${extraUs.toFixed(1)} us (${((extraUs * o.rate) / 1e4).toFixed(3)}% of one core at ${o.rate} req/s; noise included)`);
    const tapUs = tapCost();
    console.log(`the tap alone, in process (topic parsed, accepted, replied, recorded): ${tapUs.toFixed(2)} us per request`);
    return { load_rate_per_s: o.rate, tap_us_per_request: Math.round(tapUs * 100) / 100, load_cpu_us_per_request_on: r2(usPer('on')), load_cpu_us_per_request_off: r2(usPer('off')), load_extra_us_per_request: r2(extraUs) };
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await Promise.all([on, off].map((a) => a.child.stop()));
  }
}

/** CPU per request of the worker tap alone (agent/health/tap.ts), driven in this process: median of 5 runs of 100,000. */
function tapCost(): number {
  const runs: number[] = [];
  for (let r = 0; r < 6; r++) {
    const meter = new InferenceMeter();
    let t = 0;
    const tap = new WorkerTap(meter, { mesh: 'home', node: () => 'pi-a', now: () => (t += 0.5) });
    const n = 100_000;
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const id = String(i);
      tap.onTopic(`kizuna/v1/home/task/pi-a/digits/cam/${id}`);
      tap.onAccepted(`cam/${id}`);
      tap.onReplied(`cam/${id}`);
      if (i % 20_000 === 0) meter.take(1, ['digits']);
    }
    const c = process.cpuUsage(c0);
    if (r > 0) runs.push((c.user + c.system) / n); // the first run warms up
  }
  return summarize(runs).p50;
}

/** Sends `rate` requests per second for `ms` (without waiting for each answer, at most 64 in flight); resolves when all are answered. */
async function paced(client: KizunaClient, digits: { pixels: Float32Array }[], rate: number, ms: number): Promise<number> {
  const total = Math.round((rate * ms) / 1000);
  const t0 = performance.now();
  const pending = new Set<Promise<unknown>>();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    while (pending.size >= 64) await Promise.race(pending);
    const p = client.infer('digits', { input: { dtype: 'float32', shape: [1, 1, 28, 28], data: digits[i % digits.length]!.pixels } }).finally(() => pending.delete(p));
    pending.add(p);
  }
  await Promise.all(pending);
  return total;
}

// ---------------------------------------------------------------- death

async function deathPart(o: Options): Promise<Record<string, unknown>> {
  const [hubPort] = await freePorts(1);
  const hub = await spawnAgent('hub', ['--port', String(hubPort), '--discovery', 'none']);
  const seen: { node: string; at: number; online: boolean; instance: string }[] = [];
  const waiters = new Set<() => void>();
  const sub = await watch(hub.url, (kind, node, at, value) => {
    if (kind !== 'status' || !value) return;
    const s = value as { online: boolean; instance: string };
    seen.push({ node, at, online: s.online, instance: s.instance });
    for (const w of [...waiters]) w();
  });
  const until = (pred: () => boolean, ms: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => (waiters.delete(check), reject(new Error(`not within ${ms} ms: ${what}`))), ms);
      waiters.add(check);
      check();
    });
  const victimArgs = ['--peers', `127.0.0.1:${hubPort}`, '--formation-ms', '300', '--health-interval-s', '10'];
  const kills: number[] = [];
  const silences: number[] = [];
  const dead = new Set<string>();
  const latest = () => seen.filter((s) => s.node === 'victim').at(-1);
  try {
    for (const mode of ['SIGKILL', 'SIGSTOP'] as const) {
      for (let k = 0; k < o.kills; k++) {
        const victim = await spawnAgent('victim', victimArgs);
        await until(() => Boolean(latest()?.online && !dead.has(latest()!.instance)), 10_000, 'the victim online');
        const instance = latest()!.instance;
        dead.add(instance);
        // Let its connection settle (status and first health report sent), as on a running board.
        await sleep(300);
        const t0 = performance.now();
        victim.child.proc.kill(mode);
        await until(() => seen.some((s) => s.node === 'victim' && s.instance === instance && !s.online && s.at >= t0), 10_000, `the victim offline after ${mode}`);
        const ms = seen.find((s) => s.node === 'victim' && s.instance === instance && !s.online && s.at >= t0)!.at - t0;
        (mode === 'SIGKILL' ? kills : silences).push(ms);
        process.stderr.write(`${mode} ${k + 1}/${o.kills}: offline after ${ms.toFixed(1)} ms\n`);
        victim.child.proc.kill('SIGKILL');
        await victim.child.exited;
        await victim.child.stop();
      }
    }
  } finally {
    await sub.close(true).catch(() => undefined);
    await hub.child.stop();
  }
  const k = summarize(kills);
  const s = summarize(silences);
  console.log(`\ndeath: a victim agent following a broker agent (keepalive 1 s); a subscriber to the statuses times the offline status\n`);
  console.log(
    table(
      ['death', 'n', 'median ms', 'min', 'max', 'limit (1.5 keepalives)'],
      [
        ['kill -9 (process gone: its socket closes)', String(k.n), k.p50.toFixed(1), Math.min(...kills).toFixed(1), Math.max(...kills).toFixed(1), '1500'],
        ['SIGSTOP (silent: keepalive timeout)', String(s.n), s.p50.toFixed(1), Math.min(...silences).toFixed(1), Math.max(...silences).toFixed(1), '1500'],
      ],
    ),
  );
  return {
    death_to_offline_ms: r2(k.p50),
    death_to_offline_ms_all: kills.map(r2),
    silent_to_offline_ms: r2(s.p50),
    silent_to_offline_ms_all: silences.map(r2),
    keepalive_s: 1,
  };
}

// ---------------------------------------------------------------- dashboard

/** kill -9 of a board, timed to its row turning offline on the broker agent's dashboard. */
async function dashboardPart(o: Options): Promise<Record<string, unknown>> {
  const [hubPort] = await freePorts(1);
  const hub = await spawnAgent('hub', ['--port', String(hubPort), '--discovery', 'none', '--dashboard-port', '0']);
  if (!hub.dashboardUrl) throw new Error('bench health: the hub logged no dashboard URL');
  const via = chromiumMissing() ? 'sse' : 'chromium';
  if (via === 'sse') process.stderr.write(`dashboard: ${chromiumMissing()}; timing on the event stream instead\n`);
  const browser = via === 'chromium' ? await launchChromium() : undefined;
  const victimArgs = ['--peers', `127.0.0.1:${hubPort}`, '--formation-ms', '300', '--health-interval-s', '10'];
  const kills: number[] = [];
  try {
    for (let k = 0; k < o.kills; k++) {
      const victim = await spawnAgent('victim', victimArgs);
      const r = await measureDeathToOffline({ url: hub.dashboardUrl, node: 'victim', kill: () => void victim.child.proc.kill('SIGKILL'), via, ...(browser ? { browser } : {}) });
      kills.push(r.ms);
      process.stderr.write(`dashboard kill -9 ${k + 1}/${o.kills}: offline on the page after ${r.ms.toFixed(1)} ms (${r.via})\n`);
      await victim.child.exited;
      await victim.child.stop();
    }
  } finally {
    await browser?.close().catch(() => undefined);
    await hub.child.stop();
  }
  const k = summarize(kills);
  console.log(`\ndashboard: kill -9 of a board, until the broker agent's dashboard shows it offline (${via === 'chromium' ? 'in Chromium: the page\'s table' : 'on the event stream: no Chromium here'})\n`);
  console.log(table(['death', 'via', 'n', 'median ms', 'min', 'max'], [['kill -9', via, String(k.n), k.p50.toFixed(1), Math.min(...kills).toFixed(1), Math.max(...kills).toFixed(1)]]));
  return {
    dashboard_death_to_offline_ms: r2(k.p50),
    dashboard_death_to_offline_ms_all: kills.map(r2),
    dashboard_death_to_offline_via: via,
  };
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const o = options(args);
  const figures: Record<string, unknown> = {};
  const started = performance.now();
  try {
    if (o.parts.has('cost')) Object.assign(figures, await costPart(o));
    if (o.parts.has('load')) Object.assign(figures, await loadPart(o));
    if (o.parts.has('death')) Object.assign(figures, await deathPart(o));
    if (o.parts.has('dashboard')) Object.assign(figures, await dashboardPart(o));
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
  figures.cores = os.availableParallelism();
  figures.duration_s = r2((performance.now() - started) / 1000);
  return figures;
}
