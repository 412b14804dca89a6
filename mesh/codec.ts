/** Tensors between their wire forms (JSON numbers, base64, KZB1 bytes) and typed arrays. */
import { KizunaError } from './errors.js';
import { DTYPES, elementCount, fromNumbers, tensorBytes, toNumbers, viewBytes, type DType, type Tensor } from './tensor.js';
import type { JsonTensor } from './schemas.js';
import { sliceRef, type TensorRef } from './frame.js';

/** Outputs up to this many elements travel as readable numbers; bigger ones as base64 bytes. */
export const JSON_NUMBERS_MAX_ELEMENTS = 4096;

function checkedCount(name: string, shape: number[], maxElements: number): number {
  const n = elementCount(shape);
  if (n < 0) throw new KizunaError('KZ_ERR_BAD_SHAPE', `${name}: shape ${JSON.stringify(shape)} is not a list of sizes`);
  if (n > maxElements) throw new KizunaError('KZ_ERR_TOO_MANY_ELEMENTS', `${name}: ${n} elements is over the limit of ${maxElements}`);
  return n;
}

function fromBytes(name: string, dtype: DType, shape: number[], bytes: Uint8Array, maxElements: number): Tensor {
  const n = checkedCount(name, shape, maxElements);
  const expected = n * DTYPES[dtype].bytes;
  if (bytes.length !== expected) {
    throw new KizunaError('KZ_ERR_BAD_SHAPE', `${name}: ${bytes.length} bytes of data, but ${dtype}${JSON.stringify(shape)} needs ${expected}`);
  }
  // As in JSON data, a bool is 0 or 1: another byte would mean true to one runtime and be refused
  // (or kept as is) by another.
  if (dtype === 'bool' && bytes.some((b) => b > 1)) throw new KizunaError('KZ_ERR_BAD_DTYPE', `${name}: a bool value is a byte other than 0 or 1`);
  return { dtype, shape, data: viewBytes(dtype, bytes, 0, bytes.length) };
}

export function tensorFromJson(name: string, t: JsonTensor, maxElements: number): Tensor {
  if ((t.data === undefined) === (t.b64 === undefined)) {
    throw new KizunaError('KZ_ERR_BAD_REQUEST', `${name}: give exactly one of "data" (numbers) or "b64" (bytes)`);
  }
  if (t.b64 !== undefined) return fromBytes(name, t.dtype, t.shape, decodeBase64(name, t.b64), maxElements);
  const n = checkedCount(name, t.shape, maxElements);
  const data = t.data!;
  if (data.length !== n) {
    throw new KizunaError('KZ_ERR_BAD_SHAPE', `${name}: ${data.length} values, but shape ${JSON.stringify(t.shape)} holds ${n}`);
  }
  const tensor = fromNumbers(t.dtype, t.shape, data);
  if (!tensor) throw new KizunaError('KZ_ERR_BAD_DTYPE', `${name}: a value does not fit dtype ${t.dtype}`);
  return tensor;
}

export function tensorFromFrame(name: string, t: { dtype: DType; shape: number[] } & TensorRef, data: Uint8Array, maxElements: number): Tensor {
  return fromBytes(name, t.dtype, t.shape, sliceRef(data, t), maxElements);
}

/** True when every value survives a trip through JSON numbers (no NaN/Infinity, no int64 beyond 2^53). */
function jsonSafe(t: Tensor): boolean {
  if (t.data instanceof BigInt64Array) return t.data.every((v) => v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER));
  if (t.dtype === 'float32' || t.dtype === 'float64') return (t.data as Float32Array).every(Number.isFinite);
  return true;
}

/** Small tensors as readable numbers, others (and values JSON cannot hold) as base64 bytes. */
export function tensorToJson(t: Tensor): JsonTensor {
  if (t.data.length <= JSON_NUMBERS_MAX_ELEMENTS && jsonSafe(t)) return { dtype: t.dtype, shape: t.shape, data: toNumbers(t) };
  return { dtype: t.dtype, shape: t.shape, b64: Buffer.from(tensorBytes(t)).toString('base64') };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodeBase64(name: string, text: string): Buffer {
  const clean = text.replace(/\s+/g, '');
  if (clean.length % 4 === 1 || !BASE64.test(clean)) throw new KizunaError('KZ_ERR_MALFORMED', `${name}: not valid base64`);
  return Buffer.from(clean, 'base64');
}
