/** The Engine seam: runs a model on tensors. Real: onnxruntime-node (onnx-engine.ts). */
import type { Tensor } from '../mesh/tensor.js';

export interface SessionOptions {
  /** Threads inside one inference (onnxruntime intra-op). */
  threads?: number;
}

export interface ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

export interface Engine {
  readonly name: string;
  load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession>;
}
