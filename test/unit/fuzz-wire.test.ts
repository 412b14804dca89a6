/**
 * Property-based fuzzing (fast-check) of the wire decoders: KZB1 frames, tensors, base64,
 * requests and replies. For random bytes, random JSON and near-valid messages (a valid message
 * with a field corrupted, a frame truncated or with a wrong length), each decoder returns a
 * well-formed value or throws a KizunaError with one of its documented codes: never a
 * TypeError/RangeError, never a slow case. Encoders round-trip and the limits hold.
 * Seeds are fixed, so a failure reproduces; a `todo` property is a known bug (its minimal
 * counterexample is in the comment above it). Runs per property are in RUNS (the four fuzz-*
 * files together run about 280,000 cases that must pass, in about 12 s on two cores).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ERROR_CODES, KizunaError, type ErrorCode } from '../../mesh/errors.js';
import { readFrame, writeFrame, type TensorRef } from '../../mesh/frame.js';
import { decodeBase64, tensorFromFrame, tensorFromJson, tensorToJson } from '../../mesh/codec.js';
import {
  decodeReply, decodeRequest, decodeRequestObject, encodeError, encodeImageRequest, encodeResult, encodeTensorRequest,
  type DecodedRequest, type InferenceResult, type Reply, type WireLimits,
} from '../../mesh/messages.js';
import { DTYPES, elementCount, tensorBytes, type DType, type Tensor, type TensorData } from '../../mesh/tensor.js';
import type { JsonTensor } from '../../mesh/schemas.js';

// ---------------------------------------------------------------- outcomes

const ALL_CODES = Object.keys(ERROR_CODES) as ErrorCode[];
/** What decodeRequest may throw (PROTOCOL.md, "Requests" and "Error codes"). */
const REQUEST_CODES: ErrorCode[] = ['KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_BAD_DTYPE', 'KZ_ERR_BAD_SHAPE', 'KZ_ERR_TOO_LARGE', 'KZ_ERR_TOO_MANY_ELEMENTS'];
const TENSOR_CODES: ErrorCode[] = ['KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_BAD_DTYPE', 'KZ_ERR_BAD_SHAPE', 'KZ_ERR_TOO_MANY_ELEMENTS'];
const SLOW_MS = 1000;

type Outcome<T> = { ok: true; value: T } | { ok: false; code: ErrorCode };

/** f's value, or the code of the KizunaError it threw; anything else (or a slow call) fails the property. */
function outcome<T>(f: () => T, allowed: readonly ErrorCode[] = ALL_CODES): Outcome<T> {
  const started = performance.now();
  let result: Outcome<T>;
  try {
    result = { ok: true, value: f() };
  } catch (err) {
    if (!(err instanceof KizunaError)) throw new Error(`threw ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    if (!allowed.includes(err.code)) throw new Error(`threw ${err.code}, not one of ${allowed.join(' ')}: ${err.message}`, { cause: err });
    result = { ok: false, code: err.code };
  }
  const ms = performance.now() - started;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return result;
}

const check = <Ts>(property: fc.IRawProperty<Ts>, seed: number, numRuns: number) => fc.assert(property, { seed, numRuns, includeErrorInReport: true });

/** The bytes at an odd byteOffset of a bigger buffer, as inside an MQTT packet. */
function shifted(bytes: Uint8Array, shift: number): Uint8Array {
  const backing = new Uint8Array(bytes.length + shift);
  backing.set(bytes, shift);
  return backing.subarray(shift);
}

// ---------------------------------------------------------------- well-formed values

function assertTensor(t: Tensor): void {
  assert.ok(Object.hasOwn(DTYPES, t.dtype), `dtype ${t.dtype}`);
  assert.ok(Array.isArray(t.shape) && t.shape.length <= 8, 'shape is a list of at most 8 sizes');
  assert.ok(t.shape.every((d) => Number.isSafeInteger(d) && d >= 0), `shape ${JSON.stringify(t.shape)}`);
  assert.ok(t.data instanceof DTYPES[t.dtype].array, `data of ${t.dtype} is a ${t.data?.constructor?.name}`);
  assert.ok(t.data.length === elementCount(t.shape), `${t.data.length} values for shape ${JSON.stringify(t.shape)}`); // -0 sizes are 0
}

function assertDecoded(d: DecodedRequest, limits: WireLimits): void {
  const o = d.options;
  assert.equal(typeof o.rawOutputs, 'boolean');
  assert.ok(o.reply === 'json' || o.reply === 'binary');
  if (o.topK !== undefined) assert.ok(Number.isInteger(o.topK) && o.topK >= 1 && o.topK <= 1000);
  if (o.version !== undefined) assert.ok(typeof o.version === 'string' && o.version.length <= 32);
  if (d.body.kind === 'tensors') {
    let total = 0;
    for (const t of Object.values(d.body.inputs)) {
      assertTensor(t);
      total += t.data.length;
    }
    assert.ok(total <= limits.maxElements, `${total} elements over ${limits.maxElements}`);
  } else {
    assert.equal(d.body.kind, 'images');
    assert.ok(d.body.images.length >= 1);
    for (const i of d.body.images) assert.ok(i instanceof Uint8Array);
  }
}

function assertReply(r: Reply): void {
  assert.equal(typeof r.id, 'string');
  if (!r.ok) {
    assert.ok(Object.hasOwn(ERROR_CODES, r.error.code));
    assert.equal(typeof r.error.message, 'string');
    return;
  }
  for (const t of Object.values(r.outputs)) assertTensor(t);
}

const bytesOf = (t: Tensor) => Buffer.from(tensorBytes(t));
/** Same tensor; in JSON numbers -0 comes back as 0 (JSON.stringify(-0) is "0"), so values are compared there. */
function sameTensor(got: Tensor, want: Tensor, viaJsonNumbers: boolean): void {
  assert.equal(got.dtype, want.dtype);
  assert.deepEqual(got.shape, want.shape);
  if (bytesOf(got).equals(bytesOf(want))) return;
  assert.ok(viaJsonNumbers, 'bytes differ');
  assert.deepEqual(Array.from(got.data as ArrayLike<number>).map((v) => (v === 0 ? 0 : v)), Array.from(want.data as ArrayLike<number>).map((v) => (v === 0 ? 0 : v)));
}

// ---------------------------------------------------------------- generators

const DTYPE_NAMES = Object.keys(DTYPES) as DType[];
const dtypeArb = fc.constantFrom(...DTYPE_NAMES);

/** A valid tensor: every bit pattern (NaN payloads, -0, the int64 extremes), bool as 0/1. */
const tensorArb: fc.Arbitrary<Tensor> = fc
  .tuple(dtypeArb, fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }))
  .chain(([dtype, shape]) => {
    const n = elementCount(shape);
    const size = n * DTYPES[dtype].bytes;
    return fc.uint8Array({ minLength: size, maxLength: size }).map((raw) => {
      const buf = new Uint8Array(size);
      buf.set(dtype === 'bool' ? raw.map((b) => b & 1) : raw);
      return { dtype, shape, data: new DTYPES[dtype].array(buf.buffer, 0, n) as TensorData };
    });
  });

/** Input names, awkward ones included ('__proto__' and line terminators were bugs once: see below). */
const nameArb = fc.oneof(
  fc.constantFrom('x', 'input', 'toString', 'constructor', 'hasOwnProperty', 'valueOf', '__proto__', 'caf\u00e9', '', ' ', 'a/b', '~1', '\t', 'a\nb', '\r', '\u2028'),
  fc.string({ maxLength: 10 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
);

const inputsArb = fc.dictionary(nameArb, tensorArb, { maxKeys: 3 });

const encodeOptionsArb = fc.record(
  { version: fc.string({ maxLength: 32 }), topK: fc.integer({ min: 1, max: 1000 }), rawOutputs: fc.boolean(), reply: fc.constantFrom('json' as const, 'binary' as const) },
  { requiredKeys: [] },
);
const wireOptionsArb = fc.record(
  { version: fc.string({ maxLength: 32 }), top_k: fc.integer({ min: 1, max: 1000 }), raw_outputs: fc.boolean(), reply: fc.constantFrom('json', 'binary') },
  { requiredKeys: [] },
);

const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');

/** A valid JSON request object (tensors as numbers or base64, or images in base64), with options. */
const jsonRequestArb: fc.Arbitrary<Record<string, unknown>> = fc
  .tuple(
    fc.oneof(
      fc.dictionary(nameArb, fc.tuple(tensorArb, fc.boolean()), { maxKeys: 3 }).map((inputs) => ({
        inputs: Object.fromEntries(Object.entries(inputs).map(([name, [t, asB64]]) => [name, asB64 ? { dtype: t.dtype, shape: t.shape, b64: b64(tensorBytes(t)) } : tensorToJson(t)])),
      })),
      fc.uint8Array({ maxLength: 30 }).map((i) => ({ image: b64(i) })),
      fc.array(fc.uint8Array({ maxLength: 12 }), { minLength: 1, maxLength: 3 }).map((is) => ({ images: is.map(b64) })),
    ),
    wireOptionsArb,
  )
  .map(([body, options]) => ({ ...body, ...options }));

/** A valid KZB1 frame as its parts: header object (tensor references) and data section. */
const framePartsArb = fc.tuple(inputsArb, wireOptionsArb, fc.uint8Array({ maxLength: 8 })).map(([inputs, options, slack]) => {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const refs: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const bytes = tensorBytes(t);
    Object.defineProperty(refs, name, { value: { dtype: t.dtype, shape: t.shape, offset, length: bytes.length }, enumerable: true, writable: true, configurable: true });
    chunks.push(bytes);
    offset += bytes.length;
  }
  chunks.push(slack); // bytes no tensor references are ignored
  return { header: { inputs: refs, ...options } as Record<string, unknown>, data: Buffer.concat(chunks) };
});

/** A payload that fast-check shows as text in a counterexample, deep nesting abridged: ⟨[×6000⟩ */
const readable = (b: Buffer): Buffer => Object.assign(b, {
  [fc.toStringMethod]: () => `Buffer(${JSON.stringify(b.toString('latin1').replace(/(\{"a":|\[|\]|\})\1{9,}/g, (run, unit: string) => `⟨${unit}×${run.length / unit.length}⟩`))})`,
});

function frameOf(headerText: string, data: Uint8Array, headerLength?: number): Buffer {
  const header = Buffer.from(headerText);
  const prefix = Buffer.alloc(8);
  prefix.write('KZB1', 0, 'latin1');
  prefix.writeUInt32LE(headerLength ?? header.length, 4);
  return Buffer.concat([prefix, header, data]);
}

// Deep nesting goes in as a marker string, replaced in the JSON text (JSON.stringify itself
// overflows the stack on such values).
const DEEP_ARRAY = '@@deep-array@@';
const DEEP_OBJECT = '@@deep-object@@';
const DEPTH = 6000;
const DEEP_TEXT: Record<string, string> = {
  [DEEP_ARRAY]: '['.repeat(DEPTH) + ']'.repeat(DEPTH),
  [DEEP_OBJECT]: '{"a":'.repeat(DEPTH) + '1' + '}'.repeat(DEPTH),
};
function toText(value: unknown): string {
  let text = JSON.stringify(value) ?? 'null';
  for (const [marker, deep] of Object.entries(DEEP_TEXT)) text = text.replaceAll(JSON.stringify(marker), deep);
  return text;
}

/** Values that break decoders: wrong types, negative/fractional/huge sizes, odd strings, deep nesting. */
const SPECIAL: unknown[] = [
  -1, -0, 0, 0.5, 1.5, 1e300, -1e300, 1e-300, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 256, 65536, -129,
  '', ' ', '=', 'A', 'AA=', 'A===', '****', 'AAAA\nAAAA', 'float16', 'int64', 'bool', 'uint8', 'json', 'binary',
  '__proto__', 'toString', 'caf\u00e9', '\u0000', '\ud800', '+/==', 'KZB1', 'a'.repeat(300),
  true, false, null, [], {}, [-1], [1.5], [1e300], [-0], [2 ** 26, 2 ** 26, 2 ** 26], [0, 1e300], [1e6, 1e6], [1, 1, 1, 1, 1, 1, 1, 1, 1],
  [[1]], [null], [true, false], { toString: 1 }, { toString: {}, valueOf: {} }, JSON.parse('{"__proto__":{"dtype":"uint8"}}'),
  DEEP_ARRAY, DEEP_OBJECT,
];
const clone = <T>(v: T): T => structuredClone(v);
const nastyArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...SPECIAL).map(clone) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() },
);
const keyArb = fc.oneof(
  fc.constantFrom('inputs', 'image', 'images', 'dtype', 'shape', 'data', 'b64', 'offset', 'length', 'version', 'top_k', 'raw_outputs', 'reply',
    'v', 'id', 'ok', 'error', 'code', 'message', 'outputs', 'items', 'from', '__proto__', 'toString', 'constructor', '\n', 'a\u2029'),
  fc.string({ maxLength: 6 }),
);

type Path = (string | number)[];
interface Mutation { at: number; op: 'set' | 'delete' | 'add'; key: string; value: unknown }
const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom<Mutation['op']>('set', 'set', 'set', 'delete', 'add'),
  key: keyArb,
  value: nastyArb,
});
const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 3 });

function nodesOf(v: unknown, path: Path = [], out: Path[] = []): Path[] {
  out.push(path);
  if (Array.isArray(v)) v.forEach((x, i) => nodesOf(x, [...path, i], out));
  else if (typeof v === 'object' && v !== null) for (const k of Object.keys(v)) nodesOf((v as Record<string, unknown>)[k], [...path, k], out);
  return out;
}
const define = (o: object, k: string | number, value: unknown) => Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });

/** The value with one node replaced, deleted, or given one more key/element (own properties only, '__proto__' included). */
function mutate(root: unknown, m: Mutation): unknown {
  const copy = clone(root);
  const nodes = nodesOf(copy);
  const path = nodes[m.at % nodes.length]!;
  if (path.length === 0) {
    if (m.op !== 'add' || typeof copy !== 'object' || copy === null) return m.value;
    if (Array.isArray(copy)) copy.push(m.value);
    else define(copy, m.key, m.value);
    return copy;
  }
  let parent = copy as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  const node = parent[last];
  if (m.op === 'delete') {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else if (m.op === 'add' && Array.isArray(node)) node.push(m.value);
  else if (m.op === 'add' && typeof node === 'object' && node !== null) define(node, m.key, m.value);
  else define(parent, last, m.value);
  return copy;
}
const mutateAll = (root: unknown, ms: Mutation[]) => ms.reduce(mutate, root);

/** Byte-level damage: truncation, a changed byte, inserted bytes, or a new KZB1 header length. */
type ByteMutation = { kind: 'truncate' | 'flip' | 'insert' | 'length'; at: number; byte: number; bytes: Uint8Array; length: number };
const byteMutationArb: fc.Arbitrary<ByteMutation> = fc.record({
  kind: fc.constantFrom<ByteMutation['kind']>('truncate', 'flip', 'insert', 'length'),
  at: fc.nat(),
  byte: fc.integer({ min: 0, max: 255 }),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 6 }),
  length: fc.oneof(fc.nat(64), fc.constantFrom(0, 7, 8, 2 ** 31, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 })),
});
function damage(payload: Buffer, m: ByteMutation): Buffer {
  const at = m.at % (payload.length + 1);
  const out = Buffer.from(payload);
  switch (m.kind) {
    case 'truncate':
      return out.subarray(0, at);
    case 'flip':
      if (at < out.length) out[at] = m.byte;
      return out;
    case 'insert':
      return Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    case 'length':
      if (out.length >= 8) out.writeUInt32LE(m.length, 4);
      return out;
  }
}

const IMAGE_MAGIC = ['\xff\xd8\xff', '\x89PNG\r\n\x1a\n', 'RIFF\0\0\0\0WEBP', 'GIF89a', 'II*\0', 'MM\0*'].map((p) => Buffer.from(p, 'latin1'));
const PREFIXES = [...['KZB1', '{', ' \r\n\t{', '[', '"', '\ufeff{'].map((p) => Buffer.from(p)), ...IMAGE_MAGIC];
/** Random bytes, often after a magic number or a '{' so the decoder goes past its first test. */
const bytesArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
  fc.tuple(fc.constantFrom(...PREFIXES), fc.uint8Array({ maxLength: 200 })).map(([p, b]) => Buffer.concat([p, b])),
  fc.tuple(fc.nat({ max: 2 ** 32 - 1 }), fc.uint8Array({ maxLength: 64 })).map(([len, b]) => {
    const head = Buffer.alloc(8);
    head.write('KZB1', 0, 'latin1');
    head.writeUInt32LE(len % 3 === 0 ? len : len % 80, 4);
    return Buffer.concat([head, b]);
  }),
);

const limitsArb: fc.Arbitrary<WireLimits> = fc.record({
  maxPayloadBytes: fc.oneof(fc.constant(1 << 20), fc.nat(300)),
  maxElements: fc.oneof(fc.constant(1 << 20), fc.nat(200)),
});
const BIG: WireLimits = { maxPayloadBytes: 1 << 22, maxElements: 1 << 22 };

const RUNS = {
  frameBytes: 10_000, frameRoundTrip: 3_000,
  tensorFromJson: 8_000, tensorFromFrame: 5_000, base64: 5_000, base64RoundTrip: 3_000,
  requestBytes: 12_000, requestJson: 5_000, requestNearJson: 12_000, requestObject: 5_000, requestNearFrame: 10_000, requestDamaged: 6_000,
  requestRoundTrip: 3_000, requestImages: 2_000, requestLimits: 3_000, requestTooLarge: 3_000,
  replyBytes: 6_000, replyRoundTrip: 3_000, replyErrorRoundTrip: 2_000, replyErrors: 3_000, replyNear: 3_000,
};

// ---------------------------------------------------------------- mesh/frame.ts

test('readFrame: any bytes give a header and a data section inside the payload, or KZ_ERR_MALFORMED', () => {
  check(fc.property(bytesArb, fc.constantFrom(0, 3), (payload, shift) => {
    const r = outcome(() => readFrame(shifted(payload, shift)), ['KZ_ERR_MALFORMED']);
    if (r.ok) {
      const headerLength = payload.readUInt32LE(4);
      assert.equal(r.value.data.length, payload.length - 8 - headerLength);
    }
  }), 0xf4a1, RUNS.frameBytes);
});

test('writeFrame -> readFrame gives back the header and every placed byte', () => {
  check(fc.property(fc.jsonValue({ maxDepth: 3 }), fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 4 }), (extra, blobs) => {
    let refs: TensorRef[] = [];
    const frame = writeFrame((place) => {
      refs = blobs.map(place);
      return { extra, refs };
    });
    assert.equal(frame.length % 8, 0);
    const { header, data } = readFrame(frame);
    assert.deepEqual(header, JSON.parse(JSON.stringify({ extra, refs })));
    refs.forEach((ref, i) => assert.deepEqual(Buffer.from(data.subarray(ref.offset, ref.offset + ref.length)), Buffer.from(blobs[i]!)));
    for (let cut = 0; cut < 8 + frame.readUInt32LE(4); cut += 5) assert.throws(() => readFrame(frame.subarray(0, cut)), { code: 'KZ_ERR_MALFORMED' });
  }), 0xf4a2, RUNS.frameRoundTrip);
});

// ---------------------------------------------------------------- mesh/codec.ts

/** Tensors as the JSON schema lets them through: valid dtype, shape of integers >= 0 (huge ones too), data or b64 or both or neither. */
const schemaTensorArb: fc.Arbitrary<JsonTensor> = fc.record(
  {
    dtype: dtypeArb,
    shape: fc.array(fc.oneof(fc.nat(6), fc.constantFrom(0, 2 ** 26, 2 ** 31, 2 ** 53, 2 ** 60, 1e300)), { maxLength: 8 }),
    data: fc.array(fc.oneof(fc.double(), fc.integer(), fc.boolean(), fc.constantFrom(-0, 255, 256, -129, 2 ** 53, 2 ** 63, NaN, Infinity)), { maxLength: 40 }),
    b64: fc.oneof(fc.uint8Array({ maxLength: 40 }).map(b64), fc.string({ maxLength: 12 })),
  },
  { requiredKeys: ['dtype', 'shape'] },
);

test('tensorFromJson: any schema-valid tensor gives a tensor of its dtype and shape, or a tensor error code', () => {
  check(fc.property(schemaTensorArb, fc.oneof(fc.nat(100), fc.constant(Number.MAX_SAFE_INTEGER)), (t, max) => {
    const r = outcome(() => tensorFromJson('x', t, max), TENSOR_CODES);
    if (!r.ok) return;
    assertTensor(r.value);
    assert.equal(r.value.dtype, t.dtype);
    assert.deepEqual(r.value.shape, t.shape);
    assert.ok(r.value.data.length <= max);
  }), 0xc0d1, RUNS.tensorFromJson);
});

test('tensorFromFrame: any reference into any data section gives a tensor, or a tensor error code', () => {
  const refArb = fc.record({
    dtype: dtypeArb,
    shape: fc.array(fc.oneof(fc.nat(6), fc.constantFrom(2 ** 31, 2 ** 53, 1e300)), { maxLength: 8 }),
    offset: fc.oneof(fc.nat(80), fc.constantFrom(2 ** 32, 2 ** 53, 1e300)),
    length: fc.oneof(fc.nat(80), fc.constantFrom(2 ** 32, 2 ** 53, 1e300)),
  });
  check(fc.property(refArb, fc.uint8Array({ maxLength: 100 }), fc.nat(7), fc.nat(300), (ref, bytes, shift, max) => {
    const data = shifted(bytes, shift);
    const r = outcome(() => tensorFromFrame('x', ref, data, max), TENSOR_CODES);
    if (!r.ok) return;
    assertTensor(r.value);
    assert.deepEqual(Buffer.from(tensorBytes(r.value)), Buffer.from(data.subarray(ref.offset, ref.offset + ref.length)));
  }), 0xc0d2, RUNS.tensorFromFrame);
});

test('decodeBase64: any string gives bytes or KZ_ERR_MALFORMED', () => {
  const textArb = fc.oneof(
    fc.string({ maxLength: 30 }),
    fc.string({ unit: fc.constantFrom(...'AZaz09+/= \n\r\t-_.'.split('')), maxLength: 30 }),
    fc.string({ unit: 'binary', maxLength: 20 }),
  );
  check(fc.property(textArb, (text) => {
    const r = outcome(() => decodeBase64('x', text), ['KZ_ERR_MALFORMED']);
    if (r.ok) assert.ok(Buffer.isBuffer(r.value) && r.value.length <= (text.length * 3) / 4);
  }), 0xb641, RUNS.base64);
});

test('decodeBase64 reads back what Buffer encodes, with or without padding and line breaks', () => {
  check(fc.property(fc.uint8Array({ maxLength: 60 }), fc.boolean(), fc.nat(76), (bytes, unpadded, every) => {
    let text = Buffer.from(bytes).toString('base64');
    if (unpadded) text = text.replace(/=+$/, '');
    if (every > 0) text = text.replace(new RegExp(`(.{${every}})`, 'g'), '$1\r\n');
    assert.deepEqual(decodeBase64('x', text), Buffer.from(bytes));
  }), 0xb642, RUNS.base64RoundTrip);
});

// ---------------------------------------------------------------- mesh/messages.ts: requests

test('decodeRequest: random bytes give a well-formed request or a request error code', () => {
  check(fc.property(bytesArb, limitsArb, (payload, limits) => {
    const r = outcome(() => decodeRequest(payload, limits), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, limits);
  }), 0x5e01, RUNS.requestBytes);
});

test('decodeRequest: any JSON value gives a well-formed request or a request error code', () => {
  const jsonArb = fc.oneof(fc.jsonValue(), fc.object({ maxDepth: 3 }), fc.dictionary(keyArb, nastyArb, { maxKeys: 4 }));
  check(fc.property(jsonArb, (value) => {
    const r = outcome(() => decodeRequest(Buffer.from(toText(value)), BIG), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, BIG);
  }), 0x5e02, RUNS.requestJson);
});

test('decodeRequest: a valid JSON request with fields corrupted gives a well-formed request or a request error code', () => {
  check(fc.property(jsonRequestArb, mutationsArb, limitsArb, (req, ms, limits) => {
    const payload = Buffer.from(toText(mutateAll(req, ms)));
    const r = outcome(() => decodeRequest(payload, { ...limits, maxPayloadBytes: BIG.maxPayloadBytes }), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, limits);
  }), 0x5e03, RUNS.requestNearJson);
});

test('decodeRequestObject: corrupted request objects (NaN, Infinity, undefined, any value) give a request or a code', () => {
  const oddArb = fc.oneof(
    nastyArb.filter((v) => v !== DEEP_ARRAY && v !== DEEP_OBJECT),
    fc.constantFrom(NaN, Infinity, -Infinity, undefined, [NaN], [Infinity], 10n),
    fc.anything({ maxDepth: 2 }),
  );
  const oddMutationsArb = fc.array(fc.record({ at: fc.nat(), op: fc.constantFrom<Mutation['op']>('set', 'delete', 'add'), key: keyArb, value: oddArb }), { minLength: 1, maxLength: 2 });
  check(fc.property(jsonRequestArb, oddMutationsArb, limitsArb, (req, ms, limits) => {
    const r = outcome(() => decodeRequestObject(mutateAll(req, ms), limits), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, limits);
  }), 0x5e04, RUNS.requestObject);
});

test('decodeRequest: a valid KZB1 frame with its header corrupted or its bytes damaged gives a request or a code', () => {
  check(fc.property(
    framePartsArb, fc.array(mutationArb, { maxLength: 2 }), fc.option(byteMutationArb), limitsArb,
    ({ header, data }, ms, bm, limits) => {
      let payload = frameOf(toText(mutateAll(header, ms)), data);
      if (bm) payload = damage(payload, bm);
      const r = outcome(() => decodeRequest(payload, { ...limits, maxPayloadBytes: BIG.maxPayloadBytes }), REQUEST_CODES);
      if (r.ok) assertDecoded(r.value, limits);
    },
  ), 0x5e05, RUNS.requestNearFrame);
});

test('decodeRequest: valid payloads truncated, with a byte changed or bytes inserted give a request or a code', () => {
  const payloadArb = fc.oneof(
    jsonRequestArb.map((r) => Buffer.from(JSON.stringify(r))),
    fc.tuple(inputsArb, encodeOptionsArb).map(([inputs, o]) => encodeTensorRequest(inputs, o, 'binary')),
  );
  check(fc.property(payloadArb, fc.array(byteMutationArb, { minLength: 1, maxLength: 3 }), (payload, bms) => {
    const damaged = bms.reduce(damage, payload);
    const r = outcome(() => decodeRequest(damaged, BIG), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, BIG);
  }), 0x5e06, RUNS.requestDamaged);
});

test('encodeTensorRequest -> decodeRequest gives back every tensor and option, as a frame and as JSON', () => {
  check(fc.property(inputsArb, encodeOptionsArb, fc.constantFrom('json' as const, 'binary' as const), fc.nat(7), (inputs, options, as, shift) => {
    const encoded = encodeTensorRequest(inputs, options, as);
    const payload = shifted(encoded, shift);
    const total = Object.values(inputs).reduce((n, t) => n + t.data.length, 0);
    const d = decodeRequest(payload, { maxPayloadBytes: payload.length, maxElements: total });
    assertDecoded(d, { maxPayloadBytes: payload.length, maxElements: total });
    assert.equal(d.body.kind, 'tensors');
    const got = d.body.kind === 'tensors' ? d.body.inputs : {};
    assert.deepEqual(Object.keys(got).sort(), Object.keys(inputs).sort());
    for (const [name, t] of Object.entries(inputs)) sameTensor(got[name]!, t, as === 'json');
    assert.deepEqual(d.options, {
      rawOutputs: options.rawOutputs ?? true,
      reply: options.reply ?? as,
      ...(options.version !== undefined ? { version: options.version } : {}),
      ...(options.topK !== undefined ? { topK: options.topK } : {}),
    });
  }), 0x5e07, RUNS.requestRoundTrip);
});

test('encodeImageRequest -> decodeRequest gives back the images; raw image bytes are taken as they are', () => {
  const magicArb = fc.constantFrom(...IMAGE_MAGIC);
  check(fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { minLength: 1, maxLength: 4 }), encodeOptionsArb, magicArb, (images, options, magic) => {
    const d = decodeRequest(encodeImageRequest(images, options), BIG);
    assert.equal(d.body.kind, 'images');
    assert.deepEqual(d.body.kind === 'images' ? d.body.images.map((i) => Buffer.from(i)) : [], images.map((i) => Buffer.from(i)));
    const raw = Buffer.concat([magic, images[0]!]);
    const r = decodeRequest(raw, BIG);
    assert.deepEqual(r, { body: { kind: 'images', images: [raw] }, options: { rawOutputs: true, reply: 'json' } });
  }), 0x5e08, RUNS.requestImages);
});

test('decodeRequest: one element over maxElements is KZ_ERR_TOO_MANY_ELEMENTS, whatever the form', () => {
  const bigArb = fc.tuple(inputsArb, fc.tuple(dtypeArb, fc.integer({ min: 1, max: 300 })), encodeOptionsArb, fc.constantFrom('json' as const, 'binary' as const));
  check(fc.property(bigArb, ([inputs, [dtype, n], options, as]) => {
    const extra: Tensor = { dtype, shape: [n], data: new DTYPES[dtype].array(n) as TensorData };
    const all = { ...inputs, 'extra\u2713': extra };
    const total = Object.values(all).reduce((k, t) => k + t.data.length, 0);
    const payload = encodeTensorRequest(all, options, as);
    assert.throws(() => decodeRequest(payload, { maxPayloadBytes: BIG.maxPayloadBytes, maxElements: total - 1 }), { code: 'KZ_ERR_TOO_MANY_ELEMENTS' });
    assert.doesNotThrow(() => decodeRequest(payload, { maxPayloadBytes: BIG.maxPayloadBytes, maxElements: total }));
  }), 0x5e09, RUNS.requestLimits);
});

test('decodeRequest: any payload one byte over maxPayloadBytes is KZ_ERR_TOO_LARGE, before anything else', () => {
  check(fc.property(bytesArb.filter((b) => b.length > 0), (payload) => {
    assert.throws(() => decodeRequest(payload, { maxPayloadBytes: payload.length - 1, maxElements: 1 << 20 }), { code: 'KZ_ERR_TOO_LARGE' });
  }), 0x5e0a, RUNS.requestTooLarge);
});

// Was a bug (fixed: decodeInputs, mesh/messages.ts, builds the map with Object.fromEntries and
// keeps the name): an input named "__proto__" vanished. `inputs[name] = ...` set the prototype of
// the result instead of an own key, so the request decoded with no inputs at all (the agent then
// answered as if the input were missing). Minimal counterexample:
//   {"inputs":{"__proto__":{"dtype":"float32","shape":[1],"data":[1]}}}  -> body.inputs had no keys.
test('decodeRequest keeps every input name, "__proto__" included', () => {
  check(fc.property(fc.constantFrom('json' as const, 'binary' as const), tensorArb, (as, t) => {
    const inputs = Object.fromEntries([['__proto__', t]]) as Record<string, Tensor>;
    const d = decodeRequest(encodeTensorRequest(inputs, {}, as), BIG);
    assert.deepEqual(d.body.kind === 'tensors' ? Object.keys(d.body.inputs) : [], ['__proto__']);
  }), 0x5e0b, 50);
});

// Was a bug (fixed: the request schemas no longer type `inputs` as a Record of tensors; decodeInputs
// checks each name's length and each tensor with the compiled tensor schema): input names were not
// checked, and a name with a line terminator skipped the check of its tensor. JsonRequestSchema and
// FrameRequestSchema used Type.Record(Type.String({ maxLength: 256 }), ...), which TypeBox 0.34 compiles to
// patternProperties {"^(.*)$": ...}: the key's maxLength is dropped, and as '.' does not match
// \n, \r, \u2028 or \u2029 such a key matches no pattern, so its value is never validated. The
// unchecked value reached tensorFromJson/tensorFromFrame. Minimal counterexamples (then):
//   {"inputs":{"\n":{"dtype":-1,"shape":[],"data":[0]}}}   -> TypeError (DTYPES[dtype] undefined) instead of KZ_ERR_BAD_DTYPE
//   {"inputs":{"\n":null}}                                -> TypeError (reads null.data)
//   KZB1 header {"inputs":{"\n":{"dtype":"x","shape":[],"offset":0,"length":0}}} -> TypeError (reads .bytes of undefined)
//   {"inputs":{"\n":{"dtype":"uint8","shape":[1,1,1,1,1,1,1,1,1],"data":[1]}}}  -> accepted with 9 dimensions (limit 8)
// The worker turned the TypeError into KZ_ERR_INTERNAL.
const lineNameArb = fc.tuple(fc.string({ maxLength: 3 }), fc.constantFrom('\n', '\r', '\u2028', '\u2029'), fc.string({ maxLength: 3 })).map((p) => p.join(''));
test('decodeRequest checks the tensor of an input whose name has a line terminator', () => {
  check(fc.property(lineNameArb, nastyArb, fc.constantFrom('json', 'frame'), (name, tensor, form) => {
    const header = { inputs: Object.fromEntries([[name, tensor]]) };
    const payload = form === 'json' ? Buffer.from(toText(header)) : frameOf(toText(header), new Uint8Array(16));
    const r = outcome(() => decodeRequest(payload, BIG), REQUEST_CODES);
    if (r.ok) assertDecoded(r.value, BIG);
  }), 0x5e0c, 2_000);
});

// Same cause: "input names up to 256 characters" (PROTOCOL.md, Limits) was not enforced.
//   {"inputs":{"xxx...(257 x)":{"dtype":"uint8","shape":[1],"data":[1]}}} -> accepted
test('decodeRequest refuses an input name over 256 characters with KZ_ERR_BAD_REQUEST', () => {
  check(fc.property(fc.integer({ min: 257, max: 2000 }), tensorArb, fc.constantFrom('json' as const, 'binary' as const), (n, t, as) => {
    const payload = encodeTensorRequest(Object.fromEntries([['x'.repeat(n), t]]), {}, as);
    assert.throws(() => decodeRequest(payload, BIG), { code: 'KZ_ERR_BAD_REQUEST' });
  }), 0x5e0d, 200);
});

// ---------------------------------------------------------------- mesh/messages.ts: replies

const timingsArb = fc.record({ queue_ms: fc.double({ noNaN: true, noDefaultInfinity: true }), pre_ms: fc.nat(), infer_ms: fc.nat(), post_ms: fc.nat(), total_ms: fc.nat() });
const resultArb: fc.Arbitrary<InferenceResult> = fc.record(
  {
    id: fc.string({ maxLength: 10 }),
    model: fc.string({ maxLength: 10 }),
    version: fc.string({ maxLength: 8 }),
    agent: fc.string({ maxLength: 10 }),
    outputs: inputsArb,
    answers: fc.array(fc.record({ index: fc.nat(), label: fc.string({ maxLength: 5 }), score: fc.double({ min: 0, max: 1, noNaN: true }) }), { minLength: 1, maxLength: 3 }),
    timings: timingsArb,
  },
  { requiredKeys: ['id', 'model', 'version', 'agent', 'outputs', 'timings'] },
);

test('decodeReply: random bytes give a well-formed reply or KZ_ERR_MALFORMED', () => {
  check(fc.property(bytesArb, (payload) => {
    const r = outcome(() => decodeReply(payload), ['KZ_ERR_MALFORMED']);
    if (r.ok) assertReply(r.value);
  }), 0x7e01, RUNS.replyBytes);
});

test('encodeResult -> decodeReply gives back the result, as JSON and as a frame', () => {
  check(fc.property(resultArb, fc.constantFrom('json' as const, 'binary' as const), (result, as) => {
    const reply = decodeReply(encodeResult(result, as));
    assertReply(reply);
    assert.equal(reply.ok, true);
    if (!reply.ok) return;
    for (const k of ['id', 'model', 'version', 'agent', 'timings', 'answers'] as const) assert.deepEqual(reply[k], JSON.parse(JSON.stringify(result[k] ?? null)) ?? undefined, k);
    assert.deepEqual(Object.keys(reply.outputs).sort(), Object.keys(result.outputs ?? {}).sort());
    for (const [name, t] of Object.entries(result.outputs ?? {})) sameTensor(reply.outputs[name]!, t, as === 'json');
  }), 0x7e02, RUNS.replyRoundTrip);
});

test('encodeError -> decodeReply gives back the code, message, agent and model', () => {
  const codeArb = fc.constantFrom(...ALL_CODES);
  check(fc.property(fc.string(), fc.string(), codeArb, fc.string({ unit: 'binary' }), fc.option(fc.string({ minLength: 1 }), { nil: undefined }), (id, agent, code, message, model) => {
    const reply = decodeReply(encodeError(id, agent, new KizunaError(code, message), model));
    assert.deepEqual(reply, { v: 1, id, ok: false, agent, ...(model ? { model } : {}), error: { code, message: JSON.parse(JSON.stringify(message)) } });
  }), 0x7e03, RUNS.replyErrorRoundTrip);
});

test('decodeReply: an error reply with any "error" value gives a known code (unknown ones become KZ_ERR_INTERNAL)', () => {
  const errorArb = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.record({ code: fc.oneof(fc.constantFrom(...ALL_CODES), fc.jsonValue({ maxDepth: 1 })), message: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) }, { requiredKeys: [] }),
  );
  check(fc.property(fc.string(), errorArb, fc.dictionary(keyArb, fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }), (id, error, extra) => {
    const r = outcome(() => decodeReply(Buffer.from(JSON.stringify({ ...extra, id, ok: false, error }))), ['KZ_ERR_MALFORMED']);
    assert.ok(r.ok);
    assertReply(r.value);
  }), 0x7e04, RUNS.replyErrors);
});

// Were bugs (fixed: each output is checked with the compiled tensor schema, decoding failures are
// KZ_ERR_MALFORMED, error.message is used only when it is a string): decodeReply trusted the shape
// of a reply it did not check. Its doc says it throws KZ_ERR_MALFORMED for anything else, but it
// did this (minimal counterexamples):
//   {"id":"","ok":true,"outputs":{"x":null}}                   -> TypeError (tensorFromJson reads t.data)
//   {"id":"","ok":true,"outputs":{"x":{"data":[]}}}            -> TypeError (shape is not iterable)
//   {"id":"","ok":true,"outputs":{"x":{"dtype":"f","shape":[],"data":[0]}}} -> TypeError (DTYPES[dtype] undefined)
//   KZB1 frame with header {"id":"","ok":true,"outputs":{"x":null}} -> TypeError (tensorFromFrame reads t.dtype)
//   {"id":"","ok":false,"error":{"message":{"toString":1}}}    -> TypeError (String() of the message)
//   {"id":"","ok":false,"error":{"message":[[[...6000 deep...]]]}} -> RangeError (String() recursion)
//   {"id":"","ok":true,"outputs":"a"}                          -> KZ_ERR_BAD_REQUEST, and schema-breaking
//     tensors give KZ_ERR_BAD_SHAPE/BAD_DTYPE: an app would read that as a fault of its own request.
// The Node client caught these (KizunaClient.onReply) but rejected with a TypeError instead of a coded error.
/** A valid reply (result or error, JSON or KZB1) with 1-3 fields corrupted. */
const nearReplyArb = fc
  .tuple(fc.oneof(resultArb.map((r) => ({ r, as: 'json' as const })), resultArb.map((r) => ({ r, as: 'binary' as const })), fc.string().map((id) => ({ r: id, as: 'error' as const }))), mutationsArb)
  .map(([{ r, as }, ms]) => readable((() => {
    if (as === 'error') return Buffer.from(toText(mutateAll(JSON.parse(encodeError(r as string, 'pi', new KizunaError('KZ_ERR_OVERLOADED', 'busy'), 'm').toString()), ms)));
    const encoded = encodeResult(r as InferenceResult, as);
    if (as === 'json') return Buffer.from(toText(mutateAll(JSON.parse(encoded.toString()), ms)));
    const { header, data } = readFrame(encoded);
    return frameOf(toText(mutateAll(header, ms)), data);
  })()));
test('decodeReply: a corrupted reply never throws anything but a KizunaError', () => {
  check(fc.property(nearReplyArb, (payload) => {
    const r = outcome(() => decodeReply(payload), ALL_CODES);
    if (r.ok) assertReply(r.value);
  }), 0x7e05, RUNS.replyNear);
});
test('decodeReply: a corrupted reply gives a well-formed reply or KZ_ERR_MALFORMED (not a request error code)', () => {
  check(fc.property(nearReplyArb, (payload) => {
    const r = outcome(() => decodeReply(payload), ['KZ_ERR_MALFORMED']);
    if (r.ok) assertReply(r.value);
  }), 0x7e06, RUNS.replyNear);
});
