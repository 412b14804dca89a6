/** `kizuna models catalog`: the real, well-known models `kizuna models pull NAME` can fetch. */
import { parseArgs } from 'node:util';
import { downloadSize, formatBytes, loadCatalog } from '../../models/catalog.js';

const HELP = `usage: kizuna models catalog [--json]

Lists the catalogue: each model's name, version, download size, licence and what it does.
Fetch one with kizuna models pull NAME (docs/MODELS.md).

  --json   one JSON object per model (name, version, size, license, description, inputs, outputs, url)`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help || positionals.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const catalog = await loadCatalog();
  if (values.json) {
    for (const e of catalog) {
      const m = e.manifest;
      console.log(JSON.stringify({ name: e.name, version: m.version, size: downloadSize(e), license: m.license, description: m.description, inputs: m.inputs, outputs: m.outputs, url: e.model.url }));
    }
    return 0;
  }
  const rows = catalog.map((e) => [e.name, e.manifest.version, formatBytes(downloadSize(e)), e.manifest.license ?? '', e.model.url ? '' : 'mirror only']);
  const head = ['name', 'version', 'size', 'licence', 'source'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(fmt(head));
  console.log(fmt(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(fmt(r));
  console.log('');
  for (const e of catalog) console.log(`${e.name}: ${e.manifest.description ?? ''}`);
  console.log('\nkizuna models pull NAME downloads one (verified by sha256) into a model folder.');
  return 0;
}
