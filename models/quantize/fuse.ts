/**
 * Before static quantization: `Conv -> Add(constant per-channel)` becomes one Conv with a bias,
 * as exporters such as CNTK write a bias (the MNIST model of the ONNX zoo does). Then the bias is
 * quantized with the Conv (int32, inside QLinearConv) and a Relu after the Add can be folded,
 * instead of leaving a float Add between a Q/DQ pair.
 */
import type { GraphIndex } from '../onnx/graph.js';
import { DataType, dimsOf, floatValues, initializerMap, makeTensor, type GraphProto, type NodeProto, type TensorProto } from '../onnx/model.js';

/** The constant's values as one per output channel, when it only varies along the channel axis. */
function perChannel(t: TensorProto | undefined, channels: number, outRank: number): Float32Array | undefined {
  if (!t || t.dataType !== DataType.FLOAT) return undefined;
  const dims = dimsOf(t);
  if (dims.length > outRank) return undefined;
  // Broadcasting aligns the constant's dims on the right of the Conv output [N, C, ...spatial].
  const channelAxis = dims.length - (outRank - 1);
  const values = floatValues(t);
  if (dims.every((d) => d === 1)) return new Float32Array(channels).fill(values[0] ?? 0);
  if (channelAxis < 0 || dims[channelAxis] !== channels || dims.some((d, i) => i !== channelAxis && d !== 1)) return undefined;
  return values;
}

/** Fuses each Conv -> Add(constant) pair in place; returns how many, and the constants it read. */
export function fuseConvAdd(graph: GraphProto, index: GraphIndex, convs: readonly NodeProto[]): { fused: number; replaced: string[] } {
  const replaced: string[] = [];
  const inits = initializerMap(graph);
  const removed = new Set<NodeProto>();
  let fused = 0;
  for (const conv of convs) {
    const out = conv.output?.[0];
    const weight = inits.get(conv.input?.[1] ?? '');
    const add = out ? index.readers(out) : [];
    const a = add[0];
    if (!out || !weight || add.length !== 1 || !a || a.opType !== 'Add' || (a.domain ?? '') !== '' || index.graphOutputs.has(out)) continue;
    const other = a.input?.[0] === out ? a.input?.[1] : a.input?.[0];
    const wDims = dimsOf(weight);
    const channels = wDims[0] as number;
    const add1 = perChannel(other ? inits.get(other) : undefined, channels, wDims.length);
    const oldBias = conv.input?.[2] ? inits.get(conv.input[2]) : undefined;
    if (!add1 || (conv.input?.[2] && !oldBias)) continue;
    const bias = oldBias ? floatValues(oldBias).map((v, c) => v + (add1[c] as number)) : add1;
    const name = index.fresh(`${conv.name || out}.bias`);
    graph.initializer = [...(graph.initializer ?? []), makeTensor(name, [channels], bias)];
    conv.input = [conv.input?.[0] ?? '', conv.input?.[1] ?? '', name];
    conv.output = [a.output?.[0] ?? '', ...(conv.output ?? []).slice(1)];
    removed.add(a);
    replaced.push(other!, ...(oldBias ? [oldBias.name ?? ''] : []));
    fused++;
  }
  graph.node = (graph.node ?? []).filter((n) => !removed.has(n));
  return { fused, replaced };
}
