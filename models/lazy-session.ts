/**
 * The pieces of a served model's session that are not the store's bookkeeping: the session
 * callers hold (it loads the model when it is cold), the first run on a blank image, and freeing
 * a model file's bytes as soon as the runtime has its own copy.
 */
import type { Tensor, TensorData } from '../mesh/tensor.js';
import { DTYPES, elementCount } from '../mesh/tensor.js';
import type { ModelSession } from './engine.js';
import type { Manifest } from './manifest.js';

/**
 * Frees a model file's bytes at once. A Buffer that alone owns a large ArrayBuffer (what
 * fs.readFile returns for a model) is transferred into a message that is never received: its
 * memory goes when the channel closes, where garbage would wait for V8's next collection (with
 * models loaded again and again under a budget, tens of MB of RSS). Small or shared buffers are
 * left alone. The Buffer is empty afterwards.
 */
export function discard(bytes: Buffer): void {
  const ab = bytes.buffer;
  if (bytes.byteLength < 64 * 1024 || bytes.byteOffset !== 0 || bytes.byteLength !== ab.byteLength || !(ab instanceof ArrayBuffer)) return;
  const { port1, port2 } = new MessageChannel();
  try {
    port1.postMessage(null, [ab]);
  } catch {
    // not transferable (already detached): nothing to free
  } finally {
    port1.close();
    port2.close();
  }
}

/**
 * A served model's session as callers see it: each run takes a lease (loading the model when it
 * is cold). Names are the session's once it was loaded, the manifest's before.
 */
export class LazySession implements ModelSession {
  constructor(
    private readonly model: { manifest: Manifest; io?: { inputs: readonly string[]; outputs: readonly string[] } },
    private readonly runOnce: (feeds: Record<string, Tensor>) => Promise<Record<string, Tensor>>,
  ) {}

  get inputNames(): readonly string[] {
    return this.model.io?.inputs ?? this.model.manifest.inputs.map((i) => i.name);
  }

  get outputNames(): readonly string[] {
    return this.model.io?.outputs ?? this.model.manifest.outputs.map((o) => o.name);
  }

  run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    return this.runOnce(feeds);
  }

  /** The store owns the real session (released when the model is unloaded or evicted). */
  async release(): Promise<void> {}
}

/**
 * One run on a blank image, so the first request does not pay for the runtime's first-run
 * allocations and the footprint measured at load includes them. Only for image models (a blank
 * image is always a valid input; zeros are not for every tensor model: Silero VAD's `sr`), and
 * only when the input's shape is fixed but for its batch. Failures are ignored: it is a warm-up.
 */
export async function warmUp(session: ModelSession, manifest: Manifest): Promise<void> {
  const pre = manifest.preprocess;
  const spec = pre && manifest.inputs.find((i) => i.name === pre.input);
  if (!spec || manifest.inputs.length !== 1) return;
  const shape = spec.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 1 : -1));
  const count = elementCount(shape);
  if (count <= 0 || count > 64 * 1024 * 1024) return;
  const { array } = DTYPES[spec.dtype];
  await session.run({ [spec.name]: { dtype: spec.dtype, shape, data: new array(count) as TensorData } }).catch(() => undefined);
}
