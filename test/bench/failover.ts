/**
 * `npm run bench -- failover`: how long the mesh is without service when its broker dies, and
 * whether any request is lost, with real processes on real (namespaced) hosts and real mDNS.
 *
 * Lab: 4 hosts (network namespaces, 10.77.0.11-14). Agents `fa`, `fb`, `fc` in hosts 1-3 (same
 * machine, so the node id decides the rank). Four apps in host 4, each test/netns/fixtures/driver.js (a
 * KizunaClient; 4 lanes of request -> answer -> 50 ms pause: a request every ~13 ms, at most 4 in
 * flight), that differ in what they know and how they are configured:
 *   app        all three agents' URLs, the broker's last; the client's defaults (keepalive 2 s,
 *              resend 2 s). The headline: what an app written as the README says sees.
 *   app-ka1    the same URLs with keepalive 1 s and resend 1 s (the settings of the namespace
 *              tests' driver, test/netns/fixtures/driver.ts).
 *   on-broker  defaults, the broker's URL FIRST: the app is connected to the board that dies.
 *   survivors  defaults, only the two survivors' URLs: the mesh's own failover, without the app's
 *              choice of URL.
 *
 * Each trial starts from a settled mesh of 3 with fresh apps, and injects one fault into the
 * broker's host:
 *   kill  the broker PROCESS gets SIGKILL; then it is started again (same node id and data
 *         directory) and must rejoin as a follower;
 *   cut   the broker HOST loses its link (no RST: its switch port goes down); then the link comes
 *         back and the old broker must step down and end as a follower.
 * The apps run through the fault, the failover, the return and until the mesh of 3 has settled
 * again plus 50 answers, so `lost` covers the whole trial.
 *
 * Figures per trial (all on this machine's clock, which every namespace shares):
 *   failover   fault -> the first answer an app got at or after the moment a survivor logged
 *              "becoming the broker" (the old broker is dead or unreachable by then, so that answer
 *              went through the new broker);
 *   detect     fault -> the first survivor's "broker ... is gone; electing";
 *   elected    fault -> the new broker's "becoming the broker";
 *   followed   fault -> the other survivor's "following broker <new>";
 *   lost       sent - answered; duplicates: replies seen twice for one id by each app's second
 *              subscriber.
 *
 * Options: --trials N (per fault kind, 10), --kinds kill,cut, --budget S (whole run, 540 s: no new
 * trial starts after it), --log-level info|debug (agents), --keep-logs DIR (agents' and apps' logs).
 */
import { parseArgs } from 'node:util';
import { table } from '../../agent/stats.js';
import {
  Driver,
  MeshLab,
  dist,
  findLog,
  fmt,
  holder,
  labUnavailable,
  poll,
  progress,
  sleep,
  type AgentProc,
  type DriverOptions,
  type DriverSummary,
} from './fixtures/mesh-lab.js';

type Kind = 'kill' | 'cut';
const KINDS: Kind[] = ['kill', 'cut'];
const GOAL_MS: Record<Kind, number> = { kill: 1000, cut: 3000 };
const KIND_LABEL: Record<Kind, string> = { kill: 'broker process killed (SIGKILL)', cut: 'broker host cut off (link down)' };
const KIND_KEY: Record<Kind, string> = { kill: 'process_kill', cut: 'host_cut' };
const AGENT_HOSTS = [1, 2, 3];
const APP_HOST = 4;
const NODES: Record<number, string> = { 1: 'fa', 2: 'fb', 3: 'fc' };

/** The apps of every trial. `urls` orders the hosts: the broker `b` and the survivors `s`. */
const APPS = {
  app: { label: 'app (defaults, broker URL last)', key: '', urls: (b: number, s: number[]) => [...s, b], client: {} },
  'app-ka1': { label: 'app, keepalive 1 s, resend 1 s', key: '_ka1', urls: (b: number, s: number[]) => [...s, b], client: { keepaliveS: 1, resendMs: 1000 } },
  'on-broker': { label: 'app on the broker\'s board (its URL first)', key: '_on_broker', urls: (b: number, s: number[]) => [b, ...s], client: {} },
  survivors: { label: 'app knowing only the survivors', key: '_survivors_only', urls: (_b: number, s: number[]) => [...s].reverse(), client: {} },
} satisfies Record<string, { label: string; key: string; urls: (b: number, s: number[]) => number[]; client: Partial<DriverOptions> }>;
type App = keyof typeof APPS;
const APP_NAMES = Object.keys(APPS) as App[];

interface AppResult {
  /** Fault -> first answer at or after the new broker's start. */
  failoverMs?: number;
  /** The app's silence that this first answer ended. */
  gapMs?: number;
  summary?: DriverSummary;
  lost?: number;
}

interface Trial {
  kind: Kind;
  k: number;
  broker: string;
  newBroker?: string;
  term?: number;
  /** How long injecting the fault took (the `ip` command for a cut): it took effect within this. */
  faultTookMs?: number;
  detectMs?: number;
  electedMs?: number;
  followedMs?: number;
  apps: Partial<Record<App, AppResult>>;
  /** Restart (kill) or link restore (cut) -> the mesh of 3 settled again. */
  rejoinMs?: number;
  rejoinedAs?: string;
  error?: string;
}

async function formMesh(mesh: MeshLab): Promise<void> {
  const t0 = Date.now();
  await Promise.all(AGENT_HOSTS.map((n) => mesh.startAgent(n, NODES[n]!)));
  await mesh.settled(APP_HOST, AGENT_HOSTS, 20_000);
  progress(`mesh of ${AGENT_HOSTS.length} formed and settled in ${Date.now() - t0} ms`);
}

/** One fault, measured; the mesh is back to 3 settled agents when it resolves. */
async function trial(mesh: MeshLab, kind: Kind, k: number): Promise<Trial> {
  const views = await mesh.settled(APP_HOST, AGENT_HOSTS, 15_000);
  const b = holder(views, 'broker');
  const old = mesh.agents.get(b)!;
  const survivors = AGENT_HOSTS.filter((n) => n !== b);
  const result: Trial = { kind, k, broker: old.node, apps: {} };
  const drivers = new Map<App, Driver>();
  try {
    for (const app of APP_NAMES) {
      const spec = APPS[app];
      drivers.set(app, await Driver.start(mesh, APP_HOST, spec.urls(b, survivors).map((n) => mesh.url(n)), { client: `fo-${kind}-${k}-${app}`, ...spec.client }));
    }
    await Promise.all([...drivers.values()].map((d) => d.more(50)));
    // ---- the fault
    const faultAt = Date.now();
    if (kind === 'kill') old.proc.kill('SIGKILL');
    else await mesh.lab.cut(b);
    result.faultTookMs = Date.now() - faultAt;
    // ---- the new broker, from the survivors' logs
    const survivorProcs = survivors.map((n) => mesh.agents.get(n)!);
    const elected = await poll(
      () => {
        for (const a of survivorProcs) {
          const e = findLog(a.proc, /becoming the broker \(term (\d+)\)/, faultAt);
          if (e) return { agent: a, t: e.t, term: Number(e.match[1]) };
        }
        return undefined;
      },
      20_000,
      () => `a survivor becoming the broker after the ${kind} of ${old.node}\n${mesh.tails()}`,
    );
    result.newBroker = elected.agent.node;
    result.term = elected.term;
    result.electedMs = elected.t - faultAt;
    const detects = survivorProcs.map((a) => findLog(a.proc, /broker \S+ \(term \d+\) is gone; electing/, faultAt)?.t).filter((t): t is number => t !== undefined);
    if (detects.length) result.detectMs = Math.min(...detects) - faultAt;
    const other = survivorProcs.find((a) => a !== elected.agent)!;
    const followed = await poll(() => findLog(other.proc, new RegExp(`following broker ${elected.agent.node} `), faultAt), 15_000, () => `${other.node} following ${elected.agent.node}`).catch(() => undefined);
    if (followed) result.followedMs = followed.t - faultAt;
    await Promise.all(
      [...drivers].map(async ([app, d]) => {
        const first = await poll(() => d.firstAfter(Math.max(elected.t, faultAt)), 40_000, () => `an answer to ${app} after ${elected.agent.node} became broker`);
        await d.more(50, 30_000);
        result.apps[app] = { failoverMs: first.t - faultAt, gapMs: d.silenceBefore(first.t) };
      }),
    );
    const f = (app: App) => fmt(result.apps[app]?.failoverMs);
    progress(
      `${kind} #${k}: ${old.node} -> ${elected.agent.node} (term ${elected.term}): first answer after ${APP_NAMES.map((a) => `${a} ${f(a)}`).join(', ')} ms ` +
        `(detect ${fmt(result.detectMs)}, elected ${result.electedMs}, followed ${fmt(result.followedMs)})`,
    );
    // ---- back to three: the old broker returns and must follow
    await mesh.settled(APP_HOST, survivors, 20_000);
    const backAt = Date.now();
    let back: AgentProc;
    if (kind === 'kill') {
      await poll(() => (old.proc.exitCode !== null || old.proc.signalCode !== null ? true : undefined), 5000, () => `${old.node} exiting`);
      back = mesh.spawnAgent(b, old.node);
      await back.proc.waitForOutput(/serving mesh .* as (\S+)$/, 30_000);
    } else {
      await mesh.lab.restore(b);
      back = old;
    }
    const after = await mesh.settled(APP_HOST, AGENT_HOSTS, 40_000);
    result.rejoinMs = Date.now() - backAt;
    const role = after.get(b);
    result.rejoinedAs = role && 'role' in role ? role.role : 'unknown';
    if (result.rejoinedAs === 'broker') throw new Error(`${old.node} is broker again after its return`);
    if (kind === 'cut' && !findLog(back.proc, /stepping down/, faultAt)) throw new Error(`${old.node} is a follower again but never logged "stepping down"`);
    await Promise.all([...drivers.values()].map((d) => d.more(50)));
  } catch (err) {
    result.error = (err as Error).message.split('\n')[0];
    progress(`${kind} #${k} FAILED: ${(err as Error).message}`);
  } finally {
    for (const [app, d] of drivers) {
      const summary = await d.stop().catch((err: Error) => {
        result.error ??= `${app}: ${err.message.split('\n')[0]}`;
        return undefined;
      });
      if (summary) Object.assign((result.apps[app] ??= {}), { summary, lost: summary.sent - summary.answered });
    }
  }
  const s = APP_NAMES.map((app) => {
    const r = result.apps[app];
    return r?.summary ? `${app} ${r.summary.sent}/${r.lost}/${r.summary.duplicates}` : `${app} no summary`;
  });
  progress(`${kind} #${k}: sent/lost/dup ${s.join(', ')}; back to 3 in ${fmt(result.rejoinMs)} ms (${old.node} as ${result.rejoinedAs ?? '?'})`);
  return result;
}

/** After a failed trial: every agent stopped, a fresh mesh formed. */
async function reform(mesh: MeshLab): Promise<void> {
  for (const n of AGENT_HOSTS) mesh.agents.get(n)?.proc.kill('SIGKILL');
  await sleep(500);
  for (const n of AGENT_HOSTS) await mesh.lab.restore(n);
  for (const n of AGENT_HOSTS) await mesh.stopAgent(n, 100);
  await formMesh(mesh);
}

function report(trials: Trial[], kinds: Kind[], figures: Record<string, unknown>): void {
  console.log('Failover: 3 agents in network namespaces (real mDNS); 4 apps in a 4th host, each sending continuously (4 lanes, 50 ms pause):');
  for (const app of APP_NAMES) console.log(`  ${app.padEnd(10)} ${APPS[app].label}`);
  console.log('times in ms from the fault; failover = the app\'s first answer at or after the new broker started\n');
  const a = (t: Trial, app: App) => t.apps[app] ?? {};
  const rows = trials.map((t) => [
    t.kind,
    t.k,
    `${t.broker}->${t.newBroker ?? '?'}`,
    fmt(t.faultTookMs),
    fmt(t.detectMs),
    fmt(t.electedMs),
    fmt(t.followedMs),
    ...APP_NAMES.map((app) => fmt(a(t, app).failoverMs)),
    APP_NAMES.reduce((sum, app) => sum + (a(t, app).summary?.sent ?? 0), 0),
    APP_NAMES.map((app) => a(t, app).lost ?? '-').join('/'),
    APP_NAMES.map((app) => a(t, app).summary?.duplicates ?? '-').join('/'),
    fmt(t.rejoinMs),
    t.rejoinedAs ?? '-',
    t.error ? `FAILED: ${t.error.slice(0, 70)}` : '',
  ]);
  console.log(table(['fault', '#', 'broker', 'inject', 'detect', 'elected', 'followed', ...APP_NAMES, 'sent', 'lost', 'dup', 'back to 3', 'returned as', ''], rows));
  console.log('');
  const summaryRows: (string | number)[][] = [];
  let lost = 0;
  let duplicates = 0;
  for (const kind of kinds) {
    const mine = trials.filter((t) => t.kind === kind);
    const key = KIND_KEY[kind];
    const failed = mine.filter((t) => t.error).length;
    const d = dist(mine.map((t) => t.detectMs ?? NaN));
    const e = dist(mine.map((t) => t.electedMs ?? NaN));
    const r = dist(mine.map((t) => t.rejoinMs ?? NaN));
    Object.assign(figures, {
      [`${key}_trials`]: mine.length,
      [`${key}_failed_trials`]: failed,
      [`${key}_detect_p50_ms`]: d.p50,
      [`${key}_elected_p50_ms`]: e.p50,
      [`${key}_elected_p95_ms`]: e.p95,
      [`${key}_rejoin_p50_ms`]: r.p50,
    });
    for (const app of APP_NAMES) {
      const f = dist(mine.map((t) => a(t, app).failoverMs ?? NaN));
      const appLost = mine.reduce((sum, t) => sum + (a(t, app).lost ?? 0), 0);
      const appDup = mine.reduce((sum, t) => sum + (a(t, app).summary?.duplicates ?? 0), 0);
      lost += appLost;
      duplicates += appDup;
      const met = f.n === mine.length && f.n > 0 && f.p95 <= GOAL_MS[kind] && appLost === 0;
      const k2 = `${key}${APPS[app].key}`;
      Object.assign(figures, { [`${k2}_p50_ms`]: f.p50, [`${k2}_p95_ms`]: f.p95, [`${k2}_max_ms`]: f.max, [`${k2}_lost`]: appLost, [`${k2}_duplicates`]: appDup, [`${k2}_goal_met`]: met });
      summaryRows.push([
        app === APP_NAMES[0] ? KIND_LABEL[kind] : '',
        app,
        `${f.n}/${mine.length}`,
        app === APP_NAMES[0] ? `${fmt(d.p50)} / ${fmt(e.p50)} / ${fmt(e.p95)}` : '',
        fmt(f.p50),
        fmt(f.p95),
        fmt(f.max),
        appLost,
        appDup,
        `p95 <= ${GOAL_MS[kind]} ms, 0 lost: ${met ? 'met' : 'NOT met'}${app === 'app' ? ' (headline)' : ''}`,
      ]);
    }
  }
  console.log(table(['fault', 'app', 'trials', 'detect p50 / elected p50 / p95', 'failover p50', 'p95', 'max', 'lost', 'dup', 'goal'], summaryRows));
  const sent = trials.reduce((sum, t) => sum + APP_NAMES.reduce((s2, app) => s2 + (a(t, app).summary?.sent ?? 0), 0), 0);
  const failedTrials = trials.filter((t) => t.error).length;
  Object.assign(figures, { lost, duplicates, requests_sent: sent, failed_trials: failedTrials, lost_goal_met: lost === 0 && failedTrials === 0 });
  console.log(`\nrequests: ${sent} sent over ${trials.length} trials (all apps), lost ${lost} (goal 0: ${lost === 0 ? 'met' : 'NOT met'}), duplicate replies seen ${duplicates}; failed trials ${failedTrials}`);
  console.log(
    'Percentiles are nearest-rank: with 10 trials p95 is the largest. Columns:\n' +
      '  inject     how long injecting the fault took (the `ip` command of a cut: it took effect within it);\n' +
      '  detect     the first survivor logging the broker gone;   elected  the new broker logging "becoming the broker";\n' +
      '  followed   the third agent following the new broker;    app columns: each app\'s failover;\n' +
      '  lost       sent - answered per app over the whole trial (fault, failover, return, settle);\n' +
      '  dup        replies seen twice for one id by each app\'s second subscriber (a lower bound: it misses replies sent while it reconnects);\n' +
      '  back to 3  restart (kill) or link restore (cut) -> the hello views of all 3 agree again, the returned board a follower.',
  );
}

export async function run(argv: string[] = []): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: { trials: { type: 'string' }, kinds: { type: 'string' }, budget: { type: 'string' }, 'log-level': { type: 'string' }, 'keep-logs': { type: 'string' } },
  });
  const trials = Number(values.trials ?? 10);
  const budgetMs = Number(values.budget ?? 540) * 1000;
  const kinds = (values.kinds ?? KINDS.join(',')).split(',').map((s) => s.trim()) as Kind[];
  if (!Number.isInteger(trials) || trials < 1 || trials > 100) throw new Error(`--trials takes 1..100, got ${values.trials}`);
  if (!(budgetMs > 0)) throw new Error(`--budget takes seconds, got ${values.budget}`);
  if (!kinds.length || kinds.some((k) => !KINDS.includes(k))) throw new Error(`--kinds takes kill and/or cut, got ${values.kinds}`);
  const why = labUnavailable();
  if (why) {
    console.log(`failover benchmark SKIPPED: ${why}`);
    return { skipped: why };
  }
  const started = Date.now();
  const mesh = await MeshLab.create(4, { logLevel: values['log-level'] ?? 'info' });
  const results: Trial[] = [];
  const figures: Record<string, unknown> = {};
  try {
    await formMesh(mesh);
    let failedInARow = 0;
    // Interleaved (kill, cut, kill, ...): drift in the machine's load hits both kinds alike.
    trials: for (let k = 1; k <= trials; k++) {
      for (const kind of kinds) {
        if (Date.now() - started > budgetMs) {
          progress(`budget of ${budgetMs / 1000} s reached after ${results.length} trials: stopping`);
          break trials;
        }
        const t = await trial(mesh, kind, k);
        results.push(t);
        if (!t.error) {
          failedInARow = 0;
          continue;
        }
        if (++failedInARow >= 3) {
          progress(`3 trials in a row failed (last: ${t.error}): stopping`);
          break trials;
        }
        await reform(mesh);
      }
    }
  } finally {
    if (values['keep-logs']) mesh.keepLogs(values['keep-logs'], 'failover');
    await mesh.destroy();
  }
  report(results, kinds, figures);
  figures.wall_s = Math.round((Date.now() - started) / 1000);
  figures.goals = { process_kill_p95_ms: GOAL_MS.kill, host_cut_p95_ms: GOAL_MS.cut, lost: 0 };
  figures.headline = 'app: a KizunaClient with the library defaults knowing all 3 URLs, the broker\'s last';
  return figures;
}
