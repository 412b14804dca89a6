/**
 * The dashboard's files: a fixed list, read once from the package's `agent/dashboard/public/`
 * folder into memory. Nothing else on disk is reachable (no directory listing, no path from the
 * URL ever meets the file system).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** From dist/agent/dashboard/ (compiled) back to the source folder the package ships. */
export const PUBLIC_DIR = fileURLToPath(new URL('../../../agent/dashboard/public/', import.meta.url));

const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/charts.js': { file: 'charts.js', type: 'text/javascript; charset=utf-8' },
  '/dom.js': { file: 'dom.js', type: 'text/javascript; charset=utf-8' },
  '/playground.js': { file: 'playground.js', type: 'text/javascript; charset=utf-8' },
  '/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
};

export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
}

export async function loadPublic(dir = PUBLIC_DIR): Promise<Map<string, StaticFile>> {
  const out = new Map<string, StaticFile>();
  for (const [url, { file, type }] of Object.entries(FILES)) {
    const body = await fs.readFile(path.join(dir, file));
    out.set(url, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return out;
}
