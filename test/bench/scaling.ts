/**
 * `npm run bench -- scaling`: does adding boards add throughput, for one job sent with client.batch()?
 *
 * Three parts, each on its own mesh on 127.0.0.1 (static peers, no mDNS):
 *   scaling  agents that simulate a fixed compute time per input (simulateMsPerInput: the real
 *            `digits` model, then a timer, so this 2-core machine can host 32 of them). The broker's
 *            board in one process, the other boards in-process in a second one, the app (client.batch)
 *            in this one. The mesh grows 1 -> 2 -> 4 -> ... -> 32; at each size a warm-up batch lets
 *            the dispatcher measure every board, then the same job is timed (median of --reps).
 *            speedup(N) = T(1) / T(N); efficiency = speedup / N.
 *   hetero   12 boards of three speeds (16, 8 and 4 ms per input: 1x, 2x, 4x); the makespan against
 *            the ideal, inputs / sum of the nominal rates. Then the same mesh with one 4x board (in
 *            its own process) SIGKILLed when half the job is done; its ideal counts that board's rate
 *            only until the kill: t_k + (inputs - R t_k) / (R - r_victim).
 *   real     MobileNetV2 (the shared folder) on real onnxruntime: one agent pinned to core 0 against
 *            two pinned to cores 0 and 1 (taskset), the same batch (kitten_224.png as image bytes,
 *            pre-processed by the agents; or its 602 KB tensor), alternated; and in the same run the
 *            same work without the mesh (fixtures/scaling-ort.js) pinned the same way, two processes
 *            against one: the ceiling of a two-board speedup on this machine.
 *
 * Files: fixtures/scaling-host.ts (a process of in-process agents, driven over IPC), scaling-lab.ts
 * (processes: hosts, pinned agents, bare onnxruntime; /proc readings), scaling-lane.ts (timed
 * batches), scaling-real.ts (the real part), scaling-ort.ts (the work without the mesh).
 *
 * Every batch has a deadline (--deadline-s) and the benchmark's processes a memory cap
 * (--max-rss-mb): past either, the part is aborted (its client closed, its agents killed) and
 * reported as failed; the other parts still run.
 *
 * Options: --parts scaling,hetero,real  --agents 1,2,4,8,16,32  --ms 4 (ms per input)
 *          --inputs 3000  --reps 3  --hetero-inputs 6000  --kill-reps 2
 *          --real-model mobilenetv2-int8|mobilenetv2-fp32  --real-input image|tensor
 *          --real-inputs 600  --real-reps 3  --deadline-s 60  --max-rss-mb 4096
 *          --batch-options JSON (passed to client.batch as given, e.g. '{"window":256}'; by default
 *          the app's defaults: only onProgress is set)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';
import { r2, table } from '../../agent/stats.js';
import { KizunaClient, type InferInput } from '../../mesh/client.js';
import type { Tensor } from '../../mesh/tensor.js';
import { MeshWatch } from '../helpers/mesh-watch.js';
import type { HostedAgent } from './fixtures/scaling-host.js';
import { AgentHost, progress } from './fixtures/scaling-lab.js';
import { Lane, median, pct, s2, servedBy, verdict, type LaneOptions, type Run } from './fixtures/scaling-lane.js';
import { printReal, realPart, type RealOptions } from './fixtures/scaling-real.js';

const GOAL_EFFICIENCY_32 = 0.9;
const GOAL_HETERO = 1.1;
const GOAL_KILL = 1.25;
const DIGITS = 256;

interface Options extends LaneOptions, RealOptions {
  parts: Set<string>;
  agents: number[];
  ms: number;
  inputs: number;
  reps: number;
  heteroInputs: number;
  killReps: number;
}

// ---------------------------------------------------------------- digits for the simulated boards

/**
 * Held-out MNIST digits, read in a short-lived child process: the `mnist` package keeps ~70 MB in
 * the require cache, a heap this process should not carry (and collect) while it measures.
 */
function heldOutDigits(count: number): Float32Array[] {
  const data = new URL('../../models/builtin/digits-data.js', import.meta.url).href;
  const script =
    `const { loadDigits } = await import(${JSON.stringify(data)});` +
    `const d = loadDigits().heldOut.slice(0, ${count});` +
    `process.stdout.write(JSON.stringify(d.map((x) => Buffer.from(x.pixels.buffer, x.pixels.byteOffset, x.pixels.byteLength).toString('base64'))));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 })) as string[];
  return out.map((b64) => {
    const buf = Buffer.from(b64, 'base64');
    return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  });
}

function digitInputs(digits: Float32Array[], count: number): (() => InferInput)[] {
  const feeds = digits.map((data) => ({ input: { dtype: 'float32', shape: [1, 1, 28, 28], data } as Tensor }));
  return Array.from({ length: count }, (_, i) => () => feeds[i % feeds.length]!);
}

/** A temp model folder with only `digits` (the simulated boards load nothing else). */
function digitsOnlyFolder(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-scaling-'));
  for (const f of ['digits.json', 'digits.onnx']) fs.copyFileSync(path.join(BUILTIN_MODELS_DIR, f), path.join(dir, f));
  return dir;
}

const cpuCell = (run: Run): string => ['app', 'broker-host', 'agents-host', 'other'].map((k) => pct(run.cpu[k])).join(' / ');

const spread = (byAgent: Record<string, number>, boards: number): string => {
  const counts = Object.values(byAgent);
  if (counts.length < boards) return `${counts.length}/${boards} boards`;
  return `${Math.min(...counts)}-${Math.max(...counts)}`;
};

// ---------------------------------------------------------------- part 1: simulated boards, 1 to 32

interface ScalingRow {
  agents: number;
  runs: Run[];
  medianMs: number;
}

async function scalingPart(o: Options, digits: Float32Array[], models: string): Promise<{ rows: ScalingRow[]; peakMb: number }> {
  const mesh = 'scaling';
  const brokerHost = AgentHost.fork('broker-host');
  const agentsHost = AgentHost.fork('agents-host');
  let lane: Lane | undefined;
  let watch: MeshWatch | undefined;
  const rows: ScalingRow[] = [];
  try {
    const ports = await brokerHost.start(models, mesh, [{ node: 's00', msPerInput: o.ms, eligible: true, peers: [] }]);
    const url = `mqtt://127.0.0.1:${ports.s00}`;
    watch = await MeshWatch.connect([url], mesh);
    const client = await KizunaClient.connect({ url, mesh, client: 'scaling', timeoutMs: o.deadlineMs });
    const pids = { app: process.pid, 'broker-host': brokerHost.pid, 'agents-host': agentsHost.pid };
    lane = new Lane(client, o, () => pids, () => [brokerHost, agentsHost].forEach((h) => void h.kill()));
    const nodes = ['s00'];
    const job = digitInputs(digits, o.inputs);
    for (const n of o.agents) {
      const fresh: HostedAgent[] = [];
      for (let i = nodes.length; i < n; i++) fresh.push({ node: `s${String(i).padStart(2, '0')}`, msPerInput: o.ms, eligible: false, peers: [`127.0.0.1:${ports.s00}`] });
      if (fresh.length) await agentsHost.start(models, mesh, fresh);
      nodes.push(...fresh.map((a) => a.node));
      await servedBy(watch, 'digits', nodes);
      await lane.warmUp('digits', digitInputs(digits, Math.max(64, 16 * n)), n);
      const reps = n === 1 ? 1 : n === 2 ? Math.min(2, o.reps) : o.reps;
      const runs: Run[] = [];
      for (let r = 0; r < reps; r++) {
        const run = await lane.batch('digits', job);
        runs.push(run);
        progress(`${n} agents, run ${r + 1}/${reps}: ${s2(run.ms)} s (${Math.round((o.inputs * 1000) / run.ms)}/s)`);
      }
      rows.push({ agents: n, runs, medianMs: median(runs.map((r) => r.ms)) });
    }
    return { rows, peakMb: lane.peakMb };
  } catch (err) {
    // Whatever broke after an abort broke because of it: say why.
    throw lane?.aborted ? new Error(lane.aborted) : err;
  } finally {
    await lane?.close();
    await watch?.close().catch(() => undefined);
    await agentsHost.stop();
    await brokerHost.stop();
  }
}

function printScaling(o: Options, { rows, peakMb }: { rows: ScalingRow[]; peakMb: number }): Record<string, unknown> {
  const t1 = rows.find((r) => r.agents === 1)?.medianMs;
  console.log(`Scaling: one job of ${o.inputs} digits through client.batch(); every board simulates ${o.ms} ms per input`);
  console.log('(the broker\'s board in one process, the other boards in-process in a second one, the app in this one; medians)\n');
  const speedups: Record<string, number> = {};
  const efficiencies: Record<string, number> = {};
  const lines = rows.map((row) => {
    const speedup = t1 ? t1 / row.medianMs : NaN;
    speedups[row.agents] = r2(speedup);
    efficiencies[row.agents] = r2(speedup / row.agents);
    const last = row.runs[row.runs.length - 1]!;
    return [
      row.agents,
      row.runs.length,
      s2(row.medianMs),
      s2(Math.min(...row.runs.map((r) => r.ms))),
      s2((o.inputs * o.ms) / row.agents),
      t1 ? s2(row.medianMs - t1 / row.agents) : '?',
      s2(median(row.runs.map((r) => r.firstMs))),
      Math.round((o.inputs * 1000) / row.medianMs),
      speedup.toFixed(2),
      (speedup / row.agents).toFixed(2),
      spread(last.byAgent, row.agents),
      cpuCell(last),
    ];
  });
  console.log(table(['agents', 'runs', 'median s', 'best s', 'ideal s', 'lost s', 'first s', 'inputs/s', 'speedup', 'efficiency', 'inputs per board', 'cpu% app/broker/boards/other'], lines));
  console.log(`\nideal s = inputs x ${o.ms} ms / agents; one board alone takes ${t1 ? (t1 / o.inputs).toFixed(2) : '?'} ms per input end to end (timer, model, mesh)`);
  console.log('lost s = median - T(1) / agents: the time beyond perfect scaling; first s = when the first result came back');
  console.log('every input of every run was answered, once and in order (a run with a failed input fails the part)');
  console.log(`cpu% = % of one core during the last run (2 cores: 200% in all; other = the rest of the machine, the hypervisor's steal included); peak memory of the benchmark's processes ${peakMb} MB`);
  const top = rows[rows.length - 1]!;
  const eff = efficiencies[top.agents]!;
  console.log(`goal: efficiency >= ${GOAL_EFFICIENCY_32} at ${top.agents} agents: ${eff.toFixed(2)}, ${verdict(eff >= GOAL_EFFICIENCY_32)}\n`);
  return {
    ms_per_input: o.ms,
    inputs: o.inputs,
    t1_s: t1 ? r2(t1 / 1000) : null,
    speedup_by_agents: speedups,
    efficiency_by_agents: efficiencies,
    [`efficiency_${top.agents}`]: eff,
  };
}

// ---------------------------------------------------------------- part 2: three speeds, and a kill

const SPEEDS = [
  { label: '1x', ms: 16, count: 4 },
  { label: '2x', ms: 8, count: 4 },
  { label: '4x', ms: 4, count: 4 },
];

interface HeteroResult {
  runs: Run[];
  kills: Run[];
  /** Speed class of each node. */
  classOf: Record<string, string>;
  /** Sum of the nominal rates, inputs per ms; and the victim's. */
  rate: number;
  victimRate: number;
  peakMb: number;
}

async function heteroPart(o: Options, digits: Float32Array[], models: string): Promise<HeteroResult> {
  const mesh = 'hetero';
  // h00 (4x) hosts the broker; the victim (4x) runs alone in its own process; the others share one.
  const boards: HostedAgent[] = [];
  for (const c of SPEEDS) for (let i = 0; i < c.count; i++) boards.push({ node: '', msPerInput: c.ms, eligible: false, peers: [] });
  boards.sort((a, b) => a.msPerInput - b.msPerInput);
  boards.forEach((b, i) => (b.node = `h${String(i).padStart(2, '0')}`));
  const classOf: Record<string, string> = Object.fromEntries(boards.map((b) => [b.node, SPEEDS.find((c) => c.ms === b.msPerInput)!.label]));
  const rate = boards.reduce((a, b) => a + 1 / b.msPerInput, 0);
  const [brokerBoard, victimBoard, ...others] = boards as [HostedAgent, HostedAgent, ...HostedAgent[]];
  const result: HeteroResult = { runs: [], kills: [], classOf, rate, victimRate: 1 / victimBoard.msPerInput, peakMb: 0 };
  const brokerHost = AgentHost.fork('broker-host');
  const agentsHost = AgentHost.fork('agents-host');
  let victimHost: AgentHost | undefined;
  let lane: Lane | undefined;
  let watch: MeshWatch | undefined;
  try {
    const ports = await brokerHost.start(models, mesh, [{ ...brokerBoard, eligible: true }]);
    const peers = [`127.0.0.1:${ports[brokerBoard.node]}`];
    await agentsHost.start(models, mesh, others.map((b) => ({ ...b, peers })));
    const url = `mqtt://127.0.0.1:${ports[brokerBoard.node]}`;
    watch = await MeshWatch.connect([url], mesh);
    const client = await KizunaClient.connect({ url, mesh, client: 'hetero', timeoutMs: o.deadlineMs });
    const pids = () => ({ app: process.pid, 'broker-host': brokerHost.pid, 'agents-host': agentsHost.pid, victim: victimHost?.pid });
    lane = new Lane(client, o, pids, () => [brokerHost, agentsHost, victimHost].forEach((h) => void h?.kill()));
    const job = digitInputs(digits, o.heteroInputs);
    const warm = digitInputs(digits, 32 * boards.length);
    const startVictim = async (k: number) => {
      victimHost = AgentHost.fork(`victim-host-${k}`);
      const node = `${victimBoard.node}v${k}`;
      classOf[node] = classOf[victimBoard.node]!;
      await victimHost.start(models, mesh, [{ ...victimBoard, node, peers }]);
      await servedBy(watch!, 'digits', [brokerBoard, ...others].map((b) => b.node).concat(node));
      await lane!.warmUp('digits', warm, boards.length);
    };
    await startVictim(1);
    for (let r = 0; r < o.reps; r++) {
      const run = await lane.batch('digits', job);
      result.runs.push(run);
      progress(`hetero run ${r + 1}/${o.reps}: ${s2(run.ms)} s, ideal ${s2(o.heteroInputs / rate)} s`);
    }
    for (let k = 1; k <= o.killReps; k++) {
      if (k > 1) await startVictim(k);
      const victim = victimHost!;
      const run = await lane.batch('digits', job, { kill: { at: Math.floor(o.heteroInputs / 2), fn: () => void victim.kill() } });
      result.kills.push(run);
      progress(`kill run ${k}/${o.killReps}: killed at ${s2(run.killAtMs ?? NaN)} s, done in ${s2(run.ms)} s`);
    }
    result.peakMb = lane.peakMb;
    return result;
  } catch (err) {
    // Whatever broke after an abort broke because of it: say why.
    throw lane?.aborted ? new Error(lane.aborted) : err;
  } finally {
    await lane?.close();
    await watch?.close().catch(() => undefined);
    await victimHost?.stop();
    await agentsHost.stop();
    await brokerHost.stop();
  }
}

function printHetero(o: Options, h: HeteroResult): Record<string, unknown> {
  const ideal = o.heteroInputs / h.rate;
  const byClass = (run: Run) => {
    const out: Record<string, number> = {};
    for (const [node, n] of Object.entries(run.byAgent)) out[h.classOf[node] ?? '?'] = (out[h.classOf[node] ?? '?'] ?? 0) + n;
    return SPEEDS.map((c) => `${(((out[c.label] ?? 0) / o.heteroInputs) * 100).toFixed(0)}%`).join(' / ');
  };
  const idealShare = SPEEDS.map((c) => `${((c.count / c.ms / h.rate) * 100).toFixed(0)}%`).join(' / ');
  console.log(`Heterogeneous: ${SPEEDS.map((c) => `${c.count} boards at ${c.ms} ms/input (${c.label})`).join(', ')}; one job of ${o.heteroInputs} digits`);
  console.log(`ideal = inputs / sum of nominal rates = ${o.heteroInputs} / ${h.rate.toFixed(3)} per ms = ${s2(ideal)} s. Kill: a 4x board (its own process) SIGKILLed at half the job; its rate counts until then\n`);
  const rows: (string | number)[][] = [];
  h.runs.forEach((run, i) => rows.push([`all up #${i + 1}`, s2(run.ms), s2(ideal), (run.ms / ideal).toFixed(3), s2(run.firstMs), '', byClass(run), cpuCell(run)]));
  const killRatios: number[] = [];
  h.kills.forEach((run, i) => {
    const tk = run.killAtMs ?? 0;
    const idealKill = ideal <= tk ? ideal : tk + (o.heteroInputs - h.rate * tk) / (h.rate - h.victimRate);
    killRatios.push(run.ms / idealKill);
    rows.push([`kill #${i + 1}`, s2(run.ms), s2(idealKill), (run.ms / idealKill).toFixed(3), s2(run.firstMs), s2(tk), byClass(run), cpuCell(run)]);
  });
  rows.push(['(ideal shares)', '', '', '', '', '', idealShare, '']);
  console.log(table(['run', 'makespan s', 'ideal s', 'ratio', 'first s', 'killed at s', 'done by 1x / 2x / 4x', 'cpu% app/broker/boards/other'], rows));
  console.log('every input of every run was answered, once and in order (a run with a failed input fails the part)');
  const heteroRatio = median(h.runs.map((r) => r.ms)) / ideal;
  const killRatio = killRatios.length ? median(killRatios) : NaN;
  console.log(`\npeak memory of the benchmark's processes ${h.peakMb} MB`);
  console.log(`goals: makespan <= ${GOAL_HETERO}x ideal: ${heteroRatio.toFixed(3)}, ${verdict(heteroRatio <= GOAL_HETERO)}; with a kill <= ${GOAL_KILL}x: ${killRatio.toFixed(3)}, ${verdict(killRatio <= GOAL_KILL)}\n`);
  return {
    hetero_makespan_ratio: Number(heteroRatio.toFixed(3)),
    hetero_makespan_s: r2(median(h.runs.map((r) => r.ms)) / 1000),
    hetero_ideal_s: r2(ideal / 1000),
    kill_makespan_ratio: Number.isFinite(killRatio) ? Number(killRatio.toFixed(3)) : null,
  };
}

// ---------------------------------------------------------------- entry point

function options(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      parts: { type: 'string', default: 'scaling,hetero,real' },
      agents: { type: 'string', default: '1,2,4,8,16,32' },
      ms: { type: 'string', default: '4' },
      inputs: { type: 'string', default: '3000' },
      reps: { type: 'string', default: '3' },
      'hetero-inputs': { type: 'string', default: '6000' },
      'kill-reps': { type: 'string', default: '2' },
      'real-model': { type: 'string', default: 'mobilenetv2-int8' },
      'real-input': { type: 'string', default: 'image' },
      'real-inputs': { type: 'string', default: '600' },
      'real-reps': { type: 'string', default: '3' },
      'deadline-s': { type: 'string', default: '60' },
      'max-rss-mb': { type: 'string', default: '4096' },
      'batch-options': { type: 'string', default: '{}' },
    },
  });
  const int = (name: string, v: string, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got ${v}`);
    return n;
  };
  const oneOf = <T extends string>(name: string, v: string, allowed: readonly T[]): T => {
    if (!(allowed as readonly string[]).includes(v)) throw new Error(`--${name} must be one of ${allowed.join(', ')}, got ${v}`);
    return v as T;
  };
  const agents = values.agents.split(',').map((a) => int('agents', a, 1, 64));
  if (agents[0] !== 1 || agents.some((a, i) => i > 0 && a <= agents[i - 1]!)) throw new Error('--agents must start at 1 and grow');
  const parts = new Set(values.parts.split(','));
  for (const p of parts) oneOf('parts', p, ['scaling', 'hetero', 'real']);
  let batchOptions: unknown;
  try {
    batchOptions = JSON.parse(values['batch-options']);
  } catch (err) {
    throw new Error(`--batch-options must be a JSON object: ${(err as Error).message}`);
  }
  if (typeof batchOptions !== 'object' || batchOptions === null || Array.isArray(batchOptions)) throw new Error('--batch-options must be a JSON object');
  return {
    parts,
    agents,
    ms: int('ms', values.ms, 1, 1000),
    inputs: int('inputs', values.inputs, 10, 1_000_000),
    reps: int('reps', values.reps, 1, 20),
    heteroInputs: int('hetero-inputs', values['hetero-inputs'], 10, 1_000_000),
    killReps: int('kill-reps', values['kill-reps'], 0, 20),
    realModel: oneOf('real-model', values['real-model'], ['mobilenetv2-int8', 'mobilenetv2-fp32'] as const),
    realInput: oneOf('real-input', values['real-input'], ['image', 'tensor'] as const),
    realInputs: int('real-inputs', values['real-inputs'], 10, 100_000),
    realReps: int('real-reps', values['real-reps'], 1, 20),
    deadlineMs: int('deadline-s', values['deadline-s'], 5, 3600) * 1000,
    maxRssMb: int('max-rss-mb', values['max-rss-mb'], 256, 1 << 20),
    batchOptions: batchOptions as Record<string, unknown>,
  };
}

/** A part that fails is reported as such; the others still run. */
async function part(name: string, figures: Record<string, unknown>, body: () => Promise<Record<string, unknown>>): Promise<void> {
  try {
    Object.assign(figures, await body());
  } catch (err) {
    const msg = (err as Error).message;
    progress(`${name} failed: ${(err as Error).stack ?? msg}`);
    console.log(`${name}: FAILED (${msg.split('\n')[0]})\n`);
    figures[`${name}_failed`] = msg.split('\n')[0];
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const o = options(args);
  const started = performance.now();
  // The issue's figures are always present: null when their part did not run or failed.
  const figures: Record<string, unknown> = { [`efficiency_${o.agents[o.agents.length - 1]}`]: null, hetero_makespan_ratio: null, kill_makespan_ratio: null, real_two_agents_speedup: null, real_ratio_to_ceiling: null };
  const models = digitsOnlyFolder();
  try {
    const digits = o.parts.has('scaling') || o.parts.has('hetero') ? heldOutDigits(DIGITS) : [];
    if (o.parts.has('scaling')) await part('scaling', figures, async () => printScaling(o, await scalingPart(o, digits, models)));
    if (o.parts.has('hetero')) await part('hetero', figures, async () => printHetero(o, await heteroPart(o, digits, models)));
    if (o.parts.has('real')) await part('real', figures, async () => printReal(o, await realPart(o)));
  } finally {
    fs.rmSync(models, { recursive: true, force: true });
  }
  figures.wall_s = r2((performance.now() - started) / 1000);
  return figures;
}
