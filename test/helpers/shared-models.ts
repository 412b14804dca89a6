/**
 * Serves the shared folder's real models: a temp model folder holds manifests from
 * models/catalog/ and the shared files, hard-linked (copied where a link cannot be made), since a
 * model store only loads files inside its own folder. Nothing is copied into the repository.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expectedSharedPath, repoRoot, sharedPath } from './shared.js';

const WHERE: Record<string, { model: string[]; labels: string[] }> = {
  'mobilenetv2-int8': { model: ['models', 'mobilenetv2-12-int8', 'mobilenetv2-12-int8.onnx'], labels: ['samples', 'imagenet', 'Labels.txt'] },
  'mobilenetv2-fp32': { model: ['models', 'mobilenetv2-12-fp32', 'mobilenetv2-12-dequant-fp32.onnx'], labels: ['samples', 'imagenet', 'Labels.txt'] },
  'yolox-nano': { model: ['models', 'yolox-nano', 'yolox_nano.onnx'], labels: ['models', 'yolox-nano', 'coco_classes.txt'] },
};

export type SharedModels = { dir: string; remove(): Promise<void> } | { missing: string };

export async function sharedModelsDir(names: (keyof typeof WHERE)[]): Promise<SharedModels> {
  for (const name of names) {
    const where = WHERE[name]!;
    for (const parts of [where.model, where.labels]) if (!sharedPath(...parts)) return { missing: expectedSharedPath(...parts) };
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-shared-models-'));
  for (const name of names) {
    const where = WHERE[name]!;
    const entry = JSON.parse(await fs.readFile(path.join(repoRoot, 'models', 'catalog', `${name}.json`), 'utf8'));
    entry.file = await place(dir, sharedPath(...where.model)!);
    entry.labelsFile = await place(dir, sharedPath(...where.labels)!);
    await fs.writeFile(path.join(dir, `${name}.json`), JSON.stringify(entry, null, 2));
  }
  return { dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}

/** `from` inside `dir` under its own name: a hard link, or a copy across file systems. */
async function place(dir: string, from: string): Promise<string> {
  const name = path.basename(from);
  const to = path.join(dir, name);
  try {
    await fs.link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return name; // two models share a labels file
    await fs.copyFile(from, to);
  }
  return name;
}
