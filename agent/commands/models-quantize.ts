/**
 * `kizuna models quantize IN OUT`: int8 quantization of an fp32 ONNX model (models/quantize/),
 * then fp32 versus int8 on this machine: size, latency p50 and agreement on the samples.
 */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { KizunaError } from '../../mesh/errors.js';
import { parseManifest, type Manifest } from '../../models/manifest.js';
import { graphOf, initializerMap, readModel } from '../../models/onnx/model.js';
import { compareModels, type Comparison } from '../../models/quantize/evaluate.js';
import { quantizeModel, type Feeds, type QuantizeMode, type QuantizeReport } from '../../models/quantize/quantize.js';
import { count } from '../../models/quantize/report.js';
import { loadSamples, sampleFiles, syntheticFeeds } from '../../models/quantize/samples.js';

const HELP = `usage: kizuna models quantize IN OUT [options]

Quantizes the fp32 ONNX model IN to int8, writes OUT, then runs both in onnxruntime (1 thread)
and prints their size, latency p50 and, on the samples, how often their top-1 agrees.

  --mode MODE        auto (default): Conv static when --samples is given, MatMul/Gemm dynamic;
                     dynamic: MatMul/Gemm only; static: Conv, MatMul and Gemm (needs --samples)
  --samples PATH     an image, a .npy file (float32) or a folder of them: the calibration inputs,
                     and the inputs compared
  --manifest FILE    the model's manifest, whose image pre-processing turns images into inputs
  --per-tensor       one weight scale per tensor (default: one per output channel)
  --no-reduce-range  8-bit weights in [-127, 127] (default: 7-bit, exact on x86 without VNNI)
  --runs N           timed runs of each model (default 200)
  --json             print one JSON object`;

const MODES: readonly QuantizeMode[] = ['auto', 'dynamic', 'static'];

async function readManifest(file: string): Promise<Manifest> {
  const text = await fs.readFile(file, 'utf8').catch((err: Error) => {
    throw new KizunaError('KZ_ERR_MANIFEST', `${file}: ${err.message}`);
  });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${file}: not JSON: ${(err as Error).message}`);
  }
  return parseManifest(value, file);
}

const ms = (x: number): string => (x >= 10 ? x.toFixed(1) : x.toFixed(3));
const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

function table(inPath: string, outPath: string, report: QuantizeReport, c: Comparison | undefined): string {
  const how = (r: Record<string, number>, word: string): string[] => Object.entries(r).map(([op, n]) => `${op} x${n} ${word}`);
  const done = [...how(report.quantized.static, 'static QDQ'), ...how(report.quantized.dynamic, 'dynamic')];
  const lines = [`${inPath} -> ${outPath}: ${done.join(', ') || 'nothing quantized'}; opset ${report.opset.to}, ${report.perChannel ? 'per-channel' : 'per-tensor'} ${report.reduceRange ? '7-bit' : '8-bit'} weights`];
  if (report.calibration.samples) lines.push(`calibration: min/max of ${report.calibration.tensors} tensors over ${report.calibration.samples} samples; ${report.foldedActivations} Relu/Clip folded into uint8 ranges`);
  for (const s of report.skipped) lines.push(`left in float: ${s.op} ${s.node}: ${s.reason}`);
  for (const n of report.notes) lines.push(`note: ${n}`);
  lines.push('');
  const rows = [
    ['model', 'bytes', 'p50 ms'],
    ['fp32', String(report.bytes.in), c ? ms(c.fp32.p50Ms) : '-'],
    ['int8', String(report.bytes.out), c ? ms(c.int8.p50Ms) : '-'],
  ];
  const widths = rows[0]!.map((_, j) => Math.max(...rows.map((r) => r[j]!.length)));
  const fmt = (r: string[]): string => r.map((v, j) => (j ? v.padStart(widths[j]!) : v.padEnd(widths[j]!))).join('  ');
  lines.push(fmt(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), fmt(rows[1]!), fmt(rows[2]!), '');
  const size = `int8 is ${pct(report.bytes.out / report.bytes.in)} of the fp32 size`;
  if (!c) lines.push(`${size}; latency not measured (an input is not float32 and no --samples were given)`);
  else {
    const speed = c.int8.p50Ms < c.fp32.p50Ms ? `${(c.fp32.p50Ms / c.int8.p50Ms).toFixed(2)}x faster` : `NOT faster (${(c.int8.p50Ms / c.fp32.p50Ms).toFixed(2)}x the fp32 time)`;
    lines.push(`${size}; int8 p50 is ${speed} (median of ${c.runs} interleaved runs, 1 thread)`);
    lines.push(c.top1Agreement === undefined ? 'agreement: not measured (no --samples; latency on made-up inputs)'
      : `agreement on ${c.samples} samples: top-1 ${pct(c.top1Agreement)}, max |fp32 - int8| ${c.maxAbsDiff?.toPrecision(3)} (output ${c.output})`);
  }
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      mode: { type: 'string', default: 'auto' },
      samples: { type: 'string' },
      manifest: { type: 'string' },
      'per-tensor': { type: 'boolean' },
      'no-reduce-range': { type: 'boolean' },
      runs: { type: 'string', default: '200' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [inPath, outPath, ...extra] = positionals;
  const runs = Number(values.runs);
  const mode = values.mode as QuantizeMode;
  if (values.help || !inPath || !outPath || extra.length || !MODES.includes(mode) || !(Number.isInteger(runs) && runs > 0)) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  if (mode === 'static' && !values.samples) throw new KizunaError('KZ_ERR_CONFIG', '--mode static needs --samples (calibration inputs)');

  const bytes = await fs.readFile(inPath).catch((err: Error) => {
    throw new KizunaError('KZ_ERR_MODEL_LOAD', `${inPath}: ${err.message}`);
  });
  const model = readModel(bytes);
  const inits = initializerMap(graphOf(model));
  const inputs = (graphOf(model).input ?? []).map((v) => v.name ?? '').filter((n) => n && !inits.has(n));
  const manifest = values.manifest ? await readManifest(values.manifest) : undefined;
  // The manifest's input when the model has it, else the model's first (a manifest of a sibling model).
  const wanted = manifest?.preprocess?.input;
  const input = wanted && inputs.includes(wanted) ? wanted : inputs[0] ?? 'input';
  let samples: Feeds[] = [];
  if (values.samples) samples = await loadSamples(await sampleFiles(values.samples), input, manifest);

  const result = await quantizeModel(bytes, { mode, samples, perChannel: !values['per-tensor'], reduceRange: !values['no-reduce-range'] });
  await fs.writeFile(outPath, result.bytes);

  const made = samples.length ? undefined : syntheticFeeds(model);
  const compareOn = samples.length ? samples : made ? [made] : [];
  const classified = manifest?.postprocess?.kind === 'classify' ? manifest.postprocess.output : undefined;
  const output = (graphOf(model).output ?? []).some((o) => o.name === classified) ? classified : undefined;
  const comparison = compareOn.length
    ? await compareModels(bytes, result.bytes, compareOn, { runs, agreement: samples.length > 0, ...(output ? { output } : {}) })
    : undefined;
  if (values.json) console.log(JSON.stringify({ in: inPath, out: outPath, report: result.report, comparison: comparison ?? null }));
  else console.log(table(inPath, outPath, result.report, comparison));
  if (count(result.report.quantized.static) + count(result.report.quantized.dynamic) === 0) console.error('kizuna models quantize: nothing was quantized (see "left in float")');
  return 0;
}
