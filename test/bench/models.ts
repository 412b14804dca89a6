/**
 * `npm run bench -- models`: the shared models on this machine, fp32 against int8, and how long the
 * mesh takes to put one on three boards.
 *
 *   latency       for each model of the shared folder (MobileNetV2, YOLOX-Nano, MNIST, Silero VAD)
 *                 and each variant (fp32; the int8 it ships with, MobileNetV2 only; the int8 our
 *                 quantizer makes from the fp32 file: static QDQ calibrated on real samples, see
 *                 fixtures/model-suites.ts): size, session creation time (median of --loads),
 *                 latency p50/p95 through OnnxEngine as the agent runs it, 1 thread and 2
 *                 (--threads), the variants of a model interleaved in one process, in blocks of
 *                 100 ms (each round in a turned order, so a busy moment of the machine hits them
 *                 alike), for --seconds per model after a warm-up; and agreement with fp32 on real inputs
 *                 (top-1 for the classifiers, boxes for the detector, the largest difference for
 *                 Silero). fp32 p50 / variant p50 > 1 means the variant is faster; the lines where
 *                 int8 is not faster are listed.
 *   rss           RSS of a fresh process that loads one variant and runs it once (one child per
 *                 model and variant: fixtures/model-rss.ts), and of the built-in digits-int8
 *                 (0.1 MB) as the runtime's own baseline.
 *   distribution  MobileNetV2 int8 (3.7 MB) pushed with `kizuna models push` to 3 fresh agents on
 *                 127.0.0.1 until each one has answered an inference with it (fixtures/
 *                 model-distribution.ts), --runs times; the median is distribution_3_agents_s.
 *
 * Needs the shared folder (../shared or $KIZUNA_SHARED): a missing file is an error that names it.
 * Options: --parts latency,rss,distribution (default all)  --models mobilenet,yolox,mnist,silero
 *          --seconds S (timed per model and thread count, 3)  --threads 1,2  --loads N (5)
 *          --runs N (distributions, 3)  --timeout S (per distribution, 60)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BUILTIN_MODELS_DIR } from '../../agent/config.js';
import { summarize, table } from '../../agent/stats.js';
import type { ModelSession } from '../../models/engine.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { distribution, distributionInputs, type DistributionResult } from './fixtures/model-distribution.js';
import type { InputSpec, RssResult } from './fixtures/model-rss.js';
import { buildSuites, SUITES, type Agreement, type Outputs, type Suite, type SuiteKey, type Variant } from './fixtures/model-suites.js';
import { repoRoot } from '../helpers/shared.js';

const RSS_CHILD = fileURLToPath(new URL('./fixtures/model-rss.js', import.meta.url));
const PARTS = ['latency', 'rss', 'distribution'] as const;
type Part = (typeof PARTS)[number];
/** A model's timing stops after this many runs of each variant even within --seconds (MNIST runs in ~0.03 ms). */
const MAX_RUNS = 20_000;
const WARMUP_MS = 300;
/** Each variant runs for this long in turn; the first BLOCK_DROP runs of a block are not counted. */
const BLOCK_MS = 100;
const BLOCK_DROP = 2;

interface Options {
  parts: Set<Part>;
  models: SuiteKey[];
  seconds: number;
  threads: number[];
  loads: number;
  runs: number;
  timeoutS: number;
}

function options(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      parts: { type: 'string' }, models: { type: 'string' }, seconds: { type: 'string' }, threads: { type: 'string' },
      loads: { type: 'string' }, runs: { type: 'string' }, timeout: { type: 'string' },
    },
    strict: true,
  });
  const num = (flag: string, v: string | undefined, d: number, min = 1) => {
    const n = v === undefined ? d : Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`bench models: --${flag} ${v}: a number >= ${min}`);
    return n;
  };
  const list = <T extends string>(flag: string, v: string | undefined, all: readonly T[]): T[] => {
    const got = (v ?? all.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
    const bad = got.filter((g) => !all.includes(g as T));
    if (bad.length || !got.length) throw new Error(`bench models: --${flag} takes some of ${all.join(',')}, got ${v}`);
    return got as T[];
  };
  const threads = (values.threads ?? '1,2').split(',').map((t) => num('threads', t, 1));
  if (!threads.includes(1)) threads.unshift(1);
  return {
    parts: new Set(list('parts', values.parts, PARTS)),
    models: list('models', values.models, Object.keys(SUITES) as SuiteKey[]),
    seconds: num('seconds', values.seconds, 3, 0.1),
    threads: [...new Set(threads.map(Math.round))],
    loads: Math.round(num('loads', values.loads, 5)),
    runs: Math.round(num('runs', values.runs, 3)),
    timeoutS: num('timeout', values.timeout, 60),
  };
}

const progress = (msg: string): void => void process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${msg}\n`);
const median = (xs: number[]): number => summarize(xs).p50;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const ms = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));

/** What was measured of one variant. */
interface Figures {
  loadMs?: number;
  /** By thread count. */
  latency: Map<number, { p50: number; p95: number; n: number }>;
  rss?: RssResult;
  agreement?: Agreement;
}

type Results = Map<Suite, Map<Variant, Figures>>;

// ---------------------------------------------------------------- latency, load, agreement

async function loadTimes(engine: OnnxEngine, variants: Variant[], loads: number): Promise<number[][]> {
  const times = variants.map((): number[] => []);
  // Round 0 is a warm-up (the first session of a process also initializes onnxruntime).
  for (let round = 0; round <= loads; round++) {
    for (let i = 0; i < variants.length; i++) {
      const t0 = performance.now();
      const s = await engine.load(variants[i]!.bytes, { threads: 1 });
      if (round > 0) times[i]!.push(performance.now() - t0);
      await s.release();
    }
  }
  return times;
}

/**
 * Blocks of runs of each session in turn (the order turned each round) for `budgetMs` after a
 * warm-up, the first runs of each block dropped. Not one run each in strict alternation: that
 * measured the other session more than the model (its idle onnxruntime threads still spinning,
 * its weights evicting these from the cache): MobileNetV2 fp32 at 2 threads took 6.7 ms
 * alternating run by run with the int8 one, 2.4 ms alone, 2.5-2.7 ms in blocks of 20 runs.
 */
async function interleaved(sessions: ModelSession[], inputs: Suite['timing'], budgetMs: number): Promise<number[][]> {
  const times = sessions.map((): number[] => []);
  const warm = performance.now();
  for (let k = 0; k < 3 || performance.now() - warm < WARMUP_MS; k++) for (const s of sessions) await s.run(inputs[k % inputs.length]!);
  const start = performance.now();
  let next = 0;
  for (let round = 0; performance.now() - start < budgetMs && times[0]!.length < MAX_RUNS; round++) {
    for (let j = 0; j < sessions.length; j++) {
      const i = (j + round) % sessions.length;
      const block = performance.now();
      for (let r = 0; r < BLOCK_DROP + 3 || performance.now() - block < BLOCK_MS; r++) {
        const feeds = inputs[next++ % inputs.length]!;
        const t0 = performance.now();
        await sessions[i]!.run(feeds);
        if (r >= BLOCK_DROP) times[i]!.push(performance.now() - t0);
      }
    }
  }
  return times;
}

async function latencyPart(suites: Suite[], o: Options, results: Results): Promise<void> {
  const engine = new OnnxEngine();
  for (const suite of suites) {
    const figures = results.get(suite)!;
    const vs = suite.variants;
    const loads = await loadTimes(engine, vs, o.loads);
    vs.forEach((v, i) => (figures.get(v)!.loadMs = median(loads[i]!)));
    for (const threads of o.threads) {
      const sessions: ModelSession[] = [];
      try {
        for (const v of vs) sessions.push(await engine.load(v.bytes, { threads }));
        if (threads === 1) {
          // Agreement with fp32 on the evaluation inputs (the first variant is fp32).
          const outputs: Outputs[][] = [];
          for (const s of sessions) {
            const out: Outputs[] = [];
            for (const feeds of suite.eval) out.push(await s.run(feeds));
            outputs.push(out);
          }
          // fp32 against itself: only its accuracy (when the inputs have labels) means anything.
          vs.forEach((v, i) => (figures.get(v)!.agreement = suite.agree(outputs[0]!, outputs[i]!)));
        }
        const t0 = performance.now();
        const times = await interleaved(sessions, suite.timing, o.seconds * 1000);
        vs.forEach((v, i) => {
          const s = summarize(times[i]!);
          figures.get(v)!.latency.set(threads, { p50: s.p50, p95: s.p95, n: s.n });
        });
        progress(`${suite.key}: ${threads} thread(s): ${vs.map((v, i) => `${v.label} ${ms(summarize(times[i]!).p50)} ms`).join(', ')} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      } finally {
        await Promise.all(sessions.map((s) => s.release()));
      }
    }
  }
}

// ---------------------------------------------------------------- rss

function rssChild(file: string, specs: InputSpec[]): RssResult {
  const out = execFileSync(process.execPath, ['--expose-gc', RSS_CHILD, file, JSON.stringify(specs)], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').at(-1)!) as RssResult;
}

function specsOf(suite: Suite): InputSpec[] {
  return Object.entries(suite.timing[0]!).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, fill: Number(t.data[0] ?? 0) }));
}

async function rssPart(suites: Suite[], results: Results): Promise<RssResult> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-bench-models-'));
  try {
    const baseline = rssChild(path.join(BUILTIN_MODELS_DIR, 'digits-int8.onnx'), [{ name: 'input', dtype: 'float32', shape: [1, 1, 28, 28], fill: 0 }]);
    for (const suite of suites) {
      for (const v of suite.variants) {
        let file = v.file;
        if (!file) {
          file = path.join(tmp, `${suite.key}-${v.key}.onnx`);
          fs.writeFileSync(file, v.bytes);
        }
        results.get(suite)!.get(v)!.rss = rssChild(file, specsOf(suite));
      }
      progress(`${suite.key}: RSS of ${suite.variants.length} variant(s) measured`);
    }
    return baseline;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- reporting

const suffix = (threads: number): string => (threads === 1 ? '' : `_${threads}t`);

function speedText(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  return x > 1 ? `${x.toFixed(2)}x` : `${x.toFixed(2)}x NOT faster`;
}

function reportModels(suites: Suite[], o: Options, results: Results, baseline: RssResult | undefined, figures: Record<string, unknown>): void {
  const extra = o.threads.filter((t) => t !== 1);
  const rows: (string | number)[][] = [];
  const notFaster: string[] = [];
  const notes: string[] = [];
  for (const suite of suites) {
    const fp32 = suite.variants[0]!;
    const ref = results.get(suite)!.get(fp32)!;
    for (const v of suite.variants) {
      const f = results.get(suite)!.get(v)!;
      const k = `${suite.key}_${v.key}`;
      const speed = (t: number) => {
        const a = ref.latency.get(t)?.p50;
        const b = f.latency.get(t)?.p50;
        return v === fp32 || a === undefined || b === undefined ? undefined : a / b;
      };
      figures[`${k}_mb`] = r3(v.bytes.length / 1e6);
      if (v.quantizeS !== undefined) figures[`${k}_quantize_s`] = r2(v.quantizeS);
      if (f.loadMs !== undefined) figures[`${k}_load_ms`] = r2(f.loadMs);
      for (const [t, l] of f.latency) {
        figures[`${k}_p50_ms${suffix(t)}`] = r3(l.p50);
        figures[`${k}_p95_ms${suffix(t)}`] = r3(l.p95);
        figures[`${k}_runs${suffix(t)}`] = l.n;
        const s = speed(t);
        if (s !== undefined) {
          figures[`${k}_speedup${suffix(t)}`] = r3(s);
          if (s <= 1) notFaster.push(`${suite.name} ${v.label}, ${t} thread${t > 1 ? 's' : ''}: ${s.toFixed(2)}x the fp32 speed (p50 ${ms(f.latency.get(t)!.p50)} ms against ${ms(ref.latency.get(t)!.p50)} ms)`);
        }
      }
      if (f.rss) {
        figures[`${k}_rss_mb`] = r2(f.rss.afterMb);
        figures[`${k}_rss_hwm_mb`] = r2(f.rss.hwmMb);
      }
      if (f.agreement) {
        if (v !== fp32) figures[`${k}_agreement`] = r3(f.agreement.value);
        if (v !== fp32 && f.agreement.top5 !== undefined) figures[`${k}_top5_agreement`] = r3(f.agreement.top5);
        if (f.agreement.accuracy !== undefined) figures[`${k}_accuracy`] = r3(f.agreement.accuracy);
      }
      const one = f.latency.get(1);
      const agreement = v === fp32 ? (f.agreement?.accuracy !== undefined ? `reference (acc ${(100 * f.agreement.accuracy).toFixed(1)}%)` : 'reference')
        : f.agreement ? `${f.agreement.text}${f.agreement.accuracy !== undefined ? ` (acc ${(100 * f.agreement.accuracy).toFixed(1)}%)` : ''}` : '-';
      rows.push([
        suite.name, v.label, (v.bytes.length / 1e6).toFixed(2), ms(f.loadMs), ms(one?.p50), ms(one?.p95), v === fp32 ? '1' : speedText(speed(1)),
        ...extra.flatMap((t) => [ms(f.latency.get(t)?.p50), v === fp32 ? '1' : speedText(speed(t))]),
        f.rss ? f.rss.afterMb.toFixed(0) : '-', agreement,
      ]);
      if (v.note) notes.push(`${suite.name} ${v.label}: ${v.note}`);
    }
    if (suite.noInt8) {
      figures[`${suite.key}_int8_ours`] = null;
      figures[`${suite.key}_int8_ours_note`] = suite.noInt8;
      rows.push([suite.name, 'int8 (ours)', '-', '-', '-', '-', '-', ...extra.flatMap(() => ['-', '-']), '-', 'not made: see note']);
      notes.push(`${suite.name} int8 (ours): NOT MADE: ${suite.noInt8}`);
    }
    notes.push(`${suite.name} agreement: ${suite.evalNote}`);
    for (const t of extra) {
      const [a, b] = [ref.latency.get(1)?.p50, ref.latency.get(t)?.p50];
      if (a !== undefined && b !== undefined && b > a) {
        const warning = `${suite.name} fp32 took longer at ${t} threads (${ms(b)} ms) than at 1 (${ms(a)} ms): either more threads cost more than they give on a model this small, or the other cores were busy (other processes): its ${t}-thread comparison says little`;
        notes.push(`WARNING: ${warning}`);
        ((figures.threads_warnings ??= []) as string[]).push(warning);
      }
    }
  }
  const header = ['model', 'variant', 'MB', 'load ms', 'p50 ms', 'p95 ms', 'speed vs fp32', ...extra.flatMap((t) => [`p50 ${t}t`, `speed ${t}t`]), 'RSS MB', 'agreement with fp32'];
  const cpu = os.cpus();
  console.log(`Models: fp32 against int8 on this machine (${cpu.length} x ${cpu[0]?.model ?? '?'}, Node ${process.version}, onnxruntime-node ${ortVersion()})`);
  console.log(`latency through OnnxEngine as the agent runs it; a model's variants interleaved in ${BLOCK_MS} ms blocks in one process for ${o.seconds} s after a ${WARMUP_MS} ms warm-up; load = session creation (median of ${o.loads})\n`);
  console.log(table(header, rows));
  console.log(
    '\nspeed vs fp32: fp32 p50 / this p50 at the same thread count (> 1: faster). RSS MB: a fresh process after creating that one session and running it once' +
      (baseline ? ` (the runtime alone, with the built-in 0.1 MB digits-int8: ${baseline.afterMb.toFixed(0)} MB; bare node before loading: ${baseline.beforeMb.toFixed(0)} MB).` : '.'),
  );
  for (const n of notes) console.log(`- ${n}`);
  console.log(notFaster.length ? `\nint8 NOT faster than fp32 here:\n${notFaster.map((l) => `  ${l}`).join('\n')}` : '\nint8 was faster than fp32 in every measured case.');
  figures.int8_not_faster = notFaster;
  if (baseline) {
    figures.rss_runtime_baseline_mb = r2(baseline.afterMb);
    figures.rss_bare_node_mb = r2(baseline.beforeMb);
  }
}

function reportDistribution(d: DistributionResult, figures: Record<string, unknown>): void {
  const boards = d.runs[0]?.boards.map((b) => b.node) ?? [];
  const rows = d.runs.map((r, i) => [
    i + 1, r.publishedS.toFixed(2), r.heldS.toFixed(2), r.answeredS.toFixed(2), r.totalS.toFixed(2), Number.isFinite(r.pushedMb) ? r.pushedMb.toFixed(1) : '?',
    ...r.boards.map((b) => `${b.fetchS.toFixed(2)} s ${b.mbPerS.toFixed(0)} MB/s`),
  ]);
  console.log(`\nDistribution: MobileNetV2 int8 (${(d.sizeBytes / 1e6).toFixed(2)} MB) pushed with kizuna models push to 3 fresh agents on 127.0.0.1 (static peers)\n`);
  console.log(table(['run', 'published s', 'all hold +s', 'all answered +s', 'total s', 'pushed MB', ...boards.map((b) => `${b} fetch`)], rows));
  const total = median(d.runs.map((r) => r.totalS));
  const rates = d.runs.flatMap((r) => r.boards.map((b) => b.mbPerS));
  console.log(
    '\npublished: the push command started -> its catalogue entry published (node start-up, reading and hashing the file, connecting);' +
      '\nall hold: -> every board\'s status lists the model (chunks fetched, sha256 verified, session loaded); all answered: -> each board answered' +
      '\none inference with it (kitten -> tabby). total = the sum. Board fetch: its own log, first chunk asked -> file verified, and the rate.' +
      '\npushed MB: what the push command sent (each board fetches from every holder it knows: here the pusher, mostly).',
  );
  const first = d.runs.flatMap((r) => r.probes);
  console.log(
    `first answers (all runs): round trip median ${median(first.map((p) => p.ms)).toFixed(0)} ms, of which the board's pre-processing ${median(first.map((p) => p.preMs)).toFixed(0)} ms ` +
      `and inference ${median(first.map((p) => p.inferMs)).toFixed(0)} ms (a board's first image and first run of the session: cold)`,
  );
  console.log(`\ndistribution to 3 agents: median ${total.toFixed(2)} s over ${d.runs.length} run(s); per-board fetch rate median ${median(rates).toFixed(0)} MB/s (loopback, one machine)`);
  Object.assign(figures, {
    distribution_3_agents_s: r2(total),
    distribution_runs_s: d.runs.map((r) => r2(r.totalS)),
    distribution_published_s: r2(median(d.runs.map((r) => r.publishedS))),
    distribution_hold_s: r2(median(d.runs.map((r) => r.heldS))),
    distribution_answered_s: r2(median(d.runs.map((r) => r.answeredS))),
    distribution_first_answer_ms: Math.round(median(first.map((p) => p.ms))),
    distribution_board_fetch_s: r3(median(d.runs.flatMap((r) => r.boards.map((b) => b.fetchS)))),
    distribution_board_mb_per_s: Math.round(median(rates)),
    distribution_pushed_mb: median(d.runs.map((r) => r.pushedMb)),
    distribution_model_mb: r3(d.sizeBytes / 1e6),
  });
}

function ortVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(repoRoot, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------- the benchmark

export async function run(argv: string[] = []): Promise<Record<string, unknown>> {
  const o = options(argv);
  const started = performance.now();
  const figures: Record<string, unknown> = { cpus: os.cpus().length, threads: o.threads };
  if (o.parts.has('latency') || o.parts.has('rss')) {
    const suites = await buildSuites(o.models, progress);
    const results: Results = new Map(suites.map((s) => [s, new Map(s.variants.map((v) => [v, { latency: new Map() } as Figures]))]));
    if (o.parts.has('latency')) await latencyPart(suites, o, results);
    const baseline = o.parts.has('rss') ? await rssPart(suites, results) : undefined;
    reportModels(suites, o, results, baseline, figures);
  }
  if (o.parts.has('distribution')) {
    const inputs = distributionInputs();
    let d: DistributionResult | undefined;
    try {
      d = await distribution(inputs, o.runs, o.timeoutS, progress);
    } catch (err) {
      // No number rather than a made-up one: the JSON says what stopped it.
      const why = (err as Error).message;
      console.log(`\nDistribution: FAILED, no figure: ${why}`);
      Object.assign(figures, { distribution_3_agents_s: null, distribution_error: why });
    }
    if (d) reportDistribution(d, figures);
  }
  figures.bench_s = r2((performance.now() - started) / 1000);
  return figures;
}
