/** The only module that touches onnxruntime-node; loaded lazily so start-up stays small. */
import type { Engine, ModelSession, SessionOptions, ValueInfo } from './engine.js';
import { isDType, type Tensor, type TensorData } from '../mesh/tensor.js';
import { KizunaError } from '../mesh/errors.js';

type Ort = typeof import('onnxruntime-node');
let ortPromise: Promise<Ort> | undefined;
function ort(): Promise<Ort> {
  // onnxruntime-node is CommonJS; under ESM its exports sit on the namespace (and on .default).
  ortPromise ??= import('onnxruntime-node').then((m) => ((m as { default?: Ort }).default ?? m) as Ort);
  return ortPromise;
}

export class OnnxEngine implements Engine {
  readonly name = 'onnxruntime';

  async load(onnx: Uint8Array, options: SessionOptions = {}): Promise<ModelSession> {
    const rt = await ort();
    const session = await rt.InferenceSession.create(onnx, {
      intraOpNumThreads: options.threads ?? 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    return new OnnxSession(rt, session);
  }
}

class OnnxSession implements ModelSession {
  constructor(
    private readonly rt: Ort,
    private readonly session: import('onnxruntime-node').InferenceSession,
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  describe(): { inputs: ValueInfo[]; outputs: ValueInfo[] } {
    const info = (m: import('onnxruntime-node').InferenceSession.ValueMetadata): ValueInfo =>
      m.isTensor ? { name: m.name, dtype: m.type, shape: [...m.shape] } : { name: m.name, dtype: 'non-tensor' };
    return { inputs: this.session.inputMetadata.map(info), outputs: this.session.outputMetadata.map(info) };
  }

  async run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    // Built with fromEntries, not assignment: an input named "__proto__" stays an input.
    const ortFeeds: Record<string, import('onnxruntime-node').Tensor> = Object.fromEntries(
      Object.entries(feeds).map(([name, t]) => [name, new this.rt.Tensor(t.dtype, t.data as never, t.shape)]),
    );
    let results;
    try {
      results = await this.session.run(ortFeeds);
    } catch (err) {
      throw new KizunaError('KZ_ERR_INFERENCE', (err as Error).message, { cause: err });
    }
    return Object.fromEntries(
      Object.entries(results).map(([name, t]) => {
        if (!isDType(t.type)) throw new KizunaError('KZ_ERR_INFERENCE', `output ${name} has unsupported dtype ${t.type}`);
        return [name, { dtype: t.type, shape: [...t.dims], data: t.data as TensorData }];
      }),
    );
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
