/**
 * `kizuna models add FILE|MANIFEST`: puts a model into this board's content-addressed store and,
 * when this board's agent runs, publishes its catalogue entry through it: every board that should
 * hold the model fetches it from this one, verifies it and serves it.
 */
import { parseArgs } from 'node:util';
import { encodeCatalogEntry } from '../../mesh/catalog.js';
import { KizunaError } from '../../mesh/errors.js';
import { Roster } from '../../mesh/roster.js';
import { topics } from '../../mesh/topics.js';
import { Cas } from '../../models/cas.js';
import { entryOf } from '../../models/model-source.js';
import { storeDir } from '../distribution.js';
import { boardConfig, linkToMesh, mb, MESH_HELP, MESH_OPTIONS, readSource, SOURCE_HELP, SOURCE_OPTIONS } from './models-mesh.js';

const HELP = `usage: kizuna models add FILE|MANIFEST [options]

Adds a model to this board's store (<data-dir>/store), checked by sha256. FILE is an .onnx
file: without --manifest, a tensor-only manifest is made from the inputs and outputs the file
declares. MANIFEST is a model manifest (.json) beside its model file (and MANIFEST.sig, its
signature, on a mesh with credentials; on the board that holds the mesh key it is signed here).
If this board's agent runs, the model is published to the mesh catalogue through it, and every
board that should hold it fetches it from this one.

${SOURCE_HELP}
  --local           only this board's store: do not publish to the mesh
${MESH_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...MESH_OPTIONS,
      ...SOURCE_OPTIONS,
      local: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
  });
  const [input, ...extra] = positionals;
  if (values.help || !input || extra.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const config = boardConfig(values);
  const pkg = await readSource(input, values, config);
  const { name, version, sha256 } = pkg.manifest;
  const cas = await Cas.open(storeDir(config.dataDir));
  const imported = await cas.importFile(pkg.file);
  if (imported.sha256 !== sha256) throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${pkg.file} changed while it was read (sha256 ${imported.sha256}, not ${sha256})`);
  const entry = entryOf(pkg, 'self');
  await cas.putManifest({ manifest: entry.manifest, ...(pkg.text ? { text: pkg.text } : {}), ...(pkg.sig ? { sig: pkg.sig } : {}), ...(pkg.labels !== undefined ? { labels: pkg.labels } : {}) });
  // One version of a name per store: the agent serves one.
  for (const other of await cas.models()) if (other.manifest.name === name && other.manifest.version !== version) await cas.remove(name, other.manifest.version);
  console.log(`added ${name}@${version} (sha256 ${sha256.slice(0, 12)}, ${mb(pkg.size)}) to this board's store ${cas.root}`);
  if (values.local) return 0;

  let link;
  try {
    link = await linkToMesh(values, config, { connectTimeoutMs: 3000 });
  } catch (err) {
    console.log(`this board's agent is not reachable (${(err as Error).message}): it loads ${name} at its next start; run kizuna models add again while it runs to share it with the mesh`);
    return 0;
  }
  try {
    const roster = new Roster();
    const listed = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 30_000);
      link.transport.onMessage((topic, payload) => {
        if (!roster.accept(topic, payload)) return;
        if (roster.get(link.me)?.models?.some((m) => m.sha256 === sha256 && m.name === name)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
    });
    await link.transport.subscribe(topics.allNodeStatus(link.mesh), 1);
    // The entry names this board as its origin: its agent serves the chunks.
    await link.transport.publish(topics.catalog(link.mesh, name), encodeCatalogEntry({ ...entry, origin: link.me }), { qos: 1, retain: true });
    if (!(await listed)) {
      console.error(`kizuna: published ${name} to mesh ${link.mesh}, but board ${link.me} does not list it in its status after 30 s: see its agent's log`);
      return 1;
    }
    console.log(`published ${name}@${version} to mesh ${link.mesh}: board ${link.me} serves it, and every board that should hold it fetches it from there (kizuna models list --mesh)`);
    return 0;
  } finally {
    await link.close();
  }
}
