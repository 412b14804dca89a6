/**
 * fp32 versus int8 on the same inputs: size, latency p50 and agreement. Both models run in
 * onnxruntime with one thread; latency runs alternate between the two models (fp32 first on even
 * runs, int8 first on odd ones) so that a busy moment of the machine hits both alike.
 */
import type { Engine, ModelSession } from '../engine.js';
import { OnnxEngine } from '../onnx-engine.js';
import type { Feeds } from './report.js';

export interface CompareOptions {
  /** Timed runs of each model (after `warmup` untimed ones). Default 200. */
  runs?: number;
  warmup?: number;
  /** The output compared (default: the model's first output). */
  output?: string;
  /** false when the samples are synthetic: latency only. Default true. */
  agreement?: boolean;
  engine?: Engine;
}

export interface Comparison {
  samples: number;
  runs: number;
  output: string;
  fp32: { bytes: number; p50Ms: number };
  int8: { bytes: number; p50Ms: number };
  /** Fraction of rows (each sample's last-axis vectors) whose arg max is the same; undefined without agreement. */
  top1Agreement?: number;
  /** Largest |fp32 - int8| over every value of the output. */
  maxAbsDiff?: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? (s[s.length >> 1] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2) : NaN;
};

function argmaxRows(data: ArrayLike<number>, width: number): number[] {
  const rows: number[] = [];
  for (let r = 0; r * width < data.length; r++) {
    let best = 0;
    for (let j = 1; j < width; j++) if ((data[r * width + j] as number) > (data[r * width + best] as number)) best = j;
    rows.push(best);
  }
  return rows;
}

export async function compareModels(fp32: Uint8Array, int8: Uint8Array, samples: readonly Feeds[], options: CompareOptions = {}): Promise<Comparison> {
  if (!samples.length) throw new Error('compareModels: no samples');
  const engine = options.engine ?? new OnnxEngine();
  const runs = options.runs ?? 200;
  const warmup = options.warmup ?? Math.min(20, runs);
  const a = await engine.load(fp32, { threads: 1 });
  let b: ModelSession | undefined;
  try {
    b = await engine.load(int8, { threads: 1 });
    const output = options.output ?? (a.outputNames[0] as string);
    let same = 0;
    let rows = 0;
    let maxAbsDiff = 0;
    if (options.agreement !== false) {
      for (const feeds of samples) {
        const x = (await a.run(feeds))[output];
        const y = (await b.run(feeds))[output];
        if (!x || !y) throw new Error(`compareModels: no output ${output}`);
        const width = x.shape.at(-1) ?? 1;
        const tx = argmaxRows(x.data as Float32Array, width);
        const ty = argmaxRows(y.data as Float32Array, width);
        tx.forEach((t, i) => (same += t === ty[i] ? 1 : 0));
        rows += tx.length;
        for (let i = 0; i < x.data.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs((x.data[i] as number) - (y.data[i] as number)));
      }
    }
    const times: [number[], number[]] = [[], []];
    const sessions = [a, b] as const;
    for (let k = 0; k < warmup + runs; k++) {
      const feeds = samples[k % samples.length] as Feeds;
      for (const which of k % 2 ? [1, 0] : [0, 1]) {
        const t0 = performance.now();
        await sessions[which as 0 | 1].run(feeds);
        if (k >= warmup) times[which as 0 | 1].push(performance.now() - t0);
      }
    }
    return {
      samples: samples.length,
      runs,
      output,
      fp32: { bytes: fp32.length, p50Ms: median(times[0]) },
      int8: { bytes: int8.length, p50Ms: median(times[1]) },
      ...(options.agreement !== false ? { top1Agreement: rows ? same / rows : 0, maxAbsDiff } : {}),
    };
  } finally {
    await a.release();
    await b?.release();
  }
}
