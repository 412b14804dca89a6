/**
 * `kizuna models rm NAME[@VERSION] [--mesh]`: removes a model from this board's store; with
 * --mesh, retracts it from the mesh catalogue too, and every board unloads it and deletes its
 * copy. On a mesh with credentials a retraction is a tombstone signed by the mesh key, so --mesh
 * works only on the board that holds it.
 */
import { parseArgs } from 'node:util';
import { decodeCatalog, encodeTombstone, signTombstone } from '../../mesh/catalog.js';
import { KizunaError } from '../../mesh/errors.js';
import { topics } from '../../mesh/topics.js';
import { Cas } from '../../models/cas.js';
import { storeDir } from '../distribution.js';
import { boardConfig, linkToMesh, meshFlag, MESH_NAME_HELP, MESH_OPTIONS, readRetained } from './models-mesh.js';

const HELP = `usage: kizuna models rm NAME[@VERSION] [--mesh] [options]

Removes the model from this board's store (a running agent keeps serving it until it restarts).
With --mesh, retracts it from the mesh catalogue: every board unloads it and deletes its copy.
On a mesh with credentials, --mesh needs the mesh key (the board where kizuna init ran).

  --mesh            retract it from the whole mesh
${MESH_NAME_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { meshWide, args } = meshFlag(argv);
  const { mesh: _name, ...options } = MESH_OPTIONS;
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...options, 'mesh-name': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  const [spec, ...extra] = positionals;
  if (values.help || !spec || extra.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const [name, version] = spec.split('@') as [string, string | undefined];
  const meshValues = { ...values, ...(values['mesh-name'] ? { mesh: values['mesh-name'] } : {}) };
  const config = boardConfig(meshValues);
  const cas = await Cas.open(storeDir(config.dataDir));
  const removed = await cas.remove(name, version);
  if (removed.length) console.log(`removed ${removed.map((m) => m.key).join(', ')} from this board's store`);
  else console.log(`no ${spec} in this board's store`);
  if (!meshWide) {
    if (removed.length) console.log('a running agent serves it until it restarts; if the mesh catalogue lists it, the agent fetches it again: use --mesh to retract it everywhere');
    return 0;
  }
  const link = await linkToMesh(meshValues, config);
  try {
    const topic = topics.catalog(link.mesh, name);
    const payload = (await readRetained(link.transport, [topic])).get(topic);
    const msg = payload ? decodeCatalog(name, payload) : undefined;
    if (msg?.kind !== 'entry') {
      console.log(`the catalogue of mesh ${link.mesh} does not list ${name}`);
      return removed.length ? 0 : 1;
    }
    if (version && msg.entry.manifest.version !== version) throw new KizunaError('KZ_ERR_UNKNOWN_MODEL', `the catalogue lists ${name}@${msg.entry.manifest.version}, not @${version}`);
    const creds = link.creds;
    let retraction: Buffer;
    if (creds) {
      if (!creds.authorityKey) throw new KizunaError('KZ_ERR_CONFIG', `retracting a model from mesh ${link.mesh} takes the mesh key: run this on the board where kizuna init ran`);
      retraction = encodeTombstone(signTombstone(name, msg.entry.manifest.sha256, creds.authorityKey));
    } else {
      // An open mesh: an unsigned tombstone (an empty payload would retract too, but leave nothing
      // retained, and a board that is away now would never learn of it).
      retraction = encodeTombstone({ v: 1, retract: { name, sha256: msg.entry.manifest.sha256 } });
    }
    await link.transport.publish(topic, retraction, { qos: 1, retain: true });
    console.log(`retracted ${name}@${msg.entry.manifest.version} from mesh ${link.mesh}: every board unloads it and deletes its copy`);
    return 0;
  } finally {
    await link.close();
  }
}
