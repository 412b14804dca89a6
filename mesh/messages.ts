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
import type { Static, TSchema } from '@sinclair/typebox';
import type { TypeCheck } from '@sinclair/typebox/compiler';
import {
  INPUT_NAME_MAX_LENGTH, checkFrameRequest, checkFrameTensor, checkJsonRequest, checkJsonTensor, firstError, type Timings,
} from './schemas.js';
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
    const inputs = decodeInputs('request', msg.inputs, checkJsonTensor, (name, t, max) => tensorFromJson(name, t, max), limits.maxElements);
    return { body: { kind: 'tensors', inputs }, options };
  }
  const images = (msg.images ?? [msg.image!]).map((b64, i) => decodeBase64(`image ${i}`, b64));
  return { body: { kind: 'images', images }, options };
}

function decodeFrameRequest(payload: Uint8Array, limits: WireLimits): DecodedRequest {
  const { header, data } = readFrame(payload);
  if (!checkFrameRequest.Check(header)) throw schemaError('frame header', firstError(checkFrameRequest, header));
  const inputs = decodeInputs('frame header', header.inputs, checkFrameTensor, (name, t, max) => tensorFromFrame(name, t, data, max), limits.maxElements);
  return { body: { kind: 'tensors', inputs }, options: optionsOf(header, 'binary') };
}

/**
 * Named tensors, each name and each tensor checked here (the request schemas only say `inputs` is
 * an object: see schemas.ts). An input may have any name of up to INPUT_NAME_MAX_LENGTH characters,
 * "__proto__" included (a model may have an input of that name): the map is built with
 * Object.fromEntries, which defines own properties, where `inputs[name] = t` would set the prototype.
 */
function decodeInputs<S extends TSchema>(
  what: string, given: Record<string, unknown>, check: TypeCheck<S>, decode: (name: string, t: Static<S>, maxElements: number) => Tensor, maxElements: number,
): Record<string, Tensor> {
  const entries: [string, Tensor][] = [];
  let total = 0;
  for (const [name, t] of Object.entries(given)) {
    if (name.length > INPUT_NAME_MAX_LENGTH) {
      throw new KizunaError('KZ_ERR_BAD_REQUEST', `${what}: an input name of ${name.length} characters is over the limit of ${INPUT_NAME_MAX_LENGTH}`);
    }
    if (!check.Check(t)) {
      const e = firstError(check, t);
      const path = `/inputs/${name.replace(/~/g, '~0').replace(/\//g, '~1')}${e.path}`;
      throw schemaError(what, { path, text: `${path}: ${e.message}` });
    }
    const tensor = decode(name, t, maxElements - total);
    entries.push([name, tensor]);
    total += tensor.data.length;
  }
  return Object.fromEntries(entries);
}

/** A schema violation, with the precise code when it is about a tensor's dtype or shape. */
function schemaError(what: string, e: { path: string; text: string }): KizunaError {
  if (/^\/inputs\/[^/]*\/(dtype|data\/\d+)$/.test(e.path)) return new KizunaError('KZ_ERR_BAD_DTYPE', `${what} ${e.text} (dtypes: ${Object.keys(DTYPES).join(', ')})`);
  if (/^\/inputs\/[^/]*\/shape(\/|$)/.test(e.path)) return new KizunaError('KZ_ERR_BAD_SHAPE', `${what} ${e.text}`);
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

/**
 * Decodes a reply (JSON or KZB1) for clients; throws KZ_ERR_MALFORMED for anything else, never
 * another code (a bad tensor in a reply is not the app's fault, so not KZ_ERR_BAD_SHAPE etc.).
 * An error reply keeps its code if it is a known one (else KZ_ERR_INTERNAL) and its message if it
 * is a string (else '').
 */
export function decodeReply(payload: Uint8Array): Reply {
  let msg: Record<string, unknown>;
  let tensorOf: (name: string, t: unknown) => Tensor;
  if (isFrame(payload)) {
    const { header, data } = readFrame(payload);
    msg = header as Record<string, unknown>;
    tensorOf = (name, t) => {
      if (!checkFrameTensor.Check(t)) throw malformedOutput(name, firstError(checkFrameTensor, t).text);
      return tensorFromFrame(name, t, data, Number.MAX_SAFE_INTEGER);
    };
  } else {
    try {
      msg = JSON.parse(Buffer.from(payload).toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new KizunaError('KZ_ERR_MALFORMED', 'reply is neither JSON nor a KZB1 frame');
    }
    tensorOf = (name, t) => {
      if (!checkJsonTensor.Check(t)) throw malformedOutput(name, firstError(checkJsonTensor, t).text);
      return tensorFromJson(name, t, Number.MAX_SAFE_INTEGER);
    };
  }
  if (typeof msg !== 'object' || msg === null || typeof msg.id !== 'string' || typeof msg.ok !== 'boolean') {
    throw new KizunaError('KZ_ERR_MALFORMED', 'reply lacks "id" and "ok"');
  }
  if (!msg.ok) {
    const error = msg.error as { code?: unknown; message?: unknown } | null | undefined;
    const code = isErrorCode(error?.code) ? error.code : 'KZ_ERR_INTERNAL';
    return { ...(msg as unknown as ErrorReply), error: { code, message: typeof error?.message === 'string' ? error.message : '' } };
  }
  const given = msg.outputs ?? {};
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw new KizunaError('KZ_ERR_MALFORMED', 'reply "outputs" is not an object');
  const outputs: [string, Tensor][] = [];
  for (const [name, t] of Object.entries(given)) {
    try {
      outputs.push([name, tensorOf(name, t)]);
    } catch (err) {
      if (err instanceof KizunaError && err.code === 'KZ_ERR_MALFORMED') throw err;
      throw malformedOutput(name, err instanceof Error ? err.message : 'not a tensor');
    }
  }
  // Object.fromEntries: an output named "__proto__" stays an output (see decodeInputs).
  return { ...(msg as unknown as InferenceResult), ok: true, outputs: Object.fromEntries(outputs) };
}

function malformedOutput(name: string, why: string): KizunaError {
  return new KizunaError('KZ_ERR_MALFORMED', `reply output ${JSON.stringify(name.slice(0, 64))} is not a valid tensor: ${why}`);
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
