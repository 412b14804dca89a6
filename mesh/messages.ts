/**
 * Requests and replies on the wire. A request payload is one of:
 *  - JSON (`{"inputs": {...}}` or `{"image": "<base64>"}` or `{"images": [...]}`, plus options),
 *  - a KZB1 frame (frame.ts) whose header is the JSON form with tensor bytes in the data section,
 *  - raw image bytes (JPEG, PNG, WebP, GIF, TIFF), published as-is, for image models.
 * A reply is JSON, or a KZB1 frame when the request asked for binary; errors are always JSON.
 */
import { KizunaError, isErrorCode, type ErrorCode } from './errors.js';
import { isFrame, readFrame, writeFrame } from './frame.js';
import { sniffImage } from './image.js';
import { decodeBase64, tensorFromFrame, tensorFromJson, tensorToJson } from './codec.js';
import { checkFrameRequest, checkJsonRequest, firstError, type Timings } from './schemas.js';
import { DTYPES, tensorBytes, type Tensor } from './tensor.js';

export interface WireLimits {
  maxPayloadBytes: number;
  maxElements: number;
}

export type RequestBody = { kind: 'tensors'; inputs: Record<string, Tensor> } | { kind: 'images'; images: Uint8Array[] };

export interface RequestOptions {
  version?: string;
  topK?: number;
  rawOutputs: boolean;
  reply: 'json' | 'binary';
}

export interface DecodedRequest {
  body: RequestBody;
  options: RequestOptions;
}

export function decodeRequest(payload: Uint8Array, limits: WireLimits): DecodedRequest {
  if (payload.length > limits.maxPayloadBytes) {
    throw new KizunaError('KZ_ERR_TOO_LARGE', `payload of ${payload.length} bytes is over the limit of ${limits.maxPayloadBytes}`);
  }
  if (isFrame(payload)) return decodeFrameRequest(payload, limits);
  if (sniffImage(payload)) return { body: { kind: 'images', images: [payload] }, options: { rawOutputs: true, reply: 'json' } };
  const first = payload.find((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
  if (first !== 0x7b /* { */) {
    throw new KizunaError('KZ_ERR_MALFORMED', 'payload is neither a JSON object, a KZB1 frame nor a JPEG/PNG/WebP/GIF/TIFF image');
  }
  return decodeJsonRequest(payload, limits);
}

function decodeJsonRequest(payload: Uint8Array, limits: WireLimits): DecodedRequest {
  let msg: unknown;
  try {
    msg = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MALFORMED', `request is not valid JSON: ${(err as Error).message}`);
  }
  return decodeRequestObject(msg, limits);
}

/** A request already parsed from JSON (a single request, or one item of a job's shard). */
export function decodeRequestObject(msg: unknown, limits: WireLimits): DecodedRequest {
  if (!checkJsonRequest.Check(msg)) throw schemaError('request', firstError(checkJsonRequest, msg));
  const given = [msg.inputs, msg.image, msg.images].filter((x) => x !== undefined).length;
  if (given !== 1) throw new KizunaError('KZ_ERR_BAD_REQUEST', 'request needs exactly one of "inputs", "image" or "images"');
  const options = optionsOf(msg, 'json');
  if (msg.inputs) {
    const inputs: Record<string, Tensor> = {};
    let total = 0;
    for (const [name, t] of Object.entries(msg.inputs)) {
      inputs[name] = tensorFromJson(name, t, limits.maxElements - total);
      total += inputs[name].data.length;
    }
    return { body: { kind: 'tensors', inputs }, options };
  }
  const images = (msg.images ?? [msg.image!]).map((b64, i) => decodeBase64(`image ${i}`, b64));
  return { body: { kind: 'images', images }, options };
}

function decodeFrameRequest(payload: Uint8Array, limits: WireLimits): DecodedRequest {
  const { header, data } = readFrame(payload);
  if (!checkFrameRequest.Check(header)) throw schemaError('frame header', firstError(checkFrameRequest, header));
  const inputs: Record<string, Tensor> = {};
  let total = 0;
  for (const [name, t] of Object.entries(header.inputs)) {
    inputs[name] = tensorFromFrame(name, t, data, limits.maxElements - total);
    total += inputs[name].data.length;
  }
  return { body: { kind: 'tensors', inputs }, options: optionsOf(header, 'binary') };
}

/** A schema violation, with the precise code when it is about a tensor's dtype or shape. */
function schemaError(what: string, e: { path: string; text: string }): KizunaError {
  if (/^\/inputs\/[^/]+\/(dtype|data\/\d+)$/.test(e.path)) return new KizunaError('KZ_ERR_BAD_DTYPE', `${what} ${e.text} (dtypes: ${Object.keys(DTYPES).join(', ')})`);
  if (/^\/inputs\/[^/]+\/shape(\/|$)/.test(e.path)) return new KizunaError('KZ_ERR_BAD_SHAPE', `${what} ${e.text}`);
  return new KizunaError('KZ_ERR_BAD_REQUEST', `${what} ${e.text}`);
}

function optionsOf(
  m: { version?: string; top_k?: number; raw_outputs?: boolean; reply?: 'json' | 'binary' },
  natural: 'json' | 'binary',
): RequestOptions {
  const o: RequestOptions = { rawOutputs: m.raw_outputs ?? true, reply: m.reply ?? natural };
  if (m.version !== undefined) o.version = m.version;
  if (m.top_k !== undefined) o.topK = m.top_k;
  return o;
}

/** A successful inference, as the agent builds it. */
export interface InferenceResult {
  id: string;
  model: string;
  version: string;
  agent: string;
  outputs?: Record<string, Tensor>;
  answers?: unknown[];
  timings: Timings;
}

export function encodeResult(r: InferenceResult, as: 'json' | 'binary'): Buffer {
  const head = { v: 1, id: r.id, ok: true, model: r.model, version: r.version, agent: r.agent };
  const tail = { answers: r.answers, timings: r.timings };
  const outputs = Object.entries(r.outputs ?? {});
  if (as === 'json') {
    const json = Object.fromEntries(outputs.map(([name, t]) => [name, tensorToJson(t)]));
    return Buffer.from(JSON.stringify({ ...head, outputs: json, ...tail }));
  }
  return writeFrame((place) => ({
    ...head,
    outputs: Object.fromEntries(outputs.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, ...place(tensorBytes(t)) }])),
    ...tail,
  }));
}

export interface ErrorReply {
  v: 1;
  id: string;
  ok: false;
  agent: string;
  model?: string;
  error: { code: ErrorCode; message: string };
}

export function encodeError(id: string, agent: string, err: KizunaError, model?: string): Buffer {
  const reply: ErrorReply = { v: 1, id, ok: false, agent, ...(model ? { model } : {}), error: { code: err.code, message: err.message } };
  return Buffer.from(JSON.stringify(reply));
}

export type Reply = (InferenceResult & { ok: true; outputs: Record<string, Tensor> }) | ErrorReply;

/** Decodes a reply (JSON or KZB1) for clients; throws KZ_ERR_MALFORMED for anything else. */
export function decodeReply(payload: Uint8Array): Reply {
  const limits = { maxElements: Number.MAX_SAFE_INTEGER };
  let msg: Record<string, unknown>;
  let tensorOf: (name: string, t: never) => Tensor;
  if (isFrame(payload)) {
    const { header, data } = readFrame(payload);
    msg = header as Record<string, unknown>;
    tensorOf = (name, t) => tensorFromFrame(name, t, data, limits.maxElements);
  } else {
    try {
      msg = JSON.parse(Buffer.from(payload).toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new KizunaError('KZ_ERR_MALFORMED', 'reply is neither JSON nor a KZB1 frame');
    }
    tensorOf = (name, t) => tensorFromJson(name, t, limits.maxElements);
  }
  if (typeof msg !== 'object' || msg === null || typeof msg.id !== 'string' || typeof msg.ok !== 'boolean') {
    throw new KizunaError('KZ_ERR_MALFORMED', 'reply lacks "id" and "ok"');
  }
  if (!msg.ok) {
    const error = msg.error as { code?: unknown; message?: unknown } | undefined;
    const code = isErrorCode(error?.code) ? error.code : 'KZ_ERR_INTERNAL';
    return { ...(msg as unknown as ErrorReply), error: { code, message: String(error?.message ?? '') } };
  }
  const outputs: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries((msg.outputs ?? {}) as Record<string, never>)) outputs[name] = tensorOf(name, t);
  return { ...(msg as unknown as InferenceResult), ok: true, outputs };
}

export interface EncodeOptions {
  version?: string;
  topK?: number;
  rawOutputs?: boolean;
  reply?: 'json' | 'binary';
}

function wireOptions(o: EncodeOptions): Record<string, unknown> {
  return {
    ...(o.version !== undefined ? { version: o.version } : {}),
    ...(o.topK !== undefined ? { top_k: o.topK } : {}),
    ...(o.rawOutputs !== undefined ? { raw_outputs: o.rawOutputs } : {}),
    ...(o.reply !== undefined ? { reply: o.reply } : {}),
  };
}

/** A tensor request, as a KZB1 frame (compact, the default) or as readable JSON. */
export function encodeTensorRequest(inputs: Record<string, Tensor>, options: EncodeOptions = {}, as: 'json' | 'binary' = 'binary'): Buffer {
  if (as === 'json') {
    const json = Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, tensorToJson(t)]));
    return Buffer.from(JSON.stringify({ inputs: json, ...wireOptions(options) }));
  }
  return writeFrame((place) => ({
    inputs: Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, ...place(tensorBytes(t)) }])),
    ...wireOptions(options),
  }));
}

/** Images as JSON with base64 (needed for options or batches); a single image may also go raw. */
export function encodeImageRequest(images: Uint8Array[], options: EncodeOptions = {}): Buffer {
  const b64 = images.map((i) => Buffer.from(i.buffer, i.byteOffset, i.byteLength).toString('base64'));
  return Buffer.from(JSON.stringify({ ...(b64.length === 1 ? { image: b64[0] } : { images: b64 }), ...wireOptions(options) }));
}
