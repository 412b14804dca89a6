/** The Engine seam: runs a model on tensors. Real: onnxruntime-node (onnx-engine.ts). */
import type { Tensor } from '../mesh/tensor.js';

export interface SessionOptions {
  /** Threads inside one inference (onnxruntime intra-op). */
  threads?: number;
}

export interface ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Each input's and output's dtype and shape as the model file declares them (when the runtime tells). */
  describe?(): { inputs: ValueInfo[]; outputs: ValueInfo[] };
  run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

/** A model input or output as its file declares it: a dtype name and sizes or symbolic names (unknown rank: no shape). */
export interface ValueInfo {
  name: string;
  dtype: string;
  shape?: (number | string)[];
}

export interface Engine {
  readonly name: string;
  load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession>;
}
