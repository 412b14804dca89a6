/** JSON schemas of the wire messages (docs/PROTOCOL.md describes the same fields for people). */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { DTYPES, type DType } from './tensor.js';

const DTypeSchema = Type.Union((Object.keys(DTYPES) as DType[]).map((d) => Type.Literal(d)));
const Shape = Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 8 });

/** A tensor in JSON: numbers in `data`, or little-endian bytes in base64 `b64`. */
export const JsonTensorSchema = Type.Object(
  {
    dtype: DTypeSchema,
    shape: Shape,
    data: Type.Optional(Type.Array(Type.Union([Type.Number(), Type.Boolean()]))),
    b64: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

/** A tensor inside a KZB1 frame header: its bytes are in the frame's data section. */
export const FrameTensorSchema = Type.Object(
  { dtype: DTypeSchema, shape: Shape, offset: Type.Integer({ minimum: 0 }), length: Type.Integer({ minimum: 0 }) },
  { additionalProperties: false },
);

export const RequestOptions = {
  /** Only this version of the model (any loaded version when absent). */
  version: Type.Optional(Type.String({ maxLength: 32 })),
  /** How many classes to return for classifiers (the manifest's default when absent). */
  top_k: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  /** Send the raw output tensors too (default true). */
  raw_outputs: Type.Optional(Type.Boolean()),
  /** Reply as JSON or as a KZB1 frame (default: binary for binary requests, JSON otherwise). */
  reply: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('binary')])),
};

/** Input names are any strings of up to this many characters (UTF-16 code units). */
export const INPUT_NAME_MAX_LENGTH = 256;

/**
 * `inputs`: input name -> tensor. Not a Type.Record of the tensor schema: TypeBox compiles a Record
 * to patternProperties "^(.*)$", which drops the key's maxLength and never checks the value of a
 * key holding a line terminator ('.' does not match it). So this schema only says "an object", and
 * decodeRequestObject/decodeFrameRequest check each name (checkInputName) and each tensor
 * (checkJsonTensor/checkFrameTensor) themselves.
 */
const Inputs = (tensor: 'JsonTensorSchema' | 'FrameTensorSchema') =>
  Type.Record(Type.String(), Type.Unknown(), { description: `input name (up to ${INPUT_NAME_MAX_LENGTH} characters) -> ${tensor}` });

export const JsonRequestSchema = Type.Object(
  {
    inputs: Type.Optional(Inputs('JsonTensorSchema')),
    image: Type.Optional(Type.String()),
    images: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    ...RequestOptions,
  },
  { additionalProperties: false },
);

export const FrameRequestSchema = Type.Object(
  { inputs: Inputs('FrameTensorSchema'), ...RequestOptions },
  { additionalProperties: false },
);

export const TimingsSchema = Type.Object({
  queue_ms: Type.Number(),
  pre_ms: Type.Number(),
  infer_ms: Type.Number(),
  post_ms: Type.Number(),
  total_ms: Type.Number(),
  /** Part of queue_ms: waiting for the model to load on this board (present only then). */
  load_ms: Type.Optional(Type.Number()),
});

export type JsonTensor = Static<typeof JsonTensorSchema>;
export type FrameTensor = Static<typeof FrameTensorSchema>;
export type JsonRequest = Static<typeof JsonRequestSchema>;
export type FrameRequest = Static<typeof FrameRequestSchema>;
export type Timings = Static<typeof TimingsSchema>;

export const checkJsonRequest = TypeCompiler.Compile(JsonRequestSchema);
export const checkFrameRequest = TypeCompiler.Compile(FrameRequestSchema);
export const checkJsonTensor = TypeCompiler.Compile(JsonTensorSchema);
export const checkFrameTensor = TypeCompiler.Compile(FrameTensorSchema);

/** The first schema error as one readable line ("/inputs/x/dtype: Expected union value"), its path and message. */
export function firstError(
  check: { Errors(value: unknown): Iterable<{ path: string; message: string }> },
  value: unknown,
): { path: string; text: string; message: string } {
  for (const e of check.Errors(value)) return { path: e.path, text: `${e.path || '/'}: ${e.message}`, message: e.message };
  return { path: '', text: 'invalid', message: 'invalid' };
}

/**
 * Whether a parsed JSON value nests arrays/objects more than `limit` levels deep (an object or array
 * is level 1, its object or array members level 2, ...). It walks one level at a time, never
 * recursing, so asking about a value of any depth is safe; values that pass can then be walked,
 * copied or serialised recursively.
 */
export function nestedDeeperThan(value: unknown, limit: number): boolean {
  let level: object[] = typeof value === 'object' && value !== null ? [value] : [];
  for (let depth = 1; level.length > 0; depth++) {
    if (depth > limit) return true;
    const next: object[] = [];
    for (const v of level) {
      const members: unknown[] = Array.isArray(v) ? v : Object.values(v);
      for (const m of members) if (typeof m === 'object' && m !== null) next.push(m);
    }
    level = next;
  }
  return false;
}
