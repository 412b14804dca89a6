/**
 * A small multilayer perceptron trained with minibatch SGD + momentum, in plain TypeScript.
 * Deterministic: one seeded PRNG drives initialisation, epoch order and augmentation, and every
 * loop runs in a fixed order, so the same options give bit-identical weights.
 */
import { mulberry32, shuffle, PIXELS, SIDE, type Digit } from './digits-data.js';

/** A fully connected layer; `w` is [inDim][outDim] row-major, the layout of ONNX MatMul's B. */
export interface Dense {
  inDim: number;
  outDim: number;
  w: Float32Array;
  b: Float32Array;
}
/** Layers applied in order, with ReLU between them and none after the last (logits). */
export type Mlp = Dense[];
/** Gradient sums or momentum, shaped like one layer's parameters. */
type Params = { w: Float32Array; b: Float32Array };

export interface TrainOptions {
  hidden: number[];
  epochs: number;
  batch: number;
  /** Peak learning rate, decayed to zero along a cosine. */
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Random translation of each training digit by up to this many pixels (0 = none). */
  shift: number;
  seed: number;
}

export const DEFAULT_TRAIN: TrainOptions = {
  hidden: [128],
  epochs: 12,
  batch: 32,
  lr: 0.05,
  momentum: 0.9,
  weightDecay: 1e-4,
  shift: 1,
  seed: 20261128,
};

function gaussian(random: () => number): number {
  // Box-Muller; 1 - u keeps the log argument in (0, 1].
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

function initMlp(sizes: number[], random: () => number): Mlp {
  const layers: Mlp = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const inDim = sizes[l] as number;
    const outDim = sizes[l + 1] as number;
    const std = Math.sqrt(2 / inDim); // He init, suited to ReLU
    const w = new Float32Array(inDim * outDim);
    for (let i = 0; i < w.length; i++) w[i] = gaussian(random) * std;
    layers.push({ inDim, outDim, w, b: new Float32Array(outDim) });
  }
  return layers;
}

/** acts[0] is the input; acts[l + 1] the output of layer l (ReLU applied except on the last). */
function forward(mlp: Mlp, acts: Float32Array[]): void {
  for (let l = 0; l < mlp.length; l++) {
    const { inDim, outDim, w, b } = mlp[l] as Dense;
    const x = acts[l] as Float32Array;
    const z = acts[l + 1] as Float32Array;
    z.set(b);
    for (let i = 0; i < inDim; i++) {
      const xi = x[i] as number;
      if (xi === 0) continue; // inputs are ~80% background and ReLU outputs ~half zero
      const row = i * outDim;
      for (let j = 0; j < outDim; j++) z[j] = (z[j] as number) + xi * (w[row + j] as number);
    }
    if (l + 1 < mlp.length) for (let j = 0; j < outDim; j++) if ((z[j] as number) < 0) z[j] = 0;
  }
}

function scratch(mlp: Mlp): Float32Array[] {
  return [new Float32Array(PIXELS), ...mlp.map((d) => new Float32Array(d.outDim))];
}

/** Copies `src` translated by (dx, dy) into `dst`, filling with background. */
function translate(src: Float32Array, dst: Float32Array, dx: number, dy: number): void {
  dst.fill(0);
  for (let y = Math.max(0, dy); y < Math.min(SIDE, SIDE + dy); y++) {
    const from = (y - dy) * SIDE - dx;
    for (let x = Math.max(0, dx); x < Math.min(SIDE, SIDE + dx); x++) dst[y * SIDE + x] = src[from + x] as number;
  }
}

export function trainMlp(data: readonly Digit[], options: Partial<TrainOptions> = {}): Mlp {
  const o = { ...DEFAULT_TRAIN, ...options };
  const random = mulberry32(o.seed);
  const mlp = initMlp([PIXELS, ...o.hidden, 10], random);
  const zeros = (d: Dense): Params => ({ w: new Float32Array(d.w.length), b: new Float32Array(d.outDim) });
  const grads = mlp.map(zeros);
  const vel = mlp.map(zeros);
  const acts = scratch(mlp);
  const deltas = mlp.map((d) => new Float32Array(d.outDim));
  const order = data.map((_, i) => i);
  const steps = o.epochs * Math.ceil(data.length / o.batch);
  let step = 0;

  for (let epoch = 0; epoch < o.epochs; epoch++) {
    shuffle(order, random);
    for (let start = 0; start < order.length; start += o.batch) {
      const end = Math.min(order.length, start + o.batch);
      for (let k = start; k < end; k++) {
        const digit = data[order[k] as number] as Digit;
        const dx = o.shift ? Math.floor(random() * (2 * o.shift + 1)) - o.shift : 0;
        const dy = o.shift ? Math.floor(random() * (2 * o.shift + 1)) - o.shift : 0;
        translate(digit.pixels, acts[0] as Float32Array, dx, dy);
        forward(mlp, acts);
        backward(mlp, acts, deltas, grads, digit.label);
      }
      // Cosine decay: large steps early, a gentle settle at the end.
      const lr = (o.lr * (1 + Math.cos((Math.PI * step++) / steps))) / 2;
      update(mlp, grads, vel, lr, end - start, o);
    }
  }
  return mlp;
}

function backward(mlp: Mlp, acts: Float32Array[], deltas: Float32Array[], grads: Params[], label: number): void {
  // Softmax cross-entropy: dLoss/dlogits = softmax - onehot.
  const last = mlp.length - 1;
  const logits = acts[last + 1] as Float32Array;
  const out = deltas[last] as Float32Array;
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (let j = 0; j < logits.length; j++) sum += out[j] = Math.exp((logits[j] as number) - max);
  for (let j = 0; j < logits.length; j++) out[j] = (out[j] as number) / sum - (j === label ? 1 : 0);

  for (let l = last; l >= 0; l--) {
    const { inDim, outDim, w } = mlp[l] as Dense;
    const x = acts[l] as Float32Array;
    const d = deltas[l] as Float32Array;
    const g = grads[l] as Params;
    const prev = l > 0 ? (deltas[l - 1] as Float32Array) : undefined;
    for (let j = 0; j < outDim; j++) g.b[j] = (g.b[j] as number) + (d[j] as number);
    for (let i = 0; i < inDim; i++) {
      const xi = x[i] as number;
      if (xi === 0) {
        if (prev) prev[i] = 0; // ReLU was off: no gradient flows back
        continue;
      }
      const row = i * outDim;
      let back = 0;
      for (let j = 0; j < outDim; j++) {
        g.w[row + j] = (g.w[row + j] as number) + xi * (d[j] as number);
        back += (w[row + j] as number) * (d[j] as number);
      }
      if (prev) prev[i] = back;
    }
  }
}

function update(mlp: Mlp, grads: Params[], vel: Params[], lr: number, n: number, o: TrainOptions): void {
  for (let l = 0; l < mlp.length; l++) {
    const layer = mlp[l] as Dense;
    const g = grads[l] as Params;
    const v = vel[l] as Params;
    for (const key of ['w', 'b'] as const) {
      const p = layer[key];
      const gp = g[key];
      const vp = v[key];
      const wd = key === 'w' ? o.weightDecay : 0; // no decay on biases
      for (let i = 0; i < p.length; i++) {
        const vi = o.momentum * (vp[i] as number) - lr * ((gp[i] as number) / n + wd * (p[i] as number));
        vp[i] = vi;
        p[i] = (p[i] as number) + vi;
      }
      gp.fill(0);
    }
  }
}

/** Logits for one digit, in plain TypeScript (the reference the ONNX models must match). */
export function predict(mlp: Mlp, pixels: Float32Array): Float32Array {
  const acts = scratch(mlp);
  (acts[0] as Float32Array).set(pixels);
  forward(mlp, acts);
  return acts[mlp.length] as Float32Array;
}
