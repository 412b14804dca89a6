/**
 * `kizuna models pull NAME`: downloads a catalogue model (and its labels file) into this board's
 * content-addressed model store (<data dir>/store, models/cas.ts), or into a plain model folder
 * with --dir. Each file is verified by sha256 before it appears; the manifest is written last, so
 * an agent never sees a model whose bytes are not all there and checked.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KizunaError } from '../../mesh/errors.js';
import { Cas } from '../../models/cas.js';
import { findEntry, formatBytes as mb, loadCatalog, sourceUrl, type CatalogEntry, type VerifiedSource } from '../../models/catalog.js';
import { download, type DownloadResult, type Progress } from '../../models/download.js';
import { loadConfig } from '../config.js';
import { storeDir } from '../distribution.js';

const HELP = `usage: kizuna models pull NAME [options]

Downloads a model of the catalogue (kizuna models catalog) into this board's model store
(<data dir>/store: the model file by its sha256, the manifest and its labels), or with --dir
into a plain model folder: NAME.onnx, NAME.json and NAME.labels.txt when it has labels. Each
file is checked against its sha256 before it appears; wrong bytes are deleted
(KZ_ERR_MODEL_INTEGRITY). An interrupted download resumes where it stopped (HTTP Range), in
this run or the next.

  --dir DIR        a plain model folder instead of the store (serve it: kizuna agent --models DIR)
  --base-url URL   download from a mirror laid out like the shared folder (URL/models/...)
                   instead of the public URLs; also KIZUNA_MODELS_BASE_URL
  --retries N      further attempts when a transfer is cut (default 3)
  --data-dir DIR   the board's data directory (default ~/.kizuna)
  --config FILE    the agent's JSON config file (for its data directory)`;

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
  const baseUrl = values['base-url'] ?? (process.env.KIZUNA_MODELS_BASE_URL || undefined);
  const model = { label: `${entry.name}.onnx`, source: entry.model, url: sourceUrl(entry.model, baseUrl) };
  const labels = entry.labels && { label: `${entry.name}.labels.txt`, source: entry.labels, url: sourceUrl(entry.labels, baseUrl) };
  const version = `${entry.name}@${entry.manifest.version}`;

  if (values.dir !== undefined) {
    const dir = path.resolve(values.dir);
    await fs.mkdir(dir, { recursive: true });
    let transferred = await fetchOne(model, path.join(dir, model.label), retries);
    if (labels) transferred += await fetchOne(labels, path.join(dir, labels.label), retries);
    const manifest = { ...entry.manifest, file: model.label, ...(labels ? { labelsFile: labels.label } : {}) };
    const tmp = path.join(dir, `.${entry.name}.json.tmp`);
    await fs.writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
    await fs.rename(tmp, path.join(dir, `${entry.name}.json`));
    const what = [model.label, ...(labels ? [labels.label] : []), `${entry.name}.json`].join(', ');
    console.log(`pulled ${version} into ${dir} (${what}; ${done(transferred)})`);
    return 0;
  }

  const config = loadConfig({ flags: { ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}), ...(values.config ? { config: values.config } : {}) } });
  const cas = await Cas.open(storeDir(config.dataDir));
  // The blob appears under its sha256 only once verified (the partial file beside it is hidden).
  let transferred = await fetchOne(model, cas.blobPath(entry.model.sha256), retries);
  await fs.chmod(cas.blobPath(entry.model.sha256), 0o444);
  let labelsText: string | undefined;
  if (labels) {
    const tmp = path.join(cas.root, 'partial', `labels.${labels.source.sha256}.txt`);
    transferred += await fetchOne(labels, tmp, retries);
    labelsText = await fs.readFile(tmp, 'utf8');
    await fs.rm(tmp, { force: true });
  }
  const stored = await cas.putManifest({ manifest: entry.manifest, ...(labelsText !== undefined ? { labels: labelsText } : {}) });
  console.log(`pulled ${version} into the model store ${cas.root} (${stored.key}, blob ${entry.model.sha256.slice(0, 16)}; ${done(transferred)})`);
  return 0;
}

const done = (transferred: number) => (transferred ? `${mb(transferred)} downloaded` : 'already there, verified');

async function fetchOne({ label, source, url }: { label: string; source: VerifiedSource; url: string }, dest: string, retries: number): Promise<number> {
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
