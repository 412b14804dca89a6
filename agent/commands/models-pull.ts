/**
 * `kizuna models pull NAME`: downloads a catalogue model (and its labels file) into a model
 * folder, each file verified by sha256 before it appears; the manifest is written last, so an
 * agent never sees a model whose bytes are not all there and checked.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KizunaError } from '../../mesh/errors.js';
import { findEntry, formatBytes as mb, loadCatalog, sourceUrl, type CatalogEntry, type VerifiedSource } from '../../models/catalog.js';
import { download, type DownloadResult, type Progress } from '../../models/download.js';
import { BUILTIN_MODELS_DIR, loadConfig } from '../config.js';

const HELP = `usage: kizuna models pull NAME [options]

Downloads a model of the catalogue (kizuna models catalog) into a model folder: NAME.onnx,
NAME.json (its manifest) and NAME.labels.txt when it has a labels file. Each file is checked
against its sha256 before it appears; wrong bytes are deleted (KZ_ERR_MODEL_INTEGRITY). An
interrupted download resumes where it stopped (HTTP Range), in this run or the next.

  --dir DIR        the model folder (default: the first --models folder of the agent's
                   configuration that is not the built-in one, else <data dir>/models)
  --base-url URL   download from a mirror laid out like the shared folder (URL/models/...)
                   instead of the public URLs; also KIZUNA_MODELS_BASE_URL
  --retries N      further attempts when a transfer is cut (default 3)
  --data-dir DIR   the agent's data directory (default ~/.kizuna)
  --config FILE    the agent's JSON config file (for its data dir and model folders)

Serve what you pulled with: kizuna agent --models <that folder>`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      dir: { type: 'string' },
      'base-url': { type: 'string' },
      retries: { type: 'string' },
      'data-dir': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [name, ...extra] = positionals;
  if (values.help || !name || extra.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const retries = values.retries === undefined ? 3 : Number(values.retries);
  if (!Number.isInteger(retries) || retries < 0 || retries > 100) throw new KizunaError('KZ_ERR_CONFIG', `--retries ${values.retries}: a whole number from 0 to 100`);
  const entry = findEntry(await loadCatalog(), name);
  const dir = path.resolve(values.dir ?? defaultDir(values['data-dir'], values.config));
  const baseUrl = values['base-url'] ?? (process.env.KIZUNA_MODELS_BASE_URL || undefined);
  const files = pullFiles(entry).map((f) => ({ ...f, url: sourceUrl(f.source, baseUrl) }));
  await fs.mkdir(dir, { recursive: true });

  let transferred = 0;
  for (const f of files) transferred += await fetchOne(f.url, f.source, path.join(dir, f.file), retries);
  const manifest = { ...entry.manifest, file: files[0]!.file, ...(entry.labels ? { labelsFile: files[1]!.file } : {}) };
  const manifestPath = path.join(dir, `${entry.name}.json`);
  const tmp = path.join(dir, `.${entry.name}.json.tmp`);
  await fs.writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await fs.rename(tmp, manifestPath);
  const what = [...files.map((f) => f.file), path.basename(manifestPath)].join(', ');
  console.log(`pulled ${entry.name}@${entry.manifest.version} into ${dir} (${what}; ${transferred ? `${mb(transferred)} downloaded` : 'already there, verified'})`);
  return 0;
}

/** The files a pull writes, the model first: NAME.onnx, then NAME.labels.txt. */
function pullFiles(entry: CatalogEntry): { file: string; source: VerifiedSource }[] {
  return [{ file: `${entry.name}.onnx`, source: entry.model }, ...(entry.labels ? [{ file: `${entry.name}.labels.txt`, source: entry.labels }] : [])];
}

async function fetchOne(url: string, source: VerifiedSource, dest: string, retries: number): Promise<number> {
  const label = path.basename(dest);
  const report = progressReporter(label);
  console.error(`${label}: ${url}`);
  const r = await download({ url, dest, sha256: source.sha256, size: source.size, retries, onProgress: report.update });
  if (r.requests === 0) console.error(`${label}: already there, sha256 verified`);
  else report.done(r);
  return r.transferred;
}

/** Progress on stderr: one updating line on a terminal, a line every 2 s otherwise. */
function progressReporter(label: string) {
  const tty = process.stderr.isTTY;
  let shown = -Infinity;
  return {
    update(p: Progress) {
      const now = performance.now();
      if (now - shown < (tty ? 100 : 2000)) return;
      shown = now;
      const rate = p.elapsedMs > 0 ? (p.received - p.resumedFrom) / (p.elapsedMs / 1000) : 0;
      const text = `${label}: ${mb(p.received)} of ${mb(p.total)} (${Math.floor((100 * p.received) / p.total)}%) ${mb(rate)}/s${p.attempt ? ` (attempt ${p.attempt + 1})` : ''}`;
      process.stderr.write(tty ? `\r${text}\x1b[K` : `${text}\n`);
    },
    done(r: DownloadResult) {
      const rate = r.ms > 0 ? r.transferred / (r.ms / 1000) : 0;
      const how = [r.resumedFrom > 0 ? `resumed at ${mb(r.resumedFrom)}` : '', r.requests > 1 ? `${r.requests} requests` : ''].filter(Boolean).join(', ');
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}${label}: ${mb(r.transferred)} in ${(r.ms / 1000).toFixed(2)} s, ${mb(rate)}/s (100%${how ? `; ${how}` : ''}), sha256 verified\n`);
    },
  };
}


/** The first configured model folder that is not the package's own, else <data dir>/models. */
function defaultDir(dataDir: string | undefined, config: string | undefined): string {
  const cfg = loadConfig({ flags: { ...(dataDir ? { dataDir } : {}), ...(config ? { config } : {}) } });
  const builtin = path.resolve(BUILTIN_MODELS_DIR);
  return cfg.models.map((m) => path.resolve(m)).find((m) => m !== builtin) ?? path.join(cfg.dataDir, 'models');
}
