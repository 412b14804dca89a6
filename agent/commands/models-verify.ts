/**
 * `kizuna models verify`: hashes every file of this board's store again; a file that no longer
 * matches its sha256 is moved to quarantine (the agent fetches it again from the mesh at its next
 * start). Exits 1 if any file was bad or missing.
 */
import { parseArgs } from 'node:util';
import { Cas } from '../../models/cas.js';
import { storeDir } from '../distribution.js';
import { boardConfig, mb } from './models-mesh.js';

const HELP = `usage: kizuna models verify [options]

Hashes every model file of this board's store again. A file whose bytes no longer match its
sha256 is moved to <store>/quarantine and reported; exit status 1 if any file is bad, or
missing for a manifest.

  --data-dir DIR    this board's data directory (default ~/.kizuna)
  --json            one JSON object`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) return (console.log(HELP), 0);
  const config = boardConfig(values);
  const cas = await Cas.open(storeDir(config.dataDir));
  const report = await cas.verify();
  if (values.json) console.log(JSON.stringify(report));
  else {
    for (const f of report.ok) console.log(`ok          ${f.sha256} (${mb(f.bytes)})`);
    for (const f of report.bad) console.log(`MISMATCH    ${f.sha256}: its bytes hash to ${f.actual}; moved to ${f.quarantined}`);
    for (const k of report.orphans) console.log(`MISSING     the file of ${k}`);
    console.log(`${report.ok.length} file(s) verified, ${report.bad.length} quarantined, ${report.orphans.length} manifest(s) without their file`);
  }
  return report.bad.length || report.orphans.length ? 1 : 0;
}
