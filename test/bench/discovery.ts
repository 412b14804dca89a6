/**
 * `npm run bench -- discovery`: how long a board takes from its agent's process start to the first
 * request served through it, with real processes on real (namespaced) hosts and real mDNS.
 *
 * Two cases, each --trials times (10), in one lab of 4 hosts (10.77.0.11-14):
 *   join   a mesh is up (agents `da` in host 1, the broker, and `db` in host 2); a new board (a fresh
 *          node id and data directory each trial, `aj<k>`, so it ranks first and wins dispatch ties)
 *          starts in host 3 and must find the broker by mDNS. An app in host 4 knows ONLY the new
 *          board's address: the figure is start -> the first answer through that address. Also:
 *          start -> the first answer computed BY the new agent.
 *   alone  no mesh: a first agent (fresh each trial) starts alone in host 1, waits its formation
 *          window (1.5 s) for a broker, then becomes broker; an app in host 4 knows only its address.
 * The app (fixtures/first-answer.js) starts before the agent and retries a refused connection every
 * 10 ms; the agent then holds its connection while it forms. Between trials the new agent stops
 * cleanly (SIGTERM: goodbye in mDNS, offline status) and the mesh settles again.
 *
 * Components, from the agent's own log timestamps (same clock):
 *   node      spawn -> a bare `node -e` prints in a lab host (measured apart, median of 5)
 *   imports   spawn -> `import('dist/agent/agent.js')` done, minus node (measured apart)
 *   models    spawn -> the agent's "model ... loaded" lines (start + imports + loading the models)
 *   listen    -> "broker listening" (the mesh port is open; connections are held)
 *   elect     -> "following broker" (join: mDNS answer + hello) or "becoming the broker" (alone:
 *                the formation window + starting aedes)
 *   serving   -> "serving mesh" (its own MQTT connection, worker, status)
 *   answer    spawn -> the app's first answer through the new board's address
 *
 * Options: --trials N (10), --cases join,alone, --log-level info|debug, --keep-logs DIR.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { table } from '../../agent/stats.js';
import { repoRoot } from '../helpers/shared.js';
import { BENCH_FIXTURE, MeshLab, dist, findLog, findLogs, fmt, labUnavailable, progress, stopProcess, type Dist } from './fixtures/mesh-lab.js';

type Case = 'join' | 'alone';
const CASES: Case[] = ['join', 'alone'];
const GOAL_MS = 1500;
const APP_HOST = 4;
const NEW_HOST: Record<Case, number> = { join: 3, alone: 1 };
const MESH_HOSTS = [1, 2];

interface Trial {
  kind: Case;
  k: number;
  node: string;
  /** ms after the spawn, from the agent's log; undefined when the line never came. */
  models?: number;
  listen?: number;
  elect?: number;
  serving?: number;
  role?: string;
  /** ms after the spawn, from the app. */
  connected?: number;
  answer?: number;
  answerAgent?: string;
  own?: number;
  refused?: Record<string, number>;
  attempts?: number;
  error?: string;
}

interface AppSummary {
  ready: number;
  connected: number | null;
  first: number | null;
  first_agent: string | null;
  own: number | null;
  attempts: number;
  refused: Record<string, number>;
  answers: number;
}

/** spawn -> the first line a node process prints in a lab host, for `script` (median of 5). */
async function baseline(mesh: MeshLab, script: string): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    const p = mesh.lab.spawn(APP_HOST, process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot });
    const m = await p.waitForOutput(/^up (\d+)$/, 20_000);
    samples.push(Number(m[1]) - t0);
    await stopProcess(p, 'SIGKILL', 2000);
  }
  return dist(samples).p50;
}

async function trial(mesh: MeshLab, kind: Case, k: number): Promise<Trial> {
  const n = NEW_HOST[kind];
  const node = kind === 'join' ? `aj${String(k).padStart(2, '0')}` : `solo${String(k).padStart(2, '0')}`;
  const result: Trial = { kind, k, node };
  const app = mesh.lab.spawn(APP_HOST, process.execPath, [BENCH_FIXTURE('first-answer.js'), '--url', mesh.url(n), '--client', `disc-${kind}-${k}`, '--expect-agent', node, '--max-ms', '20000']);
  mesh.others.push({ name: `app-${kind}-${k}`, proc: app });
  try {
    await app.waitForOutput(/"ready":true/, 20_000);
    const dataDir = path.join(mesh.dir, `${kind}-${k}`);
    const agent = mesh.spawnAgent(n, node, { dataDir });
    const t0 = agent.spawnedAt;
    const line = (await app.waitForOutput(/^(\{"summary":true.*\})$/, 30_000))[1]!;
    const s = JSON.parse(line) as AppSummary;
    const since = (t: number | null | undefined) => (t === null || t === undefined ? undefined : t - t0);
    Object.assign(result, { connected: since(s.connected), answer: since(s.first), answerAgent: s.first_agent ?? undefined, own: since(s.own), refused: s.refused, attempts: s.attempts });
    await agent.proc.waitForOutput(/serving mesh/, 10_000).catch(() => undefined);
    result.models = since(findLogs(agent.proc, /^model \S+ loaded/).at(-1)?.t);
    result.listen = since(findLog(agent.proc, /^broker listening/)?.t);
    result.elect = since(findLog(agent.proc, kind === 'join' ? /^following broker / : /^becoming the broker/)?.t);
    const serving = findLog(agent.proc, /serving mesh .* as (\S+)$/);
    result.serving = since(serving?.t);
    result.role = serving?.match[1];
    if (result.answer === undefined) throw new Error(`no answer through ${mesh.addr(n)} within 20 s (app: ${line})`);
    if (kind === 'join' && result.role === 'broker') throw new Error(`${node} became broker instead of joining the mesh`);
  } catch (err) {
    result.error = (err as Error).message.split('\n')[0];
    progress(`${kind} #${k} FAILED: ${(err as Error).message}\n${mesh.tails()}`);
  } finally {
    await stopProcess(app, 'SIGKILL', 1000);
    await mesh.stopAgent(n);
  }
  progress(
    `${kind} #${k} ${node}: first answer through ${mesh.addr(n)} after ${fmt(result.answer)} ms (by ${result.answerAgent ?? '-'}; by ${node} itself ${fmt(result.own)} ms); ` +
      `log: models ${fmt(result.models)}, listen ${fmt(result.listen)}, ${kind === 'join' ? 'following' : 'broker'} ${fmt(result.elect)}, serving ${fmt(result.serving)} as ${result.role ?? '?'}`,
  );
  return result;
}

function report(trials: Trial[], cases: Case[], base: { node: number; imports: number }, figures: Record<string, unknown>): void {
  console.log('Discovery: a board\'s agent process start -> the first request served through its own address (real mDNS, network namespaces);');
  console.log('an app in another host knows only that address; ms after the spawn. join: a mesh (da broker, db) is up; alone: a first agent.\n');
  const rows = trials.map((t) => [
    t.kind,
    t.k,
    t.node,
    fmt(t.models),
    fmt(t.listen),
    fmt(t.elect),
    fmt(t.serving),
    fmt(t.connected),
    fmt(t.answer),
    t.answerAgent ?? '-',
    fmt(t.own),
    Object.entries(t.refused ?? {}).map(([c, v]) => `${c} x${v}`).join(' ') || '-',
    t.error ? `FAILED: ${t.error.slice(0, 60)}` : '',
  ]);
  console.log(table(['case', '#', 'node', 'models', 'listen', 'follow/lead', 'serving', 'app connected', 'first answer', 'by', 'by new agent', 'refused', ''], rows));
  console.log(`\nbaselines in a lab host (median of 5): bare node start ${base.node} ms; node + importing the agent's modules ${base.imports} ms\n`);
  const summary: (string | number)[][] = [];
  for (const kind of cases) {
    const mine = trials.filter((t) => t.kind === kind);
    const d = (pick: (t: Trial) => number | undefined): Dist => dist(mine.map((t) => pick(t) ?? NaN));
    const answer = d((t) => t.answer);
    const own = d((t) => t.own);
    const models = d((t) => t.models);
    const listen = d((t) => (t.listen !== undefined && t.models !== undefined ? t.listen - t.models : undefined));
    const elect = d((t) => (t.elect !== undefined && t.listen !== undefined ? t.elect - t.listen : undefined));
    const toAnswer = d((t) => (t.answer !== undefined && t.elect !== undefined ? t.answer - t.elect : undefined));
    const failed = mine.filter((t) => t.error).length;
    const key = kind === 'join' ? 'discovery' : 'discovery_alone';
    Object.assign(figures, {
      [`${key}_trials`]: mine.length,
      [`${key}_failed_trials`]: failed,
      [`${key}_p50_ms`]: answer.p50,
      [`${key}_p95_ms`]: answer.p95,
      [`${key}_max_ms`]: answer.max,
      [`${key}_by_new_agent_p50_ms`]: own.p50,
      [`${key}_by_new_agent_p95_ms`]: own.p95,
      [`${key}_models_p50_ms`]: models.p50,
      [`${key}_${kind === 'join' ? 'find_broker' : 'formation'}_p50_ms`]: elect.p50,
      [`${key}_goal_met`]: answer.n > 0 && failed === 0 && answer.p95 <= GOAL_MS,
    });
    summary.push([
      kind,
      `${answer.n}/${mine.length}`,
      fmt(models.p50),
      fmt(listen.p50),
      fmt(elect.p50),
      fmt(toAnswer.p50),
      fmt(answer.p50),
      fmt(answer.p95),
      fmt(answer.max),
      `${fmt(own.p50)}/${fmt(own.p95)}`,
      `p95 <= ${GOAL_MS} ms: ${answer.n > 0 && failed === 0 && answer.p95 <= GOAL_MS ? 'met' : 'NOT met'}`,
    ]);
  }
  console.log(table(['case', 'trials', 'start+imports+models p50', '+listen p50', `+find/form p50`, '+to answer p50', 'first answer p50', 'p95', 'max', 'by new agent p50/p95', 'goal'], summary));
  console.log(
    '\nPercentiles are nearest-rank (10 trials: p95 is the largest). Components are medians of each step\'s own duration:\n' +
      '  start+imports+models  spawn -> the last "model ... loaded" log line (the baselines above split off node\'s start and the imports);\n' +
      '  +listen               -> "broker listening" (the port is open, connections held);\n' +
      '  +find/form            join: -> "following broker" (mDNS query answered, hello to the broker); alone: -> "becoming the broker"\n' +
      '                        (the whole formation window, then aedes);\n' +
      '  +to answer            -> the app\'s first answer (held connection piped/handed over, CONNACK, subscribe, request, answer).\n' +
      'discovery_p95_ms is the join case (the goal applies to a board joining a mesh); the alone case includes the 1.5 s formation\n' +
      'window by design. "by new agent": the first answer computed by the new board itself (its status online at the dispatcher).',
  );
  Object.assign(figures, { node_start_ms: base.node, node_imports_ms: base.imports, goal_ms: GOAL_MS });
}

export async function run(argv: string[] = []): Promise<Record<string, unknown>> {
  const { values } = parseArgs({ args: argv, options: { trials: { type: 'string' }, cases: { type: 'string' }, 'log-level': { type: 'string' }, 'keep-logs': { type: 'string' } } });
  const trials = Number(values.trials ?? 10);
  const cases = (values.cases ?? CASES.join(',')).split(',').map((s) => s.trim()) as Case[];
  if (!Number.isInteger(trials) || trials < 1 || trials > 100) throw new Error(`--trials takes 1..100, got ${values.trials}`);
  if (!cases.length || cases.some((c) => !CASES.includes(c))) throw new Error(`--cases takes join and/or alone, got ${values.cases}`);
  const why = labUnavailable();
  if (why) {
    console.log(`discovery benchmark SKIPPED: ${why}`);
    return { skipped: why };
  }
  const started = Date.now();
  const mesh = await MeshLab.create(4, { logLevel: values['log-level'] ?? 'info' });
  const results: Trial[] = [];
  const figures: Record<string, unknown> = {};
  let base = { node: NaN, imports: NaN };
  try {
    const agentModule = path.join(repoRoot, 'dist', 'agent', 'agent.js');
    base = {
      node: await baseline(mesh, 'console.log("up " + Date.now())'),
      imports: await baseline(mesh, `await import(${JSON.stringify(agentModule)}); console.log("up " + Date.now())`),
    };
    progress(`baselines: node start ${base.node} ms, node + agent imports ${base.imports} ms`);
    // alone first: no other agent may be in the lab while a first agent forms.
    for (const kind of [...cases].sort((a, b) => (a === 'alone' ? -1 : b === 'alone' ? 1 : 0))) {
      if (kind === 'join') {
        // da first, so it is the broker (no pre-emption); then db follows it.
        await mesh.startAgent(MESH_HOSTS[0]!, 'da');
        await mesh.startAgent(MESH_HOSTS[1]!, 'db');
        await mesh.settled(APP_HOST, MESH_HOSTS, 20_000);
      }
      let failedInARow = 0;
      for (let k = 1; k <= trials; k++) {
        const t = await trial(mesh, kind, k);
        results.push(t);
        failedInARow = t.error ? failedInARow + 1 : 0;
        if (failedInARow >= 3) throw new Error(`3 ${kind} trials in a row failed; last: ${t.error}`);
        // The next trial starts from the same mesh (its members only, every view agreeing).
        if (kind === 'join') await mesh.settled(APP_HOST, MESH_HOSTS, 20_000);
      }
      if (kind === 'join') for (const n of MESH_HOSTS) await mesh.stopAgent(n);
    }
  } finally {
    if (values['keep-logs']) mesh.keepLogs(values['keep-logs'], 'discovery');
    await mesh.destroy();
  }
  report(results, cases, base, figures);
  figures.wall_s = Math.round((Date.now() - started) / 1000);
  return figures;
}
