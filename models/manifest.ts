/**
 * The model manifest: one JSON file beside each .onnx file (`digits.onnx` + `digits.json`).
 * This schema is the single source of truth; the TypeScript types are derived from it.
 */
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError } from '../mesh/errors.js';
import { DTYPES, type DType } from '../mesh/tensor.js';

const Name = Type.String({ pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$' });
const DTypeName = Type.Union((Object.keys(DTYPES) as DType[]).map((d) => Type.Literal(d)));
/** A dimension is a fixed size or a symbolic name (a dynamic axis, usually the batch "N"). */
const Dim = Type.Union([Type.Integer({ minimum: 0 }), Type.String({ minLength: 1, maxLength: 32 })]);

export const TensorSpecSchema = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 256 }), dtype: DTypeName, shape: Type.Array(Dim, { maxItems: 8 }) },
  { additionalProperties: false },
);

export const ImagePreprocessSchema = Type.Object(
  {
    kind: Type.Literal('image'),
    /** The model input that receives the image batch. */
    input: Type.String({ minLength: 1 }),
    width: Type.Integer({ minimum: 1, maximum: 8192 }),
    height: Type.Integer({ minimum: 1, maximum: 8192 }),
    /** fill: stretch; cover: scale and centre-crop; contain: scale and centre-pad; letterbox: scale and pad right/bottom. */
    resize: Type.Union([Type.Literal('fill'), Type.Literal('cover'), Type.Literal('contain'), Type.Literal('letterbox')]),
    /** Value of the padding for contain and letterbox, in 0..255 units. */
    pad: Type.Optional(Type.Number({ minimum: 0, maximum: 255 })),
    channels: Type.Union([Type.Literal('gray'), Type.Literal('rgb'), Type.Literal('bgr')]),
    layout: Type.Union([Type.Literal('nchw'), Type.Literal('nhwc')]),
    /** value = (pixel / scale - mean[c]) / std[c]; scale 1 keeps raw 0..255, 255 maps to 0..1. */
    scale: Type.Number({ exclusiveMinimum: 0 }),
    mean: Type.Optional(Type.Array(Type.Number(), { minItems: 1, maxItems: 3 })),
    std: Type.Optional(Type.Array(Type.Number({ exclusiveMinimum: 0 }), { minItems: 1, maxItems: 3 })),
    /** Inverts gray levels (for models trained on white-on-black digits fed black-on-white scans). */
    invert: Type.Optional(Type.Boolean()),
    dtype: Type.Optional(Type.Union([Type.Literal('float32'), Type.Literal('uint8')])),
  },
  { additionalProperties: false },
);

export const ClassifyPostprocessSchema = Type.Object(
  {
    kind: Type.Literal('classify'),
    output: Type.String({ minLength: 1 }),
    /** Apply softmax to the output first (false when the model already outputs probabilities). */
    softmax: Type.Boolean(),
    topK: Type.Integer({ minimum: 1, maximum: 1000 }),
  },
  { additionalProperties: false },
);

export const NonePostprocessSchema = Type.Object({ kind: Type.Literal('none') }, { additionalProperties: false });

export const ManifestSchema = Type.Object(
  {
    name: Name,
    version: Type.String({ pattern: '^[0-9A-Za-z.+-]{1,32}$' }),
    /** The .onnx file, inside the manifest's folder: a relative path, no "..", no symlink out (see unsafePath). */
    file: Type.String({ minLength: 1, maxLength: 4096 }),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    license: Type.Optional(Type.String({ maxLength: 200 })),
    inputs: Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 }),
    outputs: Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 }),
    preprocess: Type.Optional(ImagePreprocessSchema),
    postprocess: Type.Optional(Type.Union([ClassifyPostprocessSchema, NonePostprocessSchema])),
    /** Class labels, by output index. */
    labels: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100000 })),
    /** Or a text file of labels, one per line ("name" or "index,name"), inside the folder like `file`. */
    labelsFile: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  },
  { additionalProperties: false },
);

export type TensorSpec = Static<typeof TensorSpecSchema>;
export type ImagePreprocess = Static<typeof ImagePreprocessSchema>;
export type ClassifyPostprocess = Static<typeof ClassifyPostprocessSchema>;
export type Manifest = Static<typeof ManifestSchema>;

const checkManifest = TypeCompiler.Compile(ManifestSchema);

/** The value as a Manifest, or KZ_ERR_MANIFEST naming `where` and the first schema error. */
export function parseManifest(value: unknown, where: string): Manifest {
  if (checkManifest.Check(value)) return value;
  const first = [...checkManifest.Errors(value)][0];
  throw new KizunaError('KZ_ERR_MANIFEST', `${where}: ${first?.path || '/'} ${first?.message ?? 'invalid'}`);
}

/** Every path a manifest names (each must stay inside the manifest's folder). */
export function manifestPaths(manifest: Manifest): { what: string; name: string }[] {
  return [{ what: 'model file', name: manifest.file }, ...(manifest.labelsFile ? [{ what: 'labels file', name: manifest.labelsFile }] : [])];
}

/**
 * Why a path a manifest names could leave its folder by its text alone (absolute, a ".."
 * segment, a NUL), or undefined. Symlinks are the store's to check, on the disk.
 */
export function unsafePath(name: string): string | undefined {
  if (name.includes('\0')) return 'contains a NUL character';
  if (path.posix.isAbsolute(name) || path.win32.isAbsolute(name)) return 'is an absolute path';
  if (name.split(/[\\/]/).includes('..')) return 'climbs out with ".."';
  return undefined;
}
