/** Kizuna's version, from its package.json ('unknown' if that cannot be read). */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function kizunaVersion(): string {
  if (cached === undefined) {
    try {
      cached = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      cached = 'unknown';
    }
  }
  return cached;
}
