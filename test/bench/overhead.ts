/**
 * `npm run bench -- overhead`: what the mesh costs on top of running the model yourself.
 *
 * For each model (the built-in `digits`, and MobileNetV2 int8 from the shared folder) and each input
 * form (a ready tensor, sent as a KZB1 frame; PNG bytes, published as-is), two paths are timed, one
 * request in flight at a time, interleaved in blocks (A B, then B A...) so machine noise hits both alike:
 *   raw   onnxruntime in this process (OnnxEngine, 1 thread like the agent); for PNG input also the
 *         same sharp pre-processing the agent does (preprocessImages)
 *   mesh  the same request through a real agent over MQTT on 127.0.0.1, in one of two phases:
 *         child   `kizuna agent --host 127.0.0.1 --port 0` in a child process, the client here: app
 *                 and agent do not share an event loop, as in real use. This is the headline.
 *         inproc  Agent.create/start in this process: client, broker and worker share one event loop.
 *         The phases run one after the other, each with its own raw samples, so one agent's garbage
 *         never lands on the other's figures.
 * plus a floor row per phase: a request for a model that does not exist (transport, frame decode,
 * lookup, error reply; no inference). The child agent's RSS is read from /proc/<pid>/status: idle
 * after start (models loaded), the highest VmRSS seen between blocks (under load), and VmHWM.
 * Loopback only; the child agent is always stopped (SIGTERM, then SIGKILL) at the end, even on error.
 *
 * Options: --count N (measured requests per path and cell; default 1000 digits, 400 MobileNetV2),
 * --warmup N (50), --block N (50), --budget S (seconds per cell, 40; the cell then stops at the end
 * of its round), --modes child,inproc.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent } from '../../agent/agent.js';
import { BUILTIN_MODELS_DIR, loadConfig } from '../../agent/config.js';
import { r2, summarize, table } from '../../agent/stats.js';
import { KizunaClient, type InferResult } from '../../mesh/client.js';
import type { Tensor } from '../../mesh/tensor.js';
import type { ModelSession } from '../../models/engine.js';
import type { Manifest } from '../../models/manifest.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { preprocessImages } from '../../models/preprocess.js';
import { readModel } from '../../models/store.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';
import { spawnGuarded } from '../helpers/child.js';
import { sharedModelsDir } from '../helpers/shared-models.js';

const CLI = fileURLToPath(new URL('../../agent/cli.js', import.meta.url));
const MAX_PIXELS = 4096 * 4096;
const GOAL_SMALL_OVERHEAD_MS = 1;
const GOAL_MOBILENET_RATIO = 1.15;
const MB = 1024;

type Mode = 'child' | 'inproc';
type Input = 'tensor' | 'image';
type Timings = InferResult['timings'];

interface BenchModel {
  /** Prefix of its figures. */
  key: string;
  manifest: Manifest;
  session: ModelSession;
  png: Buffer;
  /** The PNG pre-processed exactly as the agent does it. */
  tensor: Tensor;
  /** Top-1 class of the raw path: every path must agree. */
  top1: number;
  label: string;
}

/** One timed call: the top-1 class it got and, through the mesh, the agent's own timings. */
interface Sample {
  top1?: number;
  timings?: Timings;
}

type Call = () => Promise<Sample>;

interface Cell {
  model: string;
  key: string;
  input: Input | 'floor';
  mode: Mode;
  calls: Partial<Record<'raw' | 'mesh', Call>>;
  samples: Partial<Record<'raw' | 'mesh', number[]>>;
  /** The agent's timings from each measured mesh reply. */
  timings: Timings[];
  /** The child agent's VmRSS when the cell ended, MB. */
  rssMb?: number;
}

// ---------------------------------------------------------------- the agent in a child process

interface ChildAgent {
  proc: ChildProcess;
  port: number;
  /** Rejects if the agent exits before stop() is called (a measured call then fails at once). */
  died: Promise<never>;
  stop(): Promise<void>;
}

function procStatusMb(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / MB, hwm: kb('VmHWM') / MB };
  } catch {
    return undefined;
  }
}

/** Starts `kizuna agent` on loopback, port 0; resolves when it serves every expected model. */
async function startChildAgent(modelDirs: string[], expected: string[]): Promise<ChildAgent> {
  const args = [CLI, 'agent', '--host', '127.0.0.1', '--port', '0', '--node', 'bench', '--threads', '1', '--concurrency', '1', '--models', modelDirs.join(','), '--log-level', 'info'];
  const child = spawnGuarded(args);
  const { proc, exited } = child;
  const tail: string[] = [];
  const loaded = new Set<string>();
  let port = 0;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not start within 30 s:\n${tail.join('\n')}`)), 30_000);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited (${code ?? signal}) before serving:\n${tail.join('\n')}`));
    });
    readline.createInterface({ input: proc.stderr! }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 40) tail.shift();
      const model = /model (\S+)@\S+ loaded/.exec(line);
      if (model) loaded.add(model[1]!);
      const listening = /broker listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (listening) port = Number(listening[1]);
      if (/serving mesh/.test(line)) {
        clearTimeout(timer);
        const missing = expected.filter((m) => !loaded.has(m));
        if (!port || missing.length) reject(new Error(`the agent serves without ${missing.join(', ') || 'a port'}:\n${tail.join('\n')}`));
        else resolve();
      }
    });
  });
  let stopping = false;
  const died = exited.then(() => {
    throw new Error(stopping ? 'the agent was stopped' : `the agent exited (${proc.exitCode ?? proc.signalCode}) during the run:\n${tail.join('\n')}`);
  });
  died.catch(() => undefined);
  const stop = async () => {
    stopping = true;
    await child.stop();
  };
  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, port, died, stop };
}

// ---------------------------------------------------------------- models and inputs

function argmax(t: Tensor): number {
  const d = t.data as Float32Array;
  let best = 0;
  for (let i = 1; i < d.length; i++) if (d[i]! > d[best]!) best = i;
  return best;
}

async function prepareModel(key: string, manifestPath: string, png: Buffer, engine: OnnxEngine): Promise<BenchModel> {
  const { manifest, onnx, labels } = await readModel(manifestPath);
  const session = await engine.load(onnx, { threads: 1 });
  const { tensor } = await preprocessImages([png], manifest.preprocess!, { maxPixels: MAX_PIXELS });
  const out = await session.run({ [manifest.preprocess!.input]: tensor });
  const top1 = argmax(Object.values(out)[0]!);
  return { key, manifest, session, png, tensor, top1, label: labels?.[top1] ?? String(top1) };
}

/**
 * The first held-out MNIST digit as PNG, rendered in a short-lived child process: loading the
 * `mnist` package keeps ~70 MB in the require cache, a heap this process should not carry while
 * it measures (its GC would land on the mesh path, which allocates per request).
 */
function heldOutDigit(): { png: Buffer; label: number } {
  const data = new URL('../../models/builtin/digits-data.js', import.meta.url).href;
  const render = new URL('../../models/render.js', import.meta.url).href;
  const script =
    `const { loadDigits } = await import(${JSON.stringify(data)}); const { digitToPng } = await import(${JSON.stringify(render)});` +
    `const d = loadDigits().heldOut[0]; process.stdout.write(JSON.stringify({ label: d.label, png: (await digitToPng(d.pixels)).toString('base64') }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 })) as { label: number; png: string };
  return { label: out.label, png: Buffer.from(out.png, 'base64') };
}


/** Races a mesh call with whatever would make it hang (the child agent dying). */
type Guard = <T>(call: Promise<T>) => Promise<T>;

function cellsFor(m: BenchModel, client: KizunaClient, mode: Mode, guard: Guard): Cell[] {
  const name = m.manifest.name;
  const recipe = m.manifest.preprocess!;
  const feeds = { [recipe.input]: m.tensor };
  const viaMesh = (send: () => Promise<InferResult>): Call => async () => {
    const r = await guard(send());
    return { top1: (r.answers?.[0] as { index: number } | undefined)?.index, timings: r.timings };
  };
  const cell = (input: Input, raw: Call, mesh: Call): Cell => ({ model: name, key: m.key, input, mode, calls: { raw, mesh }, samples: {}, timings: [] });
  return [
    cell('tensor', async () => ({ top1: argmax(Object.values(await m.session.run(feeds))[0]!) }), viaMesh(() => client.infer(name, feeds))),
    cell(
      'image',
      async () => {
        const { tensor } = await preprocessImages([m.png], recipe, { maxPixels: MAX_PIXELS });
        return { top1: argmax(Object.values(await m.session.run({ [recipe.input]: tensor }))[0]!) };
      },
      viaMesh(() => client.infer(name, m.png)),
    ),
  ];
}

/** The floor: a model that does not exist gets an error reply (topic parse, frame decode, lookup, publish). */
function floorCell(small: BenchModel, client: KizunaClient, mode: Mode, guard: Guard): Cell {
  const feeds = { [small.manifest.preprocess!.input]: small.tensor };
  const mesh: Call = async () => {
    try {
      await guard(client.infer('no-such-model', feeds));
    } catch (err) {
      if ((err as { code?: string }).code === 'KZ_ERR_UNKNOWN_MODEL') return {};
      throw err;
    }
    throw new Error('a request for no-such-model got an answer');
  };
  return { model: 'no-such-model', key: 'floor', input: 'floor', mode, calls: { mesh }, samples: {}, timings: [] };
}

// ---------------------------------------------------------------- the measurement loop

interface Plan {
  count: number;
  warmup: number;
  block: number;
  budgetMs: number;
}

/** Warms each path up (checking its top-1), then alternates blocks (A B, B A, ...) until each has `count`. */
async function measure(cell: Cell, plan: Plan, expectTop1: number | undefined, onBlock: () => void): Promise<void> {
  const names = Object.keys(cell.calls) as ('raw' | 'mesh')[];
  for (const p of names) {
    for (let i = 0; i < plan.warmup; i++) {
      const { top1 } = await cell.calls[p]!();
      if (expectTop1 !== undefined && top1 !== expectTop1) throw new Error(`${cell.model} ${cell.input} via ${p}: top-1 ${top1}, the raw path says ${expectTop1}`);
    }
    cell.samples[p] = [];
  }
  const started = performance.now();
  for (let round = 0; ; round++) {
    for (const p of round % 2 ? [...names].reverse() : names) {
      const samples = cell.samples[p]!;
      const call = cell.calls[p]!;
      const n = Math.min(plan.block, plan.count - samples.length);
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        const s = await call();
        samples.push(performance.now() - t0);
        if (s.timings) cell.timings.push(s.timings);
      }
      onBlock();
    }
    if (names.every((p) => cell.samples[p]!.length >= plan.count) || performance.now() - started > plan.budgetMs) break;
  }
}

// ---------------------------------------------------------------- reporting

const r1 = (x: number): number => Math.round(x * 10) / 10;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const median = (xs: number[]): number => summarize(xs).p50;
const LABEL: Record<Mode, string> = { child: 'mesh (child)', inproc: 'mesh (inproc)' };

/** Prints the table and fills the per-cell figures: `<model>_<input>[_inproc]_{raw,mesh}_p50_ms`, `..._ratio_p50`, `..._diff_p50_ms`. */
function report(cells: Cell[], figures: Record<string, unknown>): void {
  const rows: (string | number)[][] = [];
  for (const cell of cells) {
    const base = `${cell.input === 'floor' ? 'floor' : `${cell.key}_${cell.input}`}${cell.mode === 'inproc' ? '_inproc' : ''}`;
    const raw = cell.samples.raw ? summarize(cell.samples.raw) : undefined;
    const mesh = summarize(cell.samples.mesh ?? []);
    const t = cell.timings;
    const agent = t.length ? { total: median(t.map((x) => x.total_ms)), pre: median(t.map((x) => x.pre_ms)), infer: median(t.map((x) => x.infer_ms)), post: median(t.map((x) => x.post_ms)) } : undefined;
    if (raw) {
      figures[`${base}_raw_p50_ms`] = r3(raw.p50);
      figures[`${base}_raw_p95_ms`] = r3(raw.p95);
      rows.push([cell.model, cell.input, 'raw', raw.n, raw.p50.toFixed(3), raw.p95.toFixed(3), '', '', '', '', '', '']);
    }
    figures[`${base}_mesh_p50_ms`] = r3(mesh.p50);
    figures[`${base}_mesh_p95_ms`] = r3(mesh.p95);
    if (agent) figures[`${base}_agent_total_p50_ms`] = r3(agent.total);
    if (raw) {
      figures[`${base}_diff_p50_ms`] = r3(mesh.p50 - raw.p50);
      figures[`${base}_ratio_p50`] = r3(mesh.p50 / raw.p50);
    }
    rows.push([
      cell.model,
      cell.input,
      LABEL[cell.mode],
      mesh.n,
      mesh.p50.toFixed(3),
      mesh.p95.toFixed(3),
      raw ? (mesh.p50 - raw.p50).toFixed(3) : '',
      raw ? (mesh.p50 / raw.p50).toFixed(3) : '',
      agent ? `${agent.pre.toFixed(3)}/${agent.infer.toFixed(3)}/${agent.post.toFixed(3)}` : '',
      agent ? agent.total.toFixed(3) : '',
      agent ? (mesh.p50 - agent.total).toFixed(3) : '',
      cell.rssMb !== undefined ? cell.rssMb.toFixed(0) : '',
    ]);
  }
  console.log('Mesh overhead: one request in flight; latency in ms; raw = onnxruntime in this process (1 thread), + sharp pre-processing for images');
  console.log('mesh (child) = client here, agent in a child process, MQTT on 127.0.0.1 (the headline); mesh (inproc) = agent in this process\n');
  console.log(table(['model', 'input', 'path', 'n', 'p50', 'p95', 'p50-raw', 'p50/raw', 'agent pre/infer/post', 'agent total', 'outside agent', 'agent RSS MB'], rows));
  console.log(
    '\nEach mesh row is compared with the raw row just above it (measured interleaved with it).' +
      '\nagent pre/infer/post/total: medians of the timings in the replies (agent clock, message arrival to answer built; reply encoding not included);' +
      '\noutside agent = p50 - agent total: client encode + publish + broker + delivery to the worker + reply encode + publish + delivery + decode.' +
      '\ntensor input goes as a KZB1 frame, reply KZB1; image input is the PNG published as-is, reply JSON (raw outputs as numbers).' +
      '\nagent RSS MB: the child agent\'s VmRSS when that cell ended (cells run top to bottom).' +
      '\nfloor: a digits-sized KZB1 request for a model that does not exist: transport + decode + error reply, no inference.',
  );
}

/** The headline figures: from the child-process agent when it ran, else from the in-process one. */
function goals(figures: Record<string, unknown>, modes: Mode[]): void {
  const mode: Mode = modes.includes('child') ? 'child' : 'inproc';
  const sfx = mode === 'inproc' ? '_inproc' : '';
  const small = figures[`digits_tensor${sfx}_diff_p50_ms`] as number;
  const ratio = figures[`mobilenet_tensor${sfx}_ratio_p50`] as number | undefined;
  Object.assign(figures, {
    small_overhead_p50_ms: small,
    mobilenet_ratio_p50: ratio ?? null,
    headline_path:
      mode === 'child'
        ? 'agent in a child process (kizuna agent), client in the bench process, MQTT on 127.0.0.1'
        : 'agent in the bench process (client, broker and worker share one event loop), MQTT on 127.0.0.1',
    small_overhead_goal_met: small < GOAL_SMALL_OVERHEAD_MS,
    mobilenet_ratio_goal_met: ratio === undefined ? null : ratio <= GOAL_MOBILENET_RATIO,
  });
  if (modes.includes('child') && modes.includes('inproc')) {
    figures.small_overhead_p50_ms_inproc = figures.digits_tensor_inproc_diff_p50_ms;
    figures.mobilenet_ratio_p50_inproc = figures.mobilenet_tensor_inproc_ratio_p50 ?? null;
  }
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log(`\ngoals (headline: ${LABEL[mode]}, tensor input):`);
  const floor = figures[`floor${sfx}_mesh_p50_ms`] as number;
  console.log(
    `  digits: mesh p50 - raw p50 = ${small.toFixed(3)} ms; goal < ${GOAL_SMALL_OVERHEAD_MS} ms: ${verdict(small < GOAL_SMALL_OVERHEAD_MS)}` +
      ` (the no-inference floor above: ${floor.toFixed(3)} ms p50; FIELD-NOTES: ~0.7 ms per aedes round trip)`,
  );
  if (ratio === undefined) console.log(`  MobileNetV2 int8: skipped (${String(figures.mobilenet_skipped)})`);
  else console.log(`  MobileNetV2 int8: mesh p50 / raw p50 = ${ratio.toFixed(3)}; goal <= ${GOAL_MOBILENET_RATIO}: ${verdict(ratio <= GOAL_MOBILENET_RATIO)}`);
}

// ---------------------------------------------------------------- the benchmark

export async function run(argv: string[] = []): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: { count: { type: 'string' }, warmup: { type: 'string' }, block: { type: 'string' }, budget: { type: 'string' }, modes: { type: 'string' } },
  });
  const positive = (flag: string, value: string | undefined, fallback: number): number => {
    const n = Number(value ?? fallback);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} takes a positive integer, got ${value}`);
    return n;
  };
  const plan = (small: boolean): Plan => ({
    count: positive('count', values.count, small ? 1000 : 400),
    warmup: positive('warmup', values.warmup, 50),
    block: positive('block', values.block, 50),
    budgetMs: positive('budget', values.budget, 40) * 1000,
  });
  const modes = (values.modes ?? 'child,inproc').split(',').map((m) => m.trim()) as Mode[];
  if (!modes.length || modes.some((m) => m !== 'child' && m !== 'inproc')) throw new Error(`--modes takes child and/or inproc, got ${values.modes}`);

  const engine = new OnnxEngine();
  const models: BenchModel[] = [];
  const figures: Record<string, unknown> = {};
  /** Whatever is running now, newest first: stopped in the `finally` even when a phase throws. */
  const running: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    while (running.length) {
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error('gave up after 10 s')), 10_000)));
      await Promise.race([running.shift()!(), limit])
        .catch((err: Error) => console.error(`cleanup: ${err.message}`))
        .finally(() => clearTimeout(timer));
    }
  };
  try {
    const digit = heldOutDigit();
    models.push(await prepareModel('digits', path.join(BUILTIN_MODELS_DIR, 'digits.json'), digit.png, engine));
    if (models[0]!.top1 !== digit.label) console.error(`note: digits says ${models[0]!.top1} for a ${digit.label}; latency is measured all the same`);

    // The catalogue's manifest with the shared files placed beside it (a store loads only files
    // inside its folder).
    const kitten = sharedPath('samples', 'imagenet', 'kitten_224.png');
    const shared = await sharedModelsDir(['mobilenetv2-int8']);
    const modelDirs = [BUILTIN_MODELS_DIR];
    if ('dir' in shared && kitten) {
      const removeShared = () => fs.rmSync(shared.dir, { recursive: true, force: true });
      process.once('exit', removeShared);
      running.push(async () => (removeShared(), void process.removeListener('exit', removeShared)));
      models.push(await prepareModel('mobilenet', path.join(shared.dir, 'mobilenetv2-int8.json'), fs.readFileSync(kitten), engine));
      modelDirs.push(shared.dir);
    } else {
      if ('dir' in shared) await shared.remove();
      const missing = 'missing' in shared ? shared.missing : expectedSharedPath('samples', 'imagenet', 'kitten_224.png');
      figures.mobilenet_skipped = `missing ${missing}`;
      console.log(`MobileNetV2 rows SKIPPED: missing ${missing} (set KIZUNA_SHARED to the shared folder)\n`);
    }

    console.log(`inputs: ${models.map((m) => `${m.manifest.name} <- ${m.key === 'digits' ? 'held-out MNIST digit' : 'kitten_224.png'} (${m.png.length} B PNG; tensor ${m.tensor.data.byteLength} B): top-1 "${m.label}"`).join('; ')}\n`);
    const cells: Cell[] = [];
    for (const mode of modes) {
      let url: string;
      let sample = () => {};
      let rssNow = (): number | undefined => undefined;
      let guard: Guard = (call) => call;
      let rssReport: (() => void) | undefined;
      if (mode === 'child') {
        const child = await startChildAgent(modelDirs, models.map((m) => m.manifest.name));
        running.unshift(child.stop);
        url = `mqtt://127.0.0.1:${child.port}`;
        guard = (call) => Promise.race([call, child.died]);
        await new Promise((r) => setTimeout(r, 1000));
        const pid = child.proc.pid!;
        const idle = procStatusMb(pid)?.rss ?? NaN;
        let peak = idle;
        sample = () => {
          const s = procStatusMb(pid);
          if (s && s.rss > peak) peak = s.rss;
        };
        rssNow = () => procStatusMb(pid)?.rss;
        rssReport = () => {
          sample();
          const hwm = procStatusMb(pid)?.hwm ?? NaN;
          Object.assign(figures, { agent_rss_idle_mb: r1(idle), agent_rss_load_mb: r1(peak), agent_rss_hwm_mb: r1(hwm) });
        };
      } else {
        const config = loadConfig({ env: {}, overrides: { host: '127.0.0.1', port: 0, node: 'bench-inproc', models: modelDirs, threads: 1, concurrency: 1, logLevel: 'warn' } });
        const agent = await Agent.create(config);
        running.unshift(() => agent.stop());
        await agent.start();
        url = agent.brokerUrl;
      }
      const client = await KizunaClient.connect({ url, client: `bench-${mode}`, timeoutMs: 10_000 });
      running.unshift(() => client.close());
      for (const m of models) {
        for (const cell of cellsFor(m, client, mode, guard)) {
          const t0 = performance.now();
          await measure(cell, plan(m.key === 'digits'), m.top1, sample);
          cell.rssMb = rssNow();
          console.error(`${mode}: ${cell.model} ${cell.input}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          cells.push(cell);
        }
      }
      const floor = floorCell(models[0]!, client, mode, guard);
      await measure(floor, plan(true), undefined, sample);
      floor.rssMb = rssNow();
      cells.push(floor);
      rssReport?.();
      await stopAll();
    }

    report(cells, figures);
    if (figures.agent_rss_idle_mb !== undefined) {
      console.log(
        `\nchild agent RSS: ${figures.agent_rss_idle_mb} MB idle (1 s after start, models loaded, sharp not yet loaded), ` +
          `${figures.agent_rss_load_mb} MB highest VmRSS seen between blocks under load, VmHWM ${figures.agent_rss_hwm_mb} MB`,
      );
    }
    goals(figures, modes);
    return figures;
  } finally {
    await stopAll();
    await Promise.all(models.map((m) => m.session.release()));
  }
}
