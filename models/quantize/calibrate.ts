/**
 * Calibration: runs the fp32 model on sample inputs with the tensors to quantize added as extra
 * graph outputs, and keeps each tensor's minimum and maximum over all samples (min/max
 * calibration, onnxruntime's default; no percentile clipping, so an outlier widens the range).
 */
import type { Engine } from '../engine.js';
import { OnnxEngine } from '../onnx-engine.js';
import { cloneModel, DataType, graphOf, tensorValueInfo, writeModel, type ModelProto } from '../onnx/model.js';
import type { Feeds } from './report.js';

export interface Range {
  min: number;
  max: number;
}

function update(ranges: Map<string, Range>, name: string, data: ArrayLike<number>): void {
  let { min, max } = ranges.get(name) ?? { min: Infinity, max: -Infinity };
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  ranges.set(name, { min, max });
}

export async function calibrate(model: ModelProto, tensors: readonly string[], samples: readonly Feeds[], engine: Engine = new OnnxEngine()): Promise<Map<string, Range>> {
  const ranges = new Map<string, Range>();
  if (!tensors.length || !samples.length) return ranges;
  const probe = cloneModel(model);
  const graph = graphOf(probe);
  const inputs = new Set((graph.input ?? []).map((v) => v.name ?? ''));
  const outputs = new Set((graph.output ?? []).map((v) => v.name ?? ''));
  for (const t of tensors) if (!inputs.has(t) && !outputs.has(t)) graph.output = [...(graph.output ?? []), tensorValueInfo(t, DataType.FLOAT)];
  const session = await engine.load(writeModel(probe), { threads: 1 });
  try {
    for (const feeds of samples) {
      const out = await session.run(feeds);
      for (const t of tensors) {
        const data = inputs.has(t) ? feeds[t]?.data : out[t]?.data;
        if (!data) throw new Error(`calibration: no value for tensor ${t}`);
        if (!(data instanceof Float32Array)) throw new Error(`calibration: tensor ${t} is not float32`);
        update(ranges, t, data);
      }
    }
  } finally {
    await session.release();
  }
  return ranges;
}
