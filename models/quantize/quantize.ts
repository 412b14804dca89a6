/**
 * quantizeModel: an fp32 ONNX model in, an int8 one out, with a report of what was done.
 *
 * Modes: `dynamic` quantizes MatMul/Gemm with constant weights (dynamic.ts); `static` quantizes
 * Conv, MatMul and Gemm in QDQ form with activation ranges calibrated on the samples
 * (static-qdq.ts; a MatMul/Gemm that cannot be static falls back to dynamic); `auto` (default)
 * makes Conv static when samples are given and MatMul/Gemm dynamic. Other nodes stay float.
 * Async because calibration runs the model in onnxruntime.
 */
import { KizunaError } from '../../mesh/errors.js';
import type { Engine } from '../engine.js';
import { dropUnused, GraphIndex } from '../onnx/graph.js';
import { graphOf, initializerMap, opsetVersion, readModel, toNumber, writeModel, type IntLike, type NodeProto } from '../onnx/model.js';
import { calibrate } from './calibrate.js';
import { fuseConvAdd } from './fuse.js';
import { quantizeDynamic } from './dynamic.js';
import { opsetBlocker, QDQ_OPSET, raiseOpset } from './opset.js';
import type { QuantizeMode, QuantizeOptions, QuantizeReport } from './report.js';
import { Rewrite } from './rewrite.js';
import { applyStatic, planStatic } from './static-qdq.js';
import type { WeightOptions } from './weights.js';

export type { Feeds, QuantizeMode, QuantizeOptions, QuantizeReport } from './report.js';

const WEIGHTED = new Set(['Conv', 'MatMul', 'Gemm']);
const isDefaultDomain = (n: NodeProto): boolean => !n.domain || n.domain === 'ai.onnx';
const label = (n: NodeProto): string => n.name || n.output?.[0] || '?';
const bump = (r: Record<string, number>, op: string): void => void (r[op] = (r[op] ?? 0) + 1);

export async function quantizeModel(bytes: Uint8Array, options: QuantizeOptions = {}, engine?: Engine): Promise<{ bytes: Uint8Array; report: QuantizeReport }> {
  const mode: QuantizeMode = options.mode ?? 'auto';
  const samples = options.samples ?? [];
  const perChannel = options.perChannel ?? true;
  const reduceRange = options.reduceRange ?? true;
  if (mode === 'static' && samples.length === 0) throw new KizunaError('KZ_ERR_CONFIG', 'static quantization needs calibration samples');

  const model = readModel(bytes);
  const from = opsetVersion(model);
  const report: QuantizeReport = {
    mode, perChannel, reduceRange,
    opset: { from, to: from },
    calibration: { method: 'minmax', samples: 0, tensors: 0 },
    quantized: { static: {}, dynamic: {} },
    foldedActivations: 0,
    skipped: [],
    notes: [],
    bytes: { in: bytes.length, out: 0 },
  };
  const skip = (n: NodeProto, reason: string): void => void report.skipped.push({ node: label(n), op: n.opType ?? '?', reason });

  // IR 3 required every initializer to be listed as a graph input too; from IR 4 that would make
  // them inputs a caller may override (never constant), so they leave the input list.
  if (toNumber(model.irVersion as IntLike) < 4) {
    const g = graphOf(model);
    const inits = initializerMap(g);
    g.input = (g.input ?? []).filter((v) => !inits.has(v.name ?? ''));
    model.irVersion = 4;
    report.notes.push('IR version raised to 4: initializers are no longer listed as graph inputs');
  }

  const weighted = (graphOf(model).node ?? []).filter((n) => isDefaultDomain(n) && WEIGHTED.has(n.opType ?? ''));
  const wantStatic = (n: NodeProto): boolean => mode === 'static' || (mode === 'auto' && samples.length > 0 && n.opType === 'Conv');

  // Opset: per-channel Q/DQ needs 13, DynamicQuantizeLinear 11, Q/DQ at all 10.
  let opset = from;
  const anyStatic = weighted.some(wantStatic);
  const needed = anyStatic ? (perChannel ? QDQ_OPSET : 10) : 11;
  if (weighted.length && from < needed) {
    const blocker = opsetBlocker(model);
    if (blocker === undefined) {
      raiseOpset(model, new GraphIndex(graphOf(model)));
      opset = QDQ_OPSET;
      report.notes.push(`opset raised from ${from} to ${QDQ_OPSET} (every operator keeps its meaning)`);
    } else {
      report.notes.push(`opset stays ${from}: ${blocker}`);
    }
  }
  report.opset.to = opset;
  const weights: WeightOptions = { perChannel: perChannel && opset >= QDQ_OPSET, bits: reduceRange ? 7 : 8 };
  if (perChannel && !weights.perChannel) report.notes.push(`per-tensor static weights: per-channel DequantizeLinear needs opset ${QDQ_OPSET}`);

  const graph = graphOf(model);
  let index = new GraphIndex(graph);
  const rewrite = new Rewrite();
  const nodes = (graph.node ?? []).filter((n) => isDefaultDomain(n) && WEIGHTED.has(n.opType ?? ''));
  const staticCandidates = nodes.filter(wantStatic);
  const convs = staticCandidates.filter((n) => n.opType === 'Conv');
  if (convs.length && opset >= 10) {
    const { fused, replaced } = fuseConvAdd(graph, index, convs);
    if (fused) {
      dropUnused(graph, replaced);
      index = new GraphIndex(graph);
      report.notes.push(`${fused} Conv -> Add(constant) pair(s) fused into a Conv with bias`);
    }
  }
  const inits = initializerMap(graph);

  // Static first: its plan decides the tensors to calibrate, on the float graph.
  const fallback: NodeProto[] = [];
  if (staticCandidates.length && opset < 10) for (const n of staticCandidates) skip(n, `QuantizeLinear needs opset 10 (model has ${opset})`);
  else if (staticCandidates.length) {
    const plan = planStatic(staticCandidates, index, inits, (n, reason) => (n.opType === 'Conv' ? skip(n, reason) : fallback.push(n)));
    const ranges = await calibrate(model, [...plan.tensors], samples, engine);
    report.calibration = { method: 'minmax', samples: samples.length, tensors: plan.tensors.size };
    report.notes.push(...applyStatic(plan, ranges, index, inits, rewrite, weights).notes);
    report.foldedActivations = plan.folds.length;
    for (const { node } of plan.nodes) bump(report.quantized.static, node.opType ?? '?');
  }
  for (const n of nodes.filter((x) => !wantStatic(x)).concat(fallback)) {
    if (n.opType === 'Conv') {
      skip(n, 'Conv is quantized statically only: give calibration samples');
      continue;
    }
    if (opset < 11) {
      skip(n, `DynamicQuantizeLinear needs opset 11 (model has ${opset})`);
      continue;
    }
    const reason = quantizeDynamic(n, index, inits, rewrite, { ...weights, perChannel }); // per-column scales are a Mul: any opset
    if (reason) skip(n, reason);
    else bump(report.quantized.dynamic, n.opType ?? '?');
  }
  rewrite.apply(graph);
  const out = writeModel(model);
  report.bytes.out = out.length;
  return { bytes: out, report };
}
