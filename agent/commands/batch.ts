/**
 * `kizuna batch MODEL DIR|GLOB`: every image of a folder through the mesh, results as JSON lines
 * in input order, with a progress bar (done, rate, ETA, each board's share). Interrupted, it keeps
 * the lines written so far; run again with the same --out and it goes on where it stopped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { appLogin, LOGIN_HELP, LOGIN_OPTIONS } from './app-login.js';
import { KizunaClient } from '../../mesh/client.js';
import type { BatchProgress } from '../../mesh/batch.js';
import { batchSummary } from './answers.js';

const HELP = `usage: kizuna batch MODEL DIR|GLOB [options]

Runs MODEL on every image (jpg, jpeg, png, webp, gif, tif, tiff) of DIR, or of the files matching
GLOB (a * in the file name, e.g. 'photos/*.jpg'), across the mesh. Writes one JSON line per image,
in order: {"file", "index", "agent", "label", "score", "answers"} ("objects" instead of label and
score for a detector) or {"file", "index", "error"}.

  --out FILE       where to write the JSON lines (default: standard output); an existing FILE is
                   resumed: the images it already has are skipped
  --broker URL     an agent of the mesh; repeat for several (default mqtt://127.0.0.1:1883, or $KIZUNA_URL)
  --mesh NAME      mesh name (default home, or $KIZUNA_MESH)
  --job-size N     most images per job (default 1024); the next job is sent while one runs
  --top-k N        classes per answer
${LOGIN_HELP}`;

const IMAGE = /\.(jpe?g|png|webp|gif|tiff?)$/i;

export function listImages(spec: string): string[] {
  let dir = spec;
  let match = (name: string) => IMAGE.test(name);
  if (!fs.existsSync(spec) || !fs.statSync(spec).isDirectory()) {
    dir = path.dirname(spec);
    const pattern = new RegExp('^' + path.basename(spec).split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
    match = (name) => pattern.test(name);
  }
  return fs
    .readdirSync(dir)
    .filter(match)
    .sort()
    .map((name) => path.join(dir, name));
}

/** The files an earlier run already wrote results for. */
function alreadyDone(out: string | undefined): Set<string> {
  if (!out || !fs.existsSync(out)) return new Set();
  const done = new Set<string>();
  for (const line of fs.readFileSync(out, 'utf8').split('\n')) {
    try {
      const r = JSON.parse(line) as { file?: string; error?: unknown };
      if (r.file && !r.error) done.add(r.file);
    } catch {
      // a line cut by an interruption: that image runs again
    }
  }
  return done;
}

function bar(p: BatchProgress): string {
  const width = 24;
  const filled = Math.round((p.done / Math.max(1, p.total)) * width);
  const share = Object.entries(p.byAgent).map(([a, n]) => `${a} ${Math.round((n / Math.max(1, p.done - p.failed)) * 100)}%`).join(' ');
  const eta = Number.isFinite(p.etaS) ? `${p.etaS.toFixed(0)} s` : '?';
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.done}/${p.total} ${p.rate.toFixed(1)}/s ETA ${eta}${p.failed ? ` failed ${p.failed}` : ''}  ${share}`;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      broker: { type: 'string', multiple: true },
      mesh: { type: 'string' },
      'job-size': { type: 'string' },
      'top-k': { type: 'string' },
      ...LOGIN_OPTIONS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [model, spec] = positionals;
  if (values.help || !model || !spec) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const done = alreadyDone(values.out);
  const files = listImages(spec).filter((f) => !done.has(f));
  if (done.size) process.stderr.write(`resuming: ${done.size} images already in ${values.out}, ${files.length} to go\n`);
  const out = values.out ? fs.createWriteStream(values.out, { flags: 'a' }) : process.stdout;
  // A line cut by an interruption must not swallow the first new one.
  if (values.out && fs.existsSync(values.out)) {
    const text = fs.readFileSync(values.out, 'utf8');
    if (text.length && !text.endsWith('\n')) out.write('\n');
  }
  const client = await KizunaClient.connect({
    url: values.broker ?? [process.env.KIZUNA_URL ?? 'mqtt://127.0.0.1:1883'],
    mesh: values.mesh ?? process.env.KIZUNA_MESH ?? 'home',
    ...appLogin(values),
  });
  let stopping = false;
  process.once('SIGINT', () => (stopping = true));
  const tty = process.stderr.isTTY;
  let last = 0;
  let failed = 0;
  try {
    const items = client.batch(model, files.map((f) => () => fs.promises.readFile(f)), {
      ...(values['job-size'] ? { jobSize: Number(values['job-size']) } : {}),
      ...(values['top-k'] ? { topK: Number(values['top-k']) } : {}),
      rawOutputs: false,
      onProgress: (p) => {
        if (tty && performance.now() - last > 100) {
          last = performance.now();
          process.stderr.write(`\r${bar(p)}`);
        }
      },
    });
    for await (const item of items) {
      const file = files[item.index]!;
      const line = item.error
        ? { file, index: item.index, error: { code: item.error.code, message: item.error.message } }
        : { file, index: item.index, agent: item.result!.agent, ...batchSummary(item.result!.answers?.[0]), answers: item.result!.answers };
      if (item.error) failed++;
      out.write(JSON.stringify(line) + '\n');
      if (stopping) break;
    }
  } finally {
    if (tty) process.stderr.write('\n');
    await client.close();
    if (out !== process.stdout) await new Promise((r) => (out as fs.WriteStream).end(r));
  }
  if (stopping) {
    process.stderr.write(`interrupted: run the same command again to go on\n`);
    return 130;
  }
  process.stderr.write(`${files.length} images, ${failed} failed\n`);
  return failed ? 1 : 0;
}
