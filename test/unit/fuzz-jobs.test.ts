/**
 * Property-based fuzzing (fast-check) of the job decoders (mesh/jobs.ts) and of node statuses
 * (mesh/status.ts, mesh/roster.ts). For random bytes, random JSON and near-valid messages (a valid
 * message with a field corrupted), each returns a well-formed value, throws a KizunaError with
 * one of its documented codes, or (checkShardResult, parseNodeStatus) reports the refusal as a
 * value: never a TypeError/RangeError, never a slow case. Encoders round-trip; limits hold.
 * Seeds are fixed; a `todo` property is a known bug, its minimal counterexample above it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ERROR_CODES, KizunaError, type ErrorCode } from '../../mesh/errors.js';
import {
  checkShardResult, decodeJob, decodeJobMessage, decodeShard, encodeJobError, encodeJobResults, encodeShard, encodeShardResult,
  itemBytes, jobItem, jobPayload, type ItemResult, type JobItem, type JobOptions, type JobProgress, type JobResultItem,
} from '../../mesh/jobs.js';
import { decodeRequestObject } from '../../mesh/messages.js';
import { tensorFromJson, tensorToJson } from '../../mesh/codec.js';
import { parseNodeStatus, type ModelSummary, type NodeStatus } from '../../mesh/status.js';
import { Roster } from '../../mesh/roster.js';
import { topics } from '../../mesh/topics.js';
import { DTYPES, elementCount, type DType, type Tensor, type TensorData } from '../../mesh/tensor.js';

// ---------------------------------------------------------------- outcomes

const ALL_CODES = Object.keys(ERROR_CODES) as ErrorCode[];
const JOB_CODES: ErrorCode[] = ['KZ_ERR_TOO_LARGE', 'KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_TOO_MANY_ELEMENTS'];
const SHARD_CODES: ErrorCode[] = ['KZ_ERR_TOO_LARGE', 'KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST'];
const REQUEST_CODES: ErrorCode[] = ['KZ_ERR_MALFORMED', 'KZ_ERR_BAD_REQUEST', 'KZ_ERR_BAD_DTYPE', 'KZ_ERR_BAD_SHAPE', 'KZ_ERR_TOO_LARGE', 'KZ_ERR_TOO_MANY_ELEMENTS'];
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

/** A payload that fast-check shows as text in a counterexample, deep nesting abridged: ⟨[×6000⟩ */
const readable = (b: Buffer): Buffer => Object.assign(b, {
  [fc.toStringMethod]: () => `Buffer(${JSON.stringify(b.toString('latin1').replace(/(\{"a":|\[|\]|\})\1{9,}/g, (run, unit: string) => `⟨${unit}×${run.length / unit.length}⟩`))})`,
});

// ---------------------------------------------------------------- corrupting valid messages

// Deep nesting goes in as a marker string, replaced in the JSON text (JSON.stringify overflows on it).
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
const payloadOf = (value: unknown) => readable(Buffer.from(toText(value)));


const SPECIAL: unknown[] = [
  -1, -0, 0, 0.5, 1.5, 1e300, -1e300, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 100_001,
  '', ' ', '=', 'AA=', 'float16', 'bool', 'm', 'KZ_ERR_OVERLOADED', 'KZ_ERR_NOPE', '__proto__', 'toString', 'caf\u00e9', '\u0000', '\ud800', 'a'.repeat(300),
  true, false, null, [], {}, [-1], [1.5], [null], [{}], [[1]], [2 ** 26, 2 ** 26], { toString: 1 }, { toString: {}, valueOf: {} },
  JSON.parse('{"__proto__":{"ok":true}}'),
];
const clone = <T>(v: T): T => structuredClone(v);
/** Values that break decoders; `deep` adds 6000-level nesting. */
const nasty = (deep: boolean): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...SPECIAL, ...(deep ? [DEEP_ARRAY, DEEP_OBJECT] : [])).map(clone) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.double() },
  );
const keyArb = fc.oneof(
  fc.constantFrom('items', 'from', 'version', 'top_k', 'raw_outputs', 'reply', 'image', 'images', 'inputs', 'dtype', 'shape', 'b64', 'data',
    'v', 'id', 'ok', 'agent', 'results', 'index', 'model', 'timings', 'outputs', 'answers', 'score', 'error', 'code', 'message',
    'progress', 'complete', 'node', 'instance', 'online', 'seq', 'started', 'models', 'name', '__proto__', 'toString', '\n', 'a\u2028'),
  fc.string({ maxLength: 6 }),
);

type Path = (string | number)[];
interface Mutation { at: number; op: 'set' | 'delete' | 'add'; key: string; value: unknown }
const mutations = (deep: boolean) => fc.array(
  fc.record({ at: fc.nat(), op: fc.constantFrom<Mutation['op']>('set', 'set', 'set', 'delete', 'add'), key: keyArb, value: nasty(deep) }),
  { minLength: 1, maxLength: 3 },
);

function nodesOf(v: unknown, path: Path = [], out: Path[] = []): Path[] {
  out.push(path);
  if (Array.isArray(v)) v.forEach((x, i) => nodesOf(x, [...path, i], out));
  else if (typeof v === 'object' && v !== null) for (const k of Object.keys(v)) nodesOf((v as Record<string, unknown>)[k], [...path, k], out);
  return out;
}
const define = (o: object, k: string | number, value: unknown) => Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });

/** The value with one node replaced, deleted, or given one more key/element. */
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
const corrupted = (valid: fc.Arbitrary<unknown>, deep = true) => fc.tuple(valid, mutations(deep)).map(([v, ms]) => payloadOf(ms.reduce(mutate, v)));

const bytesArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((b) => readable(Buffer.from(b))),
  fc.tuple(fc.constantFrom('{', ' {', '[', '"', '{"items":', '{"v":1,', '{"id":"j","ok":'), fc.uint8Array({ maxLength: 120 }))
    .map(([p, b]) => readable(Buffer.concat([Buffer.from(p), b]))),
);
const jsonArb = fc.oneof(fc.jsonValue(), fc.dictionary(keyArb, nasty(false), { maxKeys: 5 })).map(payloadOf);

// ---------------------------------------------------------------- valid messages

const DTYPE_NAMES = Object.keys(DTYPES) as DType[];
const dtypeArb = fc.constantFrom(...DTYPE_NAMES);
const tensorOf = (dtype: DType, shape: number[]): fc.Arbitrary<Tensor> => {
  const n = elementCount(shape);
  const size = n * DTYPES[dtype].bytes;
  return fc.uint8Array({ minLength: size, maxLength: size }).map((raw) => {
    const buf = new Uint8Array(size);
    buf.set(dtype === 'bool' ? raw.map((b) => b & 1) : raw);
    const data = new DTYPES[dtype].array(buf.buffer, 0, n) as TensorData;
    // Results must hold finite numbers (checkShardResult refuses NaN and infinities).
    if (data instanceof Float32Array || data instanceof Float64Array) data.forEach((v, i) => (data[i] = Number.isFinite(v) ? v : i));
    return { dtype, shape, data };
  });
};
const shapeArb = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });
const tensorArb = fc.tuple(dtypeArb, shapeArb).chain(([d, s]) => tensorOf(d, s));
const nameArb = fc.oneof(fc.constantFrom('x', 'input', 'toString', '__proto__', 'caf\u00e9', '', 'a\nb'), fc.string({ maxLength: 8 }));

const itemArb: fc.Arbitrary<JobItem> = fc.oneof(
  fc.uint8Array({ maxLength: 24 }).map((i) => jobItem(i)),
  fc.array(fc.uint8Array({ maxLength: 8 }), { minLength: 1, maxLength: 3 }).map((is) => jobItem(is)),
  fc.dictionary(nameArb, tensorArb, { maxKeys: 2 }).map((inputs) => jobItem(inputs)),
);
const jobOptionsArb: fc.Arbitrary<JobOptions> = fc.record(
  { version: fc.string({ maxLength: 32 }), top_k: fc.integer({ min: 1, max: 1000 }), raw_outputs: fc.boolean() },
  { requiredKeys: [] },
);
const jobArb = fc.tuple(fc.array(itemArb, { minLength: 1, maxLength: 5 }), jobOptionsArb).chain(([items, options]) =>
  fc.record({ items: fc.constant(items), options: fc.constant(options), from: fc.nat(items.length) }));

const timingsArb = fc.record({ queue_ms: fc.nat(), pre_ms: fc.nat(), infer_ms: fc.double({ min: 0, max: 1e6, noNaN: true }), post_ms: fc.nat(), total_ms: fc.nat() });
const MODEL = 'digits';
/** The outputs a model declares, and results that fit them. */
const specArb = fc.uniqueArray(fc.record({ name: nameArb, dtype: dtypeArb, shape: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }) }), { selector: (s) => s.name, maxLength: 2 });
const summaryOf = (spec: { name: string; dtype: DType; shape: number[] }[], named: boolean): ModelSummary => ({
  name: MODEL, version: '1.0.0', sha256: 'ab'.repeat(32), inputs: [{ name: 'input', dtype: 'float32', shape: ['N', 4] }],
  outputs: spec.map((s) => ({ name: s.name, dtype: s.dtype, shape: named ? ['N', ...s.shape.slice(1)] : s.shape })),
});
const errorResultArb: fc.Arbitrary<ItemResult> = fc.record({ code: fc.constantFrom(...ALL_CODES), message: fc.string() }).map((error) => ({ ok: false, error }));
const okResultArb = (spec: { name: string; dtype: DType; shape: number[] }[]): fc.Arbitrary<ItemResult> =>
  fc.record({
    version: fc.string({ maxLength: 8 }),
    timings: timingsArb,
    outputs: fc.tuple(...spec.map((s) => tensorOf(s.dtype, s.shape))).map((ts) => Object.fromEntries(ts.map((t, i) => [spec[i]!.name, tensorToJson(t)]))),
    answers: fc.array(fc.record({ index: fc.nat(9), score: fc.double({ min: 0, max: 1, noNaN: true }), label: fc.string({ maxLength: 4 }) }), { minLength: 1, maxLength: 3 }),
  }, { requiredKeys: ['version', 'timings', 'outputs'] }).map((r) => ({ ok: true, model: MODEL, ...r }));
const shardResultArb = fc.tuple(specArb, fc.boolean(), fc.boolean()).chain(([spec, withSummary, named]) =>
  fc.record({
    agent: fc.string({ maxLength: 10 }),
    results: fc.array(fc.oneof(okResultArb(spec), errorResultArb), { maxLength: 4 }),
    summary: fc.constant(withSummary ? summaryOf(spec, named) : undefined),
  }));

const progressArb: fc.Arbitrary<JobProgress> = fc.record({
  done: fc.nat(), total: fc.nat(), failed: fc.nat(), rate: fc.double({ min: 0, max: 1e6, noNaN: true }), eta_s: fc.integer({ min: -1, max: 1e6 }),
  by_agent: fc.dictionary(fc.string({ maxLength: 6 }).filter((k) => k !== '__proto__'), fc.nat()),
});
const jobResultItemArb: fc.Arbitrary<JobResultItem> = fc.tuple(fc.oneof(okResultArb([]), errorResultArb), fc.nat(), fc.string({ maxLength: 6 }))
  .map(([r, index, agent]) => ({ ...r, index, agent }));
const jobResultsArb = fc.record({ id: fc.string(), from: fc.nat(), results: fc.array(jobResultItemArb, { maxLength: 4 }), progress: progressArb, complete: fc.boolean() });

const statusArb: fc.Arbitrary<NodeStatus> = fc.record(
  {
    v: fc.constant(1 as const), node: fc.constantFrom('pi-1', 'pi-2'), instance: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 8, maxLength: 16 }), started: fc.nat(), seq: fc.nat(), online: fc.boolean(),
    draining: fc.boolean(), role: fc.constantFrom('joining' as const, 'agent' as const, 'standby' as const, 'broker' as const), term: fc.nat(), port: fc.integer({ min: 1, max: 65535 }),
    addresses: fc.array(fc.ipV4(), { maxLength: 2 }), eligible: fc.boolean(), ramMiB: fc.nat(), cores: fc.nat(16), throttled: fc.boolean(), slots: fc.nat(8),
    models: fc.array(specArb.map((spec) => summaryOf(spec, true)), { maxLength: 2 }),
  },
  { requiredKeys: ['v', 'node', 'instance', 'started', 'seq', 'online'] },
);

// ---------------------------------------------------------------- well-formed values

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function assertJobOptions(o: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(o)) {
    if (k === 'version') assert.ok(typeof v === 'string' && v.length <= 32);
    else if (k === 'top_k') assert.ok(Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 1000);
    else if (k === 'raw_outputs') assert.equal(typeof v, 'boolean');
    else assert.fail(`unknown job option ${k}`);
  }
}

/** A result the dispatcher may believe: a known error, or a result of `model` with finite outputs that fit `summary`. */
function assertPlausible(r: unknown, summary: ModelSummary | undefined): void {
  assert.ok(isPlainObject(r));
  if (r.ok === false) {
    assert.ok(isPlainObject(r.error) && Object.hasOwn(ERROR_CODES, r.error.code as string) && typeof r.error.message === 'string');
    return;
  }
  assert.equal(r.ok, true);
  assert.equal(r.model, MODEL);
  assert.equal(typeof r.version, 'string');
  assert.ok(isPlainObject(r.timings) && ['queue_ms', 'pre_ms', 'infer_ms', 'post_ms', 'total_ms'].every((k) => typeof (r.timings as Record<string, unknown>)[k] === 'number'));
  assert.ok(r.outputs !== undefined || r.answers !== undefined);
  if (r.outputs !== undefined) {
    const outputs = r.outputs as Record<string, unknown>;
    assert.ok(typeof outputs === 'object' && outputs !== null); // a list passes too (its indices as names)
    for (const [name, t] of Object.entries(outputs)) {
      const tensor = tensorFromJson(name, t as never, 1 << 26);
      if (tensor.dtype === 'float32' || tensor.dtype === 'float64') assert.ok((tensor.data as Float32Array).every(Number.isFinite));
    }
    for (const spec of summary?.outputs ?? []) {
      const t = outputs[spec.name] as { dtype: string; shape: number[] };
      assert.equal(t.dtype, spec.dtype);
      assert.equal(t.shape.length, spec.shape.length);
      spec.shape.forEach((d, i) => typeof d === 'number' && assert.equal(t.shape[i], d));
    }
  }
  if (r.answers !== undefined) {
    assert.ok(Array.isArray(r.answers) && r.answers.length > 0);
    for (const a of r.answers) {
      assert.ok(typeof a === 'object' && a !== null); // any object: arrays and {} pass too (a lenient check, by design)
      assert.ok(a.score === undefined || (typeof a.score === 'number' && Number.isFinite(a.score)));
      assert.ok(a.index === undefined || (Number.isInteger(a.index) && (a.index as number) >= 0));
    }
  }
}

function assertJobMessage(m: ReturnType<typeof decodeJobMessage>): void {
  assert.equal(typeof m.id, 'string');
  if (!m.ok) {
    assert.ok(Object.hasOwn(ERROR_CODES, m.error.code) && typeof m.error.message === 'string');
    return;
  }
  assert.ok(Number.isSafeInteger(m.from) && m.from >= 0, 'from');
  assert.ok(Array.isArray(m.results), 'results');
  for (const r of m.results as unknown[]) {
    assert.ok(isPlainObject(r), 'a result is an object');
    assert.ok(Number.isSafeInteger(r.index) && (r.index as number) >= 0, 'a result has an index');
    assert.equal(typeof r.ok, 'boolean', 'a result has "ok"');
    if (r.ok === false) assert.ok(isPlainObject(r.error) && Object.hasOwn(ERROR_CODES, r.error.code as string) && typeof r.error.message === 'string', 'an error result has a known code');
    else assert.ok(r.outputs === undefined || isPlainObject(r.outputs), 'outputs');
  }
  const p = m.progress as unknown;
  assert.ok(isPlainObject(p), 'progress is an object');
  for (const k of ['done', 'total', 'failed', 'rate', 'eta_s']) assert.equal(typeof p[k], 'number', `progress.${k}`);
  assert.ok(isPlainObject(p.by_agent), 'progress.by_agent');
  assert.equal(typeof m.complete, 'boolean', 'complete');
}

function assertStatusBasics(s: NodeStatus): void {
  assert.equal(s.v, 1);
  assert.equal(typeof s.node, 'string');
  assert.equal(typeof s.instance, 'string');
  assert.equal(typeof s.online, 'boolean');
  assert.ok(Number.isSafeInteger(s.seq) && Number.isSafeInteger(s.started));
  assert.ok(s.models === undefined || Array.isArray(s.models));
}

/** Every field typed as NodeStatus says (what the roster, the dispatcher and the election read). */
function assertStatus(s: NodeStatus): void {
  assertStatusBasics(s);
  const opt = (k: keyof NodeStatus, ok: (v: unknown) => boolean) => assert.ok(s[k] === undefined || ok(s[k]), `status.${k} = ${JSON.stringify(s[k])?.slice(0, 60)}`);
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  opt('draining', (v) => typeof v === 'boolean');
  opt('role', (v) => ['joining', 'agent', 'standby', 'broker'].includes(v as string));
  for (const k of ['term', 'port', 'ramMiB', 'cores', 'slots'] as const) opt(k, num);
  opt('addresses', (v) => Array.isArray(v) && v.every((a) => typeof a === 'string'));
  for (const k of ['eligible', 'throttled'] as const) opt(k, (v) => typeof v === 'boolean');
  const specs = (v: unknown) => Array.isArray(v) && v.every((x) => isPlainObject(x) && typeof x.name === 'string' && typeof x.dtype === 'string' && Array.isArray(x.shape));
  opt('models', (v) => Array.isArray(v) && v.every((m) => isPlainObject(m) && typeof m.name === 'string' && typeof m.version === 'string' && typeof m.sha256 === 'string'
    && specs(m.inputs) && (m.outputs === undefined || specs(m.outputs))));
}

const RUNS = {
  jobBytes: 8_000, jobJson: 5_000, jobNear: 10_000, jobRoundTrip: 3_000, jobLimits: 3_000,
  shardBytes: 5_000, shardNear: 6_000, shardRoundTrip: 2_000, shardItems: 4_000,
  shardResultBytes: 6_000, shardResultNear: 10_000, shardResultRoundTrip: 3_000,
  jobMessageBytes: 6_000, jobMessageRoundTrip: 3_000, jobMessageNear: 2_000,
  statusBytes: 5_000, statusNear: 6_000, statusRoundTrip: 2_000, roster: 2_000,
};

// ---------------------------------------------------------------- decodeJob

const JOB_LIMITS = { maxPayloadBytes: 1 << 22, maxItems: 100_000 };
function assertJob(job: ReturnType<typeof decodeJob>, limits: { maxItems: number }): void {
  assert.ok(job.items.length >= 1 && job.items.length <= limits.maxItems);
  assert.ok(job.items.every(isPlainObject));
  assert.ok(Number.isSafeInteger(job.from) && job.from >= 0 && job.from <= job.items.length);
  assertJobOptions(job.options as Record<string, unknown>);
}
/** What the dispatcher does with an accepted job: size its items and re-serialise them as shards. */
function assertDispatchable(job: ReturnType<typeof decodeJob>): void {
  for (const item of job.items) assert.ok(Number.isFinite(itemBytes(item)));
  assert.ok(encodeShard(job.items, job.options).length > 0);
}

test('decodeJob: random bytes and JSON give a well-formed job or a job error code', () => {
  check(fc.property(fc.oneof(bytesArb, jsonArb), fc.nat(300), fc.nat(6), (payload, maxPayloadBytes, maxItems) => {
    for (const limits of [JOB_LIMITS, { maxPayloadBytes, maxItems }]) {
      const r = outcome(() => decodeJob(payload, limits), JOB_CODES);
      if (r.ok) assertJob(r.value, limits);
    }
  }), 0x10b1, RUNS.jobBytes);
});

test('decodeJob: any JSON object with an "items" list gives a job or a job error code', () => {
  const listArb = fc.tuple(fc.array(nasty(false), { maxLength: 4 }), fc.dictionary(keyArb, nasty(false), { maxKeys: 3 }))
    .map(([items, extra]) => payloadOf({ ...extra, items }));
  check(fc.property(listArb, (payload) => {
    const r = outcome(() => decodeJob(payload, JOB_LIMITS), JOB_CODES);
    if (r.ok) {
      assertJob(r.value, JOB_LIMITS);
      assertDispatchable(r.value);
    }
  }), 0x10b2, RUNS.jobJson);
});

test('decodeJob: a valid job with fields corrupted gives a job the dispatcher can shard, or a job error code', () => {
  const valid = jobArb.map(({ items, options, from }) => JSON.parse(jobPayload(items, options)(from).toString()) as unknown);
  check(fc.property(corrupted(valid, false), (payload) => {
    const r = outcome(() => decodeJob(payload, JOB_LIMITS), JOB_CODES);
    if (r.ok) {
      assertJob(r.value, JOB_LIMITS);
      assertDispatchable(r.value);
    }
  }), 0x10b3, RUNS.jobNear);
});

test('jobPayload -> decodeJob gives back the items, options and "from"', () => {
  check(fc.property(jobArb, ({ items, options, from }) => {
    const job = decodeJob(jobPayload(items, options)(from), JOB_LIMITS);
    assert.deepEqual(job, { items: JSON.parse(JSON.stringify(items)), options: JSON.parse(JSON.stringify(options)), from });
  }), 0x10b4, RUNS.jobRoundTrip);
});

test('decodeJob: over maxPayloadBytes is KZ_ERR_TOO_LARGE, over maxItems KZ_ERR_TOO_MANY_ELEMENTS, "from" past the end KZ_ERR_BAD_REQUEST', () => {
  check(fc.property(jobArb, fc.integer({ min: 1, max: 1e6 }), ({ items, options, from }, beyond) => {
    const payload = jobPayload(items, options)(from);
    assert.throws(() => decodeJob(payload, { maxPayloadBytes: payload.length - 1, maxItems: 1e6 }), { code: 'KZ_ERR_TOO_LARGE' });
    assert.throws(() => decodeJob(payload, { maxPayloadBytes: payload.length, maxItems: items.length - 1 }), { code: 'KZ_ERR_TOO_MANY_ELEMENTS' });
    assert.doesNotThrow(() => decodeJob(payload, { maxPayloadBytes: payload.length, maxItems: items.length }));
    assert.throws(() => decodeJob(jobPayload(items, options)(items.length + beyond), JOB_LIMITS), { code: 'KZ_ERR_BAD_REQUEST' });
  }), 0x10b5, RUNS.jobLimits);
});

// Was a bug (fixed: decodeJob refuses an item nested deeper than ITEM_MAX_DEPTH (32) levels with
// KZ_ERR_BAD_REQUEST, checked with an explicit stack, and itemBytes no longer recurses): decodeJob
// accepted items of any depth, and the dispatcher then recursed over them: itemBytes (via
// prefixBytes in Jobs.onJob, broker/jobs.ts) and encodeShard's JSON.stringify (when Jobs sends a
// shard) overflowed the stack. Minimal counterexample (12 KB, under every limit):
//   {"items":[{"a":[[[[...6000 levels...]]]]}]}  -> RangeError: Maximum call stack size exceeded,
// thrown out of Jobs.onJob after the job was accepted: the dispatcher's guard logged it and the app
// got no reply at all (it retried until its timeout).
test('decodeJob: a job it accepts, however deep, can be sized and sharded', () => {
  const valid = jobArb.map(({ items, options, from }) => JSON.parse(jobPayload(items, options)(from).toString()) as unknown);
  check(fc.property(corrupted(valid, true), (payload) => {
    const r = outcome(() => {
      const job = decodeJob(payload, JOB_LIMITS);
      assertDispatchable(job);
      return job;
    }, JOB_CODES);
    if (r.ok) assertJob(r.value, JOB_LIMITS);
  }), 0x10b6, 2_000);
});

// ---------------------------------------------------------------- decodeShard (agent side)

test('decodeShard: random bytes and JSON give a list of items or a shard error code', () => {
  check(fc.property(fc.oneof(bytesArb, jsonArb), fc.nat(300), (payload, maxPayloadBytes) => {
    for (const limits of [{ maxPayloadBytes: 1 << 22 }, { maxPayloadBytes }]) {
      const r = outcome(() => decodeShard(payload, limits), SHARD_CODES);
      if (r.ok) assert.ok(Array.isArray(r.value) && r.value.every(isPlainObject));
    }
  }), 0x5a01, RUNS.shardBytes);
});

test('decodeShard: a corrupted shard gives items (each an object) or a shard error code', () => {
  const valid = fc.tuple(fc.array(itemArb, { maxLength: 4 }), jobOptionsArb).map(([items, o]) => JSON.parse(encodeShard(items, o).toString()) as unknown);
  check(fc.property(corrupted(valid), (payload) => {
    const r = outcome(() => decodeShard(payload, { maxPayloadBytes: 1 << 22 }), SHARD_CODES);
    if (r.ok) assert.ok(r.value.every(isPlainObject));
  }), 0x5a02, RUNS.shardNear);
});

test('encodeShard -> decodeShard gives each item with the job options merged in', () => {
  check(fc.property(fc.array(itemArb, { maxLength: 4 }), jobOptionsArb, (items, options) => {
    const got = decodeShard(encodeShard(items, options), { maxPayloadBytes: 1 << 22 });
    assert.deepEqual(got, JSON.parse(JSON.stringify(items.map((i) => ({ ...i, ...options })))));
  }), 0x5a03, RUNS.shardRoundTrip);
});

test('the worker path: every item of a corrupted shard decodes as a request or gets a request error code', () => {
  const valid = fc.tuple(fc.array(itemArb, { minLength: 1, maxLength: 3 }), jobOptionsArb).map(([items, o]) => JSON.parse(encodeShard(items, o).toString()) as unknown);
  const limits = { maxPayloadBytes: 1 << 22, maxElements: 1 << 20 };
  check(fc.property(corrupted(valid), (payload) => {
    const r = outcome(() => decodeShard(payload, limits), SHARD_CODES);
    if (r.ok) for (const item of r.value) outcome(() => decodeRequestObject(item, limits), REQUEST_CODES);
  }), 0x5a04, RUNS.shardItems);
});

// ---------------------------------------------------------------- checkShardResult (dispatcher side)

test('checkShardResult: random bytes and JSON are refused as a value, never thrown', () => {
  check(fc.property(fc.oneof(bytesArb, jsonArb), fc.nat(4), (payload, count) => {
    const r = outcome(() => checkShardResult(payload, { count, model: MODEL }), []);
    assert.ok(r.ok);
    if (r.value.ok) r.value.results.forEach((x) => assertPlausible(x, undefined));
    else assert.equal(typeof r.value.reason, 'string');
  }), 0x5b01, RUNS.shardResultBytes);
});

test('checkShardResult: a corrupted shard result is refused, or every result in it is plausible', () => {
  const near = shardResultArb.chain(({ agent, results, summary }) =>
    fc.tuple(corrupted(fc.constant(JSON.parse(encodeShardResult(agent, results).toString()) as unknown), false), fc.constant(results.length), fc.constant(summary)));
  check(fc.property(near, ([payload, count, summary]) => {
    const r = outcome(() => checkShardResult(payload, { count, model: MODEL, ...(summary ? { summary } : {}) }), []);
    assert.ok(r.ok);
    if (r.value.ok) {
      assert.equal(r.value.results.length, count);
      r.value.results.forEach((x) => assertPlausible(x, summary));
    }
  }), 0x5b02, RUNS.shardResultNear);
});

test('encodeShardResult -> checkShardResult accepts plausible results as they were sent', () => {
  check(fc.property(shardResultArb, ({ agent, results, summary }) => {
    const r = checkShardResult(encodeShardResult(agent, results), { count: results.length, model: MODEL, ...(summary ? { summary } : {}) });
    assert.deepEqual(r, { ok: true, agent, results: JSON.parse(JSON.stringify(results)) });
    assert.equal(checkShardResult(encodeShardResult(agent, results), { count: results.length + 1, model: MODEL }).ok, false);
  }), 0x5b03, RUNS.shardResultRoundTrip);
});

// Was a bug (fixed: reasons describe a board's values only when they are short strings, else by
// their kind): checkShardResult put the result's "model" in its reason with JSON.stringify, which
// overflows on deep nesting. Minimal counterexample:
//   {"v":1,"agent":"a","results":[{"ok":true,"model":[[[...6000 levels...]]]}]}  -> RangeError
// thrown out of Jobs.onShardResult: the board that sent it was never distrusted.
test('checkShardResult: a result with a deeply nested field is refused, not thrown', () => {
  const near = shardResultArb.chain(({ agent, results }) =>
    fc.tuple(corrupted(fc.constant(JSON.parse(encodeShardResult(agent, results).toString()) as unknown), true), fc.constant(results.length)));
  check(fc.property(near, ([payload, count]) => {
    const r = outcome(() => checkShardResult(payload, { count, model: MODEL }), []);
    assert.ok(r.ok);
  }), 0x5b04, 3_000);
});

// ---------------------------------------------------------------- decodeJobMessage (app side)

test('decodeJobMessage: random bytes and JSON give a message with "id" and "ok", or KZ_ERR_MALFORMED', () => {
  check(fc.property(fc.oneof(bytesArb, jsonArb), (payload) => {
    const r = outcome(() => decodeJobMessage(payload), ['KZ_ERR_MALFORMED']);
    if (r.ok) {
      assert.equal(typeof r.value.id, 'string');
      assert.equal(typeof r.value.ok, 'boolean');
    }
  }), 0x3e01, RUNS.jobMessageBytes);
});

test('encodeJobResults / encodeJobError -> decodeJobMessage give back what was sent', () => {
  check(fc.property(jobResultsArb, fc.constantFrom(...ALL_CODES), fc.string({ unit: 'binary' }), ({ id, from, results, progress, complete }, code, message) => {
    const m = decodeJobMessage(encodeJobResults(id, from, results, progress, complete));
    assertJobMessage(m);
    assert.deepEqual(m, JSON.parse(JSON.stringify({ v: 1, id, ok: true, from, results, progress, complete })));
    const e = decodeJobMessage(encodeJobError(id, 'pi', new KizunaError(code, message)));
    assert.deepEqual(e, { ok: false, id, error: { code, message } });
  }), 0x3e02, RUNS.jobMessageRoundTrip);
});

// Were bugs (fixed: a compiled schema checks from, complete, each result and progress; error codes
// and messages are read as in a job error): decodeJobMessage says it throws KZ_ERR_MALFORMED for
// anything that is not a job message, but it passed through what the Node client then dereferences
// (JobRun.onMessage, mesh/job-client.ts, outside any try), and threw other errors itself. Minimal
// counterexamples (then):
//   {"id":"","ok":true,"from":0,"results":[],"progress":null}     -> returned (typeof null is 'object'); onMessage: TypeError reading p.done
//   {"id":"","ok":true,"from":0,"results":[null],"progress":{}}   -> returned; onMessage: TypeError reading r.index
//   {"id":"","ok":false,"error":{"message":{"toString":1}}}       -> TypeError from String()
//   {"id":"","ok":false,"error":{"message":[[[...6000 levels...]]]}} -> RangeError from String()
test('decodeJobMessage: a corrupted job message gives a well-formed message or KZ_ERR_MALFORMED', () => {
  const valid = fc.oneof(
    jobResultsArb.map(({ id, from, results, progress, complete }) => JSON.parse(encodeJobResults(id, from, results, progress, complete).toString()) as unknown),
    fc.tuple(fc.string(), fc.constantFrom(...ALL_CODES)).map(([id, code]) => JSON.parse(encodeJobError(id, 'pi', new KizunaError(code, 'm')).toString()) as unknown),
  );
  check(fc.property(corrupted(valid), (payload) => {
    const r = outcome(() => decodeJobMessage(payload), ['KZ_ERR_MALFORMED']);
    if (r.ok) assertJobMessage(r.value);
  }), 0x3e03, RUNS.jobMessageNear);
});

// ---------------------------------------------------------------- node status and the roster

test('parseNodeStatus: random bytes, JSON and corrupted statuses give undefined or a status with its required fields', () => {
  const valid = statusArb.map((s) => s as unknown);
  check(fc.property(fc.oneof(bytesArb, jsonArb, corrupted(valid)), (payload) => {
    const r = outcome(() => parseNodeStatus(payload), []);
    assert.ok(r.ok);
    if (r.value !== undefined) assertStatusBasics(r.value);
  }), 0x5701, RUNS.statusBytes + RUNS.statusNear);
});

test('parseNodeStatus reads back any valid status, and nothing over 1 MiB', () => {
  check(fc.property(statusArb, (s) => {
    assert.deepEqual(parseNodeStatus(Buffer.from(JSON.stringify(s))), JSON.parse(JSON.stringify(s)));
  }), 0x5702, RUNS.statusRoundTrip);
  const s = { v: 1, node: 'n', instance: 'i', online: true, seq: 0, started: 0 };
  const padding = (1 << 20) - JSON.stringify({ ...s, pad: '' }).length;
  assert.ok(parseNodeStatus(Buffer.from(JSON.stringify({ ...s, pad: 'x'.repeat(padding) }))));
  assert.equal(parseNodeStatus(Buffer.from(JSON.stringify({ ...s, pad: 'x'.repeat(padding + 1) }))), undefined);
});

// Was a bug (fixed: parseNodeStatus checks the whole status with the compiled NodeStatusSchema,
// ModelSummary included, and refuses nesting deeper than 16 levels): it checked only v, node,
// instance, online, seq, started and that models was a list; the rest of a retained status (anyone
// on the mesh may publish one) reached the roster, dispatcher and election unchecked. Minimal
// counterexamples (then):
//   {"v":1,"node":"","instance":"","online":false,"seq":0,"started":0,"models":[null]}  -> returned as is
//   {"v":1,"node":"","instance":"","online":false,"seq":0,"started":0,"ramMiB":{}}      -> returned as is (the election ranks by it)
test('parseNodeStatus: a corrupted status gives undefined or a status whose every field has its type', () => {
  check(fc.property(corrupted(statusArb.map((s) => s as unknown), false), (payload) => {
    const r = outcome(() => parseNodeStatus(payload), []);
    assert.ok(r.ok);
    if (r.value !== undefined) assertStatus(r.value);
  }), 0x5703, RUNS.statusNear);
});

// What that cost in the roster (fixed by the above; Roster.set no longer lets JSON.stringify throw
// either). Minimal counterexamples (then), on topic
// kizuna/v1/home/node/n/status (retained, so every later dispatcher and agent reads it too):
//   {"v":1,"node":"n","instance":"","online":true,"seq":0,"started":0,"models":[null]}
//     -> Roster.serving() threw TypeError (reading 'name' of null) for any model: the dispatcher
//        (Dispatcher.onRequest, Jobs.onJob) then failed every request and job; its guard logged the
//        error and the apps got no reply at all.
//   {"v":1,"node":"n","instance":"","online":true,"seq":0,"started":0,"x":[[[...6000 levels...]]]}
//     -> Roster.set() threw RangeError from JSON.stringify, after storing the status;
//        Agent.onMeshMessage (agent/agent.ts) calls roster.accept outside any guard, in the MQTT
//        message handler: the exception was uncaught and the agent process exited (tried with the
//        real Transport and EmbeddedBroker), on every board, again at each restart (retained).
test('Roster: no status payload makes accept, online or serving throw', () => {
  check(fc.property(fc.array(fc.oneof(corrupted(statusArb.map((s) => ({ ...s, node: 'n' }) as unknown), true), jsonArb), { minLength: 1, maxLength: 3 }), (payloads) => {
    const roster = new Roster();
    for (const p of payloads) {
      assert.ok(outcome(() => roster.accept(topics.nodeStatus('home', 'n'), p), []).ok);
      assert.ok(outcome(() => [roster.online(), roster.serving(MODEL), roster.serving('other', true)], []).ok);
    }
  }), 0x5704, RUNS.roster);
});
