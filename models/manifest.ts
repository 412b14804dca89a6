/**
 * The model manifest: one JSON file beside each .onnx file (`digits.onnx` + `digits.json`).
 * This schema is the single source of truth; the TypeScript types are derived from it.
 */
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { KizunaError } from '../mesh/errors.js';
import { DTYPES, type DType } from '../mesh/tensor.js';
import { detectInputSize, gridAnchors } from './detect.js';

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

/**
 * A single-stage detector's decoding (models/detect.ts), as data: a new model of a known family
 * (another size, input size or class list) needs a manifest, not code. Boxes come back in the
 * original image's pixels (through the pre-processing's resize and padding), or in model-input
 * pixels for tensor requests. Defaults: DETECT_DEFAULTS in detect.ts.
 */
export const DetectPostprocessSchema = Type.Object(
  {
    kind: Type.Literal('detect'),
    /**
     * How the output is laid out and decoded. yolox: [N, anchors, 5 + classes], one anchor per
     * grid cell of each stride (row by row, strides in order), each [cx, cy, w, h, obj, classes...]
     * relative to its cell: cx = (x + col) * stride, w = exp(w) * stride; obj and class scores are
     * probabilities (sigmoid applied in the graph, as YOLOX exports do); score = obj * class.
     */
    family: Type.Literal('yolox'),
    output: Type.String({ minLength: 1 }),
    /** Grid strides in input pixels, in the output's order (YOLOX: [8, 16, 32]). */
    strides: Type.Array(Type.Integer({ minimum: 1, maximum: 1024 }), { minItems: 1, maxItems: 8 }),
    /** Model input size in pixels; defaults to the image pre-processing's width and height. */
    width: Type.Optional(Type.Integer({ minimum: 1, maximum: 8192 })),
    height: Type.Optional(Type.Integer({ minimum: 1, maximum: 8192 })),
    /** A box is kept when its score (obj x class) is above this (default 0.3). */
    scoreThreshold: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** Non-maximum suppression, per class: a box overlapping a better one of its class by more than this IoU goes (default 0.45). */
    iouThreshold: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    /** At most this many boxes per image, best first (default 100). */
    maxDetections: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
  },
  { additionalProperties: false },
);

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
    postprocess: Type.Optional(Type.Union([ClassifyPostprocessSchema, DetectPostprocessSchema, NonePostprocessSchema])),
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
export type DetectPostprocess = Static<typeof DetectPostprocessSchema>;
export type Manifest = Static<typeof ManifestSchema>;

const checkManifest = TypeCompiler.Compile(ManifestSchema);
/** A union's error only says "Expected union value": a recipe is checked again against its own kind's schema. */
const checkPostprocess: Record<string, ReturnType<typeof TypeCompiler.Compile>> = {
  classify: TypeCompiler.Compile(ClassifyPostprocessSchema),
  detect: TypeCompiler.Compile(DetectPostprocessSchema),
};

/** The value as a Manifest, or KZ_ERR_MANIFEST naming `where` and the first schema error. */
export function parseManifest(value: unknown, where: string): Manifest {
  if (checkManifest.Check(value)) {
    const why = value.postprocess?.kind === 'detect' ? detectProblem(value, value.postprocess) : undefined;
    if (why) throw new KizunaError('KZ_ERR_MANIFEST', `${where}: /postprocess ${why}`);
    return value;
  }
  let first = [...checkManifest.Errors(value)][0];
  const post = (value as { postprocess?: { kind?: unknown } } | null)?.postprocess;
  const byKind = first?.path === '/postprocess' && typeof post?.kind === 'string' ? checkPostprocess[post.kind] : undefined;
  const precise = byKind && [...byKind.Errors(post)][0];
  if (precise) first = { ...precise, path: `/postprocess${precise.path}` };
  throw new KizunaError('KZ_ERR_MANIFEST', `${where}: ${first?.path || '/'} ${first?.message ?? 'invalid'}`);
}

/** What makes a detect recipe unusable with its manifest (no input size, an output that cannot match its grid), or undefined. */
function detectProblem(manifest: Manifest, recipe: DetectPostprocess): string | undefined {
  const out = manifest.outputs.find((o) => o.name === recipe.output);
  if (!out) return `names output "${recipe.output}", which the manifest does not list`;
  const size = detectInputSize(manifest, recipe);
  if (!size) return 'needs width and height (or an image pre-processing recipe to take them from)';
  const anchors = gridAnchors(size.width, size.height, recipe.strides);
  if (anchors === 0) return `has no grid cell: strides ${recipe.strides.join(',')} are larger than ${size.width}x${size.height}`;
  if (out.shape.length < 2 || out.shape.length > 3) return `output "${out.name}" must be [N, anchors, 5 + classes]`;
  const [a, d] = out.shape.slice(-2);
  if (typeof a === 'number' && a !== anchors) return `output "${out.name}" has ${a} anchors; strides ${recipe.strides.join(',')} over ${size.width}x${size.height} make ${anchors}`;
  if (typeof d === 'number' && d < 6) return `output "${out.name}" has ${d} values per anchor; yolox needs 5 + at least one class`;
  return undefined;
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
