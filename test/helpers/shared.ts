/** Finds files of the shared folder of real models and samples (see DATA.md). */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: this file compiles to <root>/dist/test/helpers/shared.js. */
export const repoRoot = resolve(fileURLToPath(new URL('../../../', import.meta.url)));

/** The shared folder: $KIZUNA_SHARED, else <root>/../shared. */
export const sharedRoot = resolve(process.env.KIZUNA_SHARED ?? join(repoRoot, '..', 'shared'));

/** Absolute path of a shared file, or undefined when it is missing (tests then skip, naming it). */
export function sharedPath(...parts: string[]): string | undefined {
  const path = join(sharedRoot, ...parts);
  return existsSync(path) ? path : undefined;
}

/** The path a test would have used, for its skip message. */
export function expectedSharedPath(...parts: string[]): string {
  return join(sharedRoot, ...parts);
}
