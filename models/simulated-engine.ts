/**
 * An engine that runs the real one, then waits as if each input took `msPerInput` to compute.
 * Waiting (a timer, not a busy loop) lets one 2-core machine host dozens of agents of known,
 * different speeds: the scaling benchmark and the "slow board" tests use it.
 */
import type { Engine, ModelSession, SessionOptions } from './engine.js';
import type { Tensor } from '../mesh/tensor.js';

export class SimulatedEngine implements Engine {
  readonly name: string;

  constructor(
    private readonly inner: Engine,
    private readonly msPerInput: number,
  ) {
    this.name = `simulated(${inner.name}, ${msPerInput} ms/input)`;
  }

  async load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession> {
    const session = await this.inner.load(onnx, options);
    const msPerInput = this.msPerInput;
    // One board computes one batch at a time: runs queue behind each other.
    let busyUntil = Promise.resolve();
    return {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      async run(feeds: Record<string, Tensor>) {
        const batch = Object.values(feeds)[0]?.shape[0] ?? 1;
        const turn = busyUntil.then(() => new Promise<void>((resolve) => setTimeout(resolve, msPerInput * batch)));
        busyUntil = turn;
        const [outputs] = await Promise.all([session.run(feeds), turn]);
        return outputs;
      },
      release: () => session.release(),
    };
  }
}
