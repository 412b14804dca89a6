/** Tensors as they travel on the wire and into the engine: a dtype, a shape and a flat typed array. */

export const DTYPES = {
  float32: { bytes: 4, array: Float32Array },
  float64: { bytes: 8, array: Float64Array },
  int8: { bytes: 1, array: Int8Array },
  uint8: { bytes: 1, array: Uint8Array },
  int16: { bytes: 2, array: Int16Array },
  uint16: { bytes: 2, array: Uint16Array },
  int32: { bytes: 4, array: Int32Array },
  int64: { bytes: 8, array: BigInt64Array },
  bool: { bytes: 1, array: Uint8Array },
} as const;

export type DType = keyof typeof DTYPES;
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | BigInt64Array;

export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPES, value);
}

/** Number of elements a shape holds; -1 if the shape is not a list of non-negative integers. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return -1;
    n *= d;
  }
  return n;
}

/** A typed array of `dtype` that views (no copy) `byteLength` bytes of `buf` from `byteOffset`. */
export function viewBytes(dtype: DType, buf: Uint8Array, byteOffset: number, byteLength: number): TensorData {
  const { bytes, array } = DTYPES[dtype];
  const absolute = buf.byteOffset + byteOffset;
  if (absolute % bytes === 0) return new array(buf.buffer as ArrayBuffer, absolute, byteLength / bytes) as TensorData;
  // Unaligned (common inside MQTT packets): copy once into an aligned buffer.
  const copy = new Uint8Array(byteLength);
  copy.set(buf.subarray(byteOffset, byteOffset + byteLength));
  return new array(copy.buffer, 0, byteLength / bytes) as TensorData;
}

/** The bytes of a tensor's data (a view, no copy), little-endian as on every supported board. */
export function tensorBytes(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** A new tensor of `dtype` from plain numbers (JSON), or null if a value does not fit the dtype. */
export function fromNumbers(dtype: DType, shape: number[], values: readonly unknown[]): Tensor | null {
  const { array } = DTYPES[dtype];
  if (dtype === 'int64') {
    const out = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) return null;
      out[i] = BigInt(v);
    }
    return { dtype, shape, data: out };
  }
  const out = new array(values.length) as Exclude<TensorData, BigInt64Array>;
  const integer = dtype !== 'float32' && dtype !== 'float64';
  for (let i = 0; i < values.length; i++) {
    let v = values[i];
    if (dtype === 'bool' && typeof v === 'boolean') v = v ? 1 : 0;
    if (typeof v !== 'number' || !Number.isFinite(v)) return null;
    if (dtype === 'bool' && v !== 0 && v !== 1) return null;
    if (integer && !Number.isInteger(v)) return null;
    out[i] = v;
  }
  if (integer) {
    // A typed array wraps out-of-range integers silently; refuse instead.
    for (let i = 0; i < values.length; i++) if (out[i] !== values[i] && !(dtype === 'bool' && typeof values[i] === 'boolean')) return null;
  }
  return { dtype, shape, data: out };
}

/** Plain numbers for JSON (int64 becomes number; values beyond 2^53 lose precision, as JSON would). */
export function toNumbers(t: Tensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}
