/**
 * One inference for one model, in three timed steps the worker reports separately:
 * prepare (validate tensors or pre-process images), infer (the engine), answer (post-process).
 * Knows nothing of MQTT.
 */
import { KizunaError } from '../mesh/errors.js';
import type { RequestBody } from '../mesh/messages.js';
import type { Tensor } from '../mesh/tensor.js';
import type { TensorSpec } from './manifest.js';
import type { LoadedModel } from './store.js';
import { preprocessImages, type ImageSource } from './preprocess.js';
import { classify } from './postprocess.js';
import { detect, detectInputSize } from './detect.js';

export interface PipelineLimits {
  maxImagePixels: number;
  maxBatch: number;
}

export interface Prepared {
  feeds: Record<string, Tensor>;
  batch: number;
  /** For images: how each batch item's model pixels map back to its original image. */
  sources?: ImageSource[];
}

export interface AnswerOptions {
  /** Classifiers: how many classes each answer lists (the recipe's topK when absent). */
  topK?: number;
  /** Detectors: boxes go back to these images' pixels (Prepared.sources); without, model-input pixels. */
  sources?: readonly ImageSource[];
}

export async function prepare(model: LoadedModel, body: RequestBody, limits: PipelineLimits): Promise<Prepared> {
  const { manifest } = model;
  if (body.kind === 'images') {
    const recipe = manifest.preprocess;
    if (!recipe) throw new KizunaError('KZ_ERR_NOT_IMAGE_MODEL', `model ${manifest.name} takes tensors, not images`);
    if (body.images.length > limits.maxBatch) {
      throw new KizunaError('KZ_ERR_TOO_MANY_ELEMENTS', `${body.images.length} images is over the batch limit of ${limits.maxBatch}`);
    }
    const batchDim = manifest.inputs.find((i) => i.name === recipe.input)?.shape[0];
    if (typeof batchDim === 'number' && batchDim !== body.images.length) {
      throw new KizunaError('KZ_ERR_BAD_SHAPE', `model ${manifest.name} takes exactly ${batchDim} image(s) per request`);
    }
    const { tensor, sources } = await preprocessImages(body.images, recipe, { maxPixels: limits.maxImagePixels });
    return { feeds: { [recipe.input]: tensor }, batch: body.images.length, sources };
  }
  const feeds = body.inputs;
  const known = new Set(manifest.inputs.map((i) => i.name));
  for (const name of Object.keys(feeds)) {
    if (!known.has(name)) throw new KizunaError('KZ_ERR_MISSING_INPUT', `model ${manifest.name} has no input "${name}" (inputs: ${[...known].join(', ')})`);
  }
  const dims = new Map<string, number>();
  for (const spec of manifest.inputs) {
    const t = feeds[spec.name];
    if (!t) throw new KizunaError('KZ_ERR_MISSING_INPUT', `input "${spec.name}" is missing`);
    checkTensor(spec, t, dims);
  }
  const first = feeds[manifest.inputs[0]!.name]!;
  return { feeds, batch: first.shape[0] ?? 1 };
}

/** Checks dtype and shape; symbolic dims ("N") must agree across inputs. */
function checkTensor(spec: TensorSpec, t: Tensor, dims: Map<string, number>): void {
  if (t.dtype !== spec.dtype) throw new KizunaError('KZ_ERR_BAD_DTYPE', `input "${spec.name}" wants ${spec.dtype}, got ${t.dtype}`);
  const want = JSON.stringify(spec.shape);
  if (t.shape.length !== spec.shape.length) throw new KizunaError('KZ_ERR_BAD_SHAPE', `input "${spec.name}" wants shape ${want}, got ${JSON.stringify(t.shape)}`);
  spec.shape.forEach((d, i) => {
    const got = t.shape[i]!;
    if (typeof d === 'number' ? got !== d : (dims.get(d) ?? got) !== got) {
      throw new KizunaError('KZ_ERR_BAD_SHAPE', `input "${spec.name}" wants shape ${want}, got ${JSON.stringify(t.shape)}`);
    }
    if (typeof d === 'string') dims.set(d, got);
  });
}

export async function infer(model: LoadedModel, prepared: Prepared): Promise<Record<string, Tensor>> {
  return model.session.run(prepared.feeds);
}

/**
 * The post-processed answer per batch item, or undefined when the model has no recipe:
 * a classifier's best classes, or a detector's list of boxes.
 */
export function answer(model: LoadedModel, outputs: Record<string, Tensor>, options: AnswerOptions = {}): unknown[] | undefined {
  const { manifest } = model;
  const recipe = manifest.postprocess;
  if (!recipe || recipe.kind === 'none') return undefined;
  const out = outputs[recipe.output];
  if (!out) throw new KizunaError('KZ_ERR_INFERENCE', `model produced no output "${recipe.output}"`);
  if (recipe.kind === 'classify') return classify(out, recipe, model.labels, options.topK);
  const size = detectInputSize(manifest, recipe);
  // parseManifest refuses a detect recipe without a size; this guards a hand-built manifest.
  if (!size) throw new KizunaError('KZ_ERR_MANIFEST', `model ${manifest.name}: its detect recipe has no input size`);
  return detect(out, recipe, size, model.labels, options.sources);
}
