/**
 * Sample inputs for calibration and comparison, from files: images through a manifest's image
 * pre-processing (the same code the agent runs), or .npy arrays (float32, C order) fed as they
 * are to the model's first input. A folder gives its image and .npy files in name order.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { KizunaError } from '../../mesh/errors.js';
import type { Tensor } from '../../mesh/tensor.js';
import type { Manifest } from '../manifest.js';
import { preprocessImages } from '../preprocess.js';
import { DataType, graphOf, initializerMap, toNumber, type IntLike, type ModelProto } from '../onnx/model.js';
import type { Feeds } from './report.js';

const IMAGE = /\.(jpe?g|png|webp|gif|tiff?|avif)$/i;
const NPY = /\.npy$/i;
/** Far above any camera frame; preprocessing refuses bigger images anyway. */
const MAX_PIXELS = 64e6;

/** The files a --samples argument names: the file itself, or a folder's images and .npy files. */
export async function sampleFiles(where: string): Promise<string[]> {
  const stat = await fs.stat(where).catch((err: Error) => {
    throw new KizunaError('KZ_ERR_CONFIG', `samples ${where}: ${err.message}`);
  });
  if (!stat.isDirectory()) return [where];
  const names = (await fs.readdir(where)).filter((n) => IMAGE.test(n) || NPY.test(n)).sort();
  if (!names.length) throw new KizunaError('KZ_ERR_CONFIG', `samples ${where}: no image or .npy file in the folder`);
  return names.map((n) => path.join(where, n));
}

/** A .npy file (format 1.x-3.x, little-endian float32, C order) as a tensor. */
export function parseNpy(bytes: Uint8Array, where: string): Tensor {
  const bad = (why: string): KizunaError => new KizunaError('KZ_ERR_CONFIG', `${where}: ${why}`);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== 'NUMPY') throw bad('not a .npy file');
  const major = bytes[6] as number;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (descr !== '<f4') throw bad(`dtype ${descr}: only little-endian float32 ('<f4') is read`);
  if (fortran) throw bad('Fortran order: save the array in C order');
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(start + headerLen);
  if (body.byteLength < count * 4) throw bad(`${body.byteLength} data bytes for shape (${shape.join(', ')})`);
  return { dtype: 'float32', shape, data: new Float32Array(Uint8Array.from(body.subarray(0, count * 4)).buffer) };
}

/**
 * One Feeds per file, each the value of the model input `input`. Images need the manifest's
 * image pre-processing; .npy arrays are taken as they are.
 */
export async function loadSamples(files: readonly string[], input: string, manifest?: Manifest): Promise<Feeds[]> {
  const feeds: Feeds[] = [];
  for (const file of files) {
    const bytes = await fs.readFile(file);
    if (NPY.test(file)) {
      feeds.push({ [input]: parseNpy(bytes, file) });
      continue;
    }
    if (!manifest?.preprocess) throw new KizunaError('KZ_ERR_CONFIG', `${file} is an image: give --manifest with an image preprocess to turn it into the model's input`);
    const { tensor } = await preprocessImages([bytes], manifest.preprocess, { maxPixels: MAX_PIXELS });
    feeds.push({ [input]: tensor });
  }
  return feeds;
}

/**
 * Inputs made up from the model's declared inputs (symbolic dimensions as 1, values uniform in
 * [0, 1) from a fixed seed): enough to time a model, meaningless for agreement. Undefined when
 * an input is not float32.
 */
export function syntheticFeeds(model: ModelProto): Feeds | undefined {
  const graph = graphOf(model);
  const inits = initializerMap(graph);
  const feeds: Feeds = {};
  let seed = 0x6b697a75;
  const random = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  for (const v of graph.input ?? []) {
    if (!v.name || inits.has(v.name)) continue;
    const t = v.type?.tensorType;
    if (t?.elemType !== DataType.FLOAT) return undefined;
    const shape = (t.shape?.dim ?? []).map((d) => (d.dimValue != null && toNumber(d.dimValue as IntLike) > 0 ? toNumber(d.dimValue as IntLike) : 1));
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map(random);
    feeds[v.name] = { dtype: 'float32', shape, data };
  }
  return feeds;
}
