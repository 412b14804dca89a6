/**
 * Jobs on the wire: many inputs of one model in one message, split by the dispatcher into shards
 * (contiguous index ranges) that agents run, and streamed back to the app in input order.
 *
 *   app -> job      {"items": [{"image": b64} | {"inputs": {...}} ...], "top_k"?, "raw_outputs"?, "version"?, "from"?}
 *   dispatcher -> shard   {"items": [...the range's items...], options}
 *   agent -> shardres     {"v": 1, "agent": node, "results": [ItemResult, one per item]}
 *   dispatcher -> jobres  {"v": 1, "id": job, "ok": true, "from": k, "results": [{index, ...ItemResult}],
 *                          "progress": {...}, "complete": bool}   or a job error {"v":1, "id", "ok": false, "error"}
 *
 * An item is what a single JSON request would be without options. Results are JSON (tensors as
 * numbers or base64, as in single replies). `from` lets a client that lost its broker ask again
 * for the results after the ones it already holds.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError, isErrorCode, type ErrorCode } from './errors.js';
import { tensorFromJson } from './codec.js';
import { JsonTensorSchema, RequestOptions, TimingsSchema, firstError, nestedDeeperThan, type JsonTensor, type Timings } from './schemas.js';
import type { ModelSummary } from './status.js';
import { tensorBytes, type Tensor } from './tensor.js';

const { reply: _reply, ...JobOptionFields } = RequestOptions;

const JobSchema = Type.Object(
  {
    items: Type.Array(Type.Object({}, { additionalProperties: true }), { minItems: 1 }),
    from: Type.Optional(Type.Integer({ minimum: 0 })),
    ...JobOptionFields,
  },
  { additionalProperties: false },
);
const checkJob = TypeCompiler.Compile(JobSchema);

export type JobOptions = Omit<Static<typeof JobSchema>, 'items' | 'from'>;
export type JobItem = Record<string, unknown>;

export interface Job {
  items: JobItem[];
  options: JobOptions;
  /** Results before this index are already with the app. */
  from: number;
}

export interface JobLimits {
  maxPayloadBytes: number;
  maxItems: number;
}

function parseJson(payload: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MALFORMED', `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * How deep an item may nest (a valid one nests 4 levels: the item, its inputs, a tensor, its shape
 * or data). The dispatcher serialises items recursively (JSON.stringify in encodeShard and
 * jobPayload), so deeper ones are refused before they get there.
 */
export const ITEM_MAX_DEPTH = 32;

export function decodeJob(payload: Uint8Array, limits: JobLimits): Job {
  if (payload.length > limits.maxPayloadBytes) {
    throw new KizunaError('KZ_ERR_TOO_LARGE', `job of ${payload.length} bytes is over the limit of ${limits.maxPayloadBytes}; split it into several jobs`);
  }
  const msg = parseJson(payload, 'job');
  if (!checkJob.Check(msg)) throw new KizunaError('KZ_ERR_BAD_REQUEST', `job ${firstError(checkJob, msg).text}`);
  if (msg.items.length > limits.maxItems) {
    throw new KizunaError('KZ_ERR_TOO_MANY_ELEMENTS', `job of ${msg.items.length} inputs is over the limit of ${limits.maxItems}; split it into several jobs`);
  }
  const { items, from, ...options } = msg;
  if ((from ?? 0) > items.length) throw new KizunaError('KZ_ERR_BAD_REQUEST', `job "from" ${from} is past its ${items.length} inputs`);
  // One walk over all items (the list is a level of its own); which item, only when one is too deep.
  if (nestedDeeperThan(items, ITEM_MAX_DEPTH + 1)) {
    const deep = items.findIndex((item) => nestedDeeperThan(item, ITEM_MAX_DEPTH));
    throw new KizunaError('KZ_ERR_BAD_REQUEST', `job input ${deep} nests deeper than ${ITEM_MAX_DEPTH} levels`);
  }
  return { items: items as JobItem[], options, from: from ?? 0 };
}

/**
 * About how many bytes an item takes in a shard (its strings: base64 images and tensors): 2 per
 * string's quotes, 8 per other value, a key's length plus 3 per member. Walks with an explicit
 * stack, so no item, however deep, overflows the call stack.
 */
export function itemBytes(item: unknown): number {
  let n = 0;
  const size = (v: unknown): void => {
    if (typeof v === 'string') n += v.length + 2;
    else if (typeof v !== 'object' || v === null) n += 8;
    else {
      n += 2;
      stack.push(v);
    }
  };
  const stack: object[] = [];
  size(item);
  for (let v = stack.pop(); v; v = stack.pop()) {
    if (Array.isArray(v)) {
      // Keys of a list are its indices: their lengths are counted without making them.
      for (let i = 0, digits = 1, next = 10; i < v.length; i++) {
        if (i === next) (digits++, (next *= 10));
        n += digits + 3;
        size(v[i]);
      }
    } else {
      for (const [k, x] of Object.entries(v)) {
        n += k.length + 3;
        size(x);
      }
    }
  }
  return n;
}

/** The wire item for one input: image bytes, several images, or named tensors. */
export function jobItem(input: Uint8Array | Uint8Array[] | Record<string, Tensor>): JobItem {
  const b64 = (i: Uint8Array) => Buffer.from(i.buffer, i.byteOffset, i.byteLength).toString('base64');
  if (input instanceof Uint8Array) return { image: b64(input) };
  if (Array.isArray(input)) return { images: input.map(b64) };
  // Base64, never JSON numbers: a job's bytes are parsed by the dispatcher and again by agents.
  return { inputs: Object.fromEntries(Object.entries(input).map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, b64: b64(tensorBytes(t)) }])) };
}

/**
 * A job's payload, ready to send again with another `from`: the items are serialised once and
 * only the head changes.
 */
export function jobPayload(items: readonly JobItem[], options: JobOptions): (from: number) => Buffer {
  const body = Buffer.from(JSON.stringify({ ...options, items }).slice(1));
  return (from) => Buffer.concat([Buffer.from(`{"from":${from},`), body]);
}

export function encodeShard(items: readonly JobItem[], options: JobOptions): Buffer {
  return Buffer.from(JSON.stringify({ ...options, items }));
}

/** A shard as the agent reads it: each item merged with the job's options is a request of its own. */
export function decodeShard(payload: Uint8Array, limits: { maxPayloadBytes: number }): JobItem[] {
  if (payload.length > limits.maxPayloadBytes) {
    throw new KizunaError('KZ_ERR_TOO_LARGE', `shard of ${payload.length} bytes is over the limit of ${limits.maxPayloadBytes}`);
  }
  const msg = parseJson(payload, 'shard');
  if (typeof msg !== 'object' || msg === null || !Array.isArray((msg as { items?: unknown }).items)) {
    throw new KizunaError('KZ_ERR_BAD_REQUEST', 'shard has no "items" list');
  }
  const { items, ...options } = msg as { items: unknown[] };
  return items.map((item) => (typeof item === 'object' && item !== null && !Array.isArray(item) ? { ...item, ...options } : { invalid: item }));
}

// ---------------------------------------------------------------- results

export type ItemOk = {
  ok: true;
  model: string;
  version: string;
  outputs?: Record<string, JsonTensor>;
  answers?: unknown[];
  timings: Timings;
};
export type ItemError = { ok: false; error: { code: ErrorCode; message: string } };
export type ItemResult = ItemOk | ItemError;

export function encodeShardResult(agent: string, results: readonly ItemResult[]): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, agent, results }));
}

/**
 * Errors that say nothing about the input itself (the board was busy, stopping, or failing): the
 * dispatcher runs that input again elsewhere rather than give the app this answer.
 */
export const RETRYABLE: ReadonlySet<ErrorCode> = new Set([
  'KZ_ERR_OVERLOADED', 'KZ_ERR_SHUTTING_DOWN', 'KZ_ERR_INFERENCE', 'KZ_ERR_INTERNAL', 'KZ_ERR_UNKNOWN_MODEL', 'KZ_ERR_MODEL_LOAD', 'KZ_ERR_TIMEOUT',
]);

const checkTimings = TypeCompiler.Compile(TimingsSchema);
const checkTensor = TypeCompiler.Compile(JsonTensorSchema);

/**
 * A value from a board, for a reason: a short string as it is, anything else by its kind only (the
 * value may be huge, or nested too deep for JSON.stringify).
 */
function describe(v: unknown): string {
  if (typeof v === 'string') return v.length <= 64 ? JSON.stringify(v) : `a string of ${v.length} characters`;
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return Array.isArray(v) ? 'a list' : `a${typeof v === 'object' ? 'n object' : ` ${typeof v}`}`;
}

/** Why one result is not plausible for `model`, or undefined when it is. */
function implausible(r: unknown, model: string, summary: ModelSummary | undefined): string | undefined {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return 'a result is not an object';
  const x = r as Record<string, unknown>;
  // The dispatcher adds these to each result it forwards; a board's own would spoof them.
  if (Object.hasOwn(x, 'index') || Object.hasOwn(x, 'agent')) return 'a result carries "index" or "agent"';
  if (x.ok === false) {
    const e = x.error as { code?: unknown; message?: unknown } | undefined;
    return isErrorCode(e?.code) && typeof e.message === 'string' ? undefined : 'an error result has no known code';
  }
  if (x.ok !== true) return 'a result has no "ok"';
  if (x.model !== model) return `a result is for model ${describe(x.model)}, not ${model}`;
  if (typeof x.version !== 'string' || !checkTimings.Check(x.timings)) return 'a result lacks its version or timings';
  if (x.outputs === undefined && x.answers === undefined) return 'a result has neither outputs nor answers';
  if (x.outputs !== undefined) {
    if (typeof x.outputs !== 'object' || x.outputs === null || Array.isArray(x.outputs)) return 'outputs is not an object';
    const outputs = x.outputs as Record<string, unknown>;
    for (const spec of summary?.outputs ?? []) {
      const t = outputs[spec.name];
      if (!checkTensor.Check(t)) return `output ${spec.name} is missing or not a tensor`;
      if (t.dtype !== spec.dtype) return `output ${spec.name} is ${t.dtype}, the model gives ${spec.dtype}`;
      if (t.shape.length !== spec.shape.length || spec.shape.some((d, i) => typeof d === 'number' && d !== t.shape[i])) {
        return `output ${spec.name} has shape ${JSON.stringify(t.shape)}, the model gives ${JSON.stringify(spec.shape)}`;
      }
    }
    for (const [key, t] of Object.entries(outputs)) {
      const name = describe(key);
      if (!checkTensor.Check(t)) return `output ${name} is not a tensor`;
      let tensor: Tensor;
      try {
        tensor = tensorFromJson(name, t, 1 << 26);
      } catch (err) {
        return err instanceof KizunaError ? err.message : `output ${name} is not a tensor`;
      }
      if ((tensor.dtype === 'float32' || tensor.dtype === 'float64') && !(tensor.data as Float32Array).every(Number.isFinite)) {
        return `output ${name} holds NaN or infinite values`;
      }
    }
  }
  if (x.answers !== undefined) {
    if (!Array.isArray(x.answers) || x.answers.length === 0) return 'answers is not a list';
    for (const a of x.answers) {
      if (typeof a !== 'object' || a === null) return 'an answer is not an object';
      const { score, index } = a as { score?: unknown; index?: unknown };
      if (score !== undefined && !(typeof score === 'number' && Number.isFinite(score))) return 'an answer has a score that is not a number';
      if (index !== undefined && !(Number.isInteger(index) && (index as number) >= 0)) return 'an answer has an index that is not a class number';
    }
  }
  return undefined;
}

/**
 * A shard's results, checked before any is believed: one per input, each an error with a known
 * code or a result of the right model whose outputs have the model's names, dtypes and shapes
 * and hold only finite numbers. A board that sends anything else gets none of it accepted.
 */
export function checkShardResult(
  payload: Uint8Array, expected: { count: number; model: string; summary?: ModelSummary },
): { ok: true; agent: string; results: ItemResult[] } | { ok: false; reason: string; agent?: string } {
  let msg: unknown;
  try {
    msg = parseJson(payload, 'shard result');
  } catch (err) {
    return { ok: false, reason: err instanceof KizunaError ? err.message : 'not JSON' };
  }
  const m = msg as { v?: unknown; agent?: unknown; results?: unknown };
  if (typeof m !== 'object' || m === null || m.v !== 1 || typeof m.agent !== 'string' || !Array.isArray(m.results)) {
    return { ok: false, reason: 'not a shard result (v, agent, results)' };
  }
  if (m.results.length !== expected.count) return { ok: false, agent: m.agent, reason: `${m.results.length} results for ${expected.count} inputs` };
  for (const r of m.results) {
    const why = implausible(r, expected.model, expected.summary);
    if (why) return { ok: false, agent: m.agent, reason: why };
  }
  return { ok: true, agent: m.agent, results: m.results as ItemResult[] };
}

export interface JobProgress {
  done: number;
  total: number;
  failed: number;
  /** Results per second since the job started. */
  rate: number;
  eta_s: number;
  by_agent: Record<string, number>;
}

export type JobResultItem = ItemResult & { index: number; agent: string };

export function encodeJobResults(job: string, from: number, results: readonly JobResultItem[], progress: JobProgress, complete: boolean): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id: job, ok: true, from, results, progress, complete }));
}

export function encodeJobError(job: string, agent: string, err: KizunaError): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id: job, ok: false, agent, error: { code: err.code, message: err.message } }));
}

export type JobMessage =
  | { ok: true; id: string; from: number; results: JobResultItem[]; progress: JobProgress; complete: boolean }
  | { ok: false; id: string; error: { code: ErrorCode; message: string } };

const ResultHead = { index: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), agent: Type.String() };
/** What an app may rely on in a job result message (fields of newer versions are let through). */
const JobResultsSchema = Type.Object({
  id: Type.String(),
  ok: Type.Literal(true),
  from: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  results: Type.Array(Type.Union([
    Type.Object({
      ...ResultHead,
      ok: Type.Literal(true),
      model: Type.String(),
      version: Type.String(),
      outputs: Type.Optional(Type.Object({}, { additionalProperties: JsonTensorSchema })),
      answers: Type.Optional(Type.Array(Type.Unknown())),
      timings: TimingsSchema,
    }),
    // The code and message are read as in a job error: unknown codes become KZ_ERR_INTERNAL.
    Type.Object({ ...ResultHead, ok: Type.Literal(false), error: Type.Object({ code: Type.Optional(Type.Unknown()), message: Type.Optional(Type.Unknown()) }) }),
  ])),
  progress: Type.Object({
    done: Type.Number(),
    total: Type.Number(),
    failed: Type.Number(),
    rate: Type.Number(),
    eta_s: Type.Number(),
    by_agent: Type.Object({}, { additionalProperties: Type.Number() }),
  }),
  complete: Type.Boolean(),
});
const checkJobResults = TypeCompiler.Compile(JobResultsSchema);

/** An error's code if it is a known one (else KZ_ERR_INTERNAL) and its message if it is a string (else ''). */
function errorOf(e: unknown): { code: ErrorCode; message: string } {
  const { code, message } = (typeof e === 'object' && e !== null ? e : {}) as { code?: unknown; message?: unknown };
  return { code: isErrorCode(code) ? code : 'KZ_ERR_INTERNAL', message: typeof message === 'string' ? message : '' };
}

/**
 * A job result message for clients; throws KZ_ERR_MALFORMED for anything else. Everything the
 * client reads is checked: "from", "complete", each result (index, agent, ok, and its outputs as
 * tensors or its error) and the progress numbers.
 */
export function decodeJobMessage(payload: Uint8Array): JobMessage {
  const msg = parseJson(payload, 'job result') as Record<string, unknown>;
  if (typeof msg !== 'object' || msg === null || typeof msg.id !== 'string' || typeof msg.ok !== 'boolean') {
    throw new KizunaError('KZ_ERR_MALFORMED', 'job result lacks "id" and "ok"');
  }
  if (!msg.ok) return { ok: false, id: msg.id, error: errorOf(msg.error) };
  if (!checkJobResults.Check(msg)) throw new KizunaError('KZ_ERR_MALFORMED', `job result ${firstError(checkJobResults, msg).text}`);
  const results = msg.results.map((r) => {
    if (r.ok) return r;
    const error = errorOf(r.error);
    return error.code === r.error.code && error.message === r.error.message ? r : { ...r, error };
  });
  return { ...msg, results } as JobMessage;
}
