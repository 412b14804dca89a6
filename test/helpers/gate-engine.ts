/**
 * An engine that wraps the real one and holds every run until the test opens the gate, so a test
 * can have requests accepted and in flight at a moment of its choosing (no sleeps).
 */
import type { Engine, ModelSession, SessionOptions } from '../../models/engine.js';
import type { Tensor } from '../../mesh/tensor.js';

export class GateEngine implements Engine {
  readonly name = 'gate';
  private opened!: () => void;
  private gate = new Promise<void>((resolve) => (this.opened = resolve));

  constructor(private readonly inner: Engine) {}

  open(): void {
    this.opened();
  }

  async load(onnx: Uint8Array, options?: SessionOptions): Promise<ModelSession> {
    const session = await this.inner.load(onnx, options);
    const gate = () => this.gate;
    return {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      async run(feeds: Record<string, Tensor>) {
        await gate();
        return session.run(feeds);
      },
      release: () => session.release(),
    };
  }
}
