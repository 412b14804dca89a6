/**
 * `kizuna models sign MANIFEST`: on the board that holds the mesh key (where `kizuna init` ran),
 * sign a model's manifest so that the boards of a mesh with credentials load it. The signature
 * goes beside the manifest (`digits.json` -> `digits.json.sig`); copy both with the .onnx file.
 */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { KizunaError } from '../../mesh/errors.js';
import { signaturePath, signManifest, verifyManifest } from '../../models/signature.js';
import { readModel } from '../../models/store.js';
import { loadConfig } from '../config.js';
import { credentialsDir, loadCredentials } from '../credentials.js';

const HELP = `usage: kizuna models sign MANIFEST [options]

Signs a model manifest with the mesh key (only on the board where kizuna init ran) and writes
MANIFEST.sig beside it. The manifest must be valid, name files inside its folder only, and its
model file must match its sha256: the signature vouches for the manifest and so for those bytes.
Boards of a mesh with credentials load a model that is not built in only with this signature.

  --data-dir DIR   where this board keeps its credentials (default ~/.kizuna)
  --mesh NAME      mesh name (default home)`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'data-dir': { type: 'string' }, mesh: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  const [manifestPath, ...extra] = positionals;
  if (values.help || !manifestPath || extra.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const config = loadConfig({ overrides: { ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}), ...(values.mesh ? { mesh: values.mesh } : {}) } });
  const creds = loadCredentials(config.dataDir, config.mesh);
  if (!creds) throw new KizunaError('KZ_ERR_CONFIG', `no credentials for mesh ${config.mesh} in ${credentialsDir(config.dataDir, config.mesh)}: run this on the board where kizuna init ran`);
  if (!creds.authorityKey) throw new KizunaError('KZ_ERR_CONFIG', `this board does not hold the key of mesh ${config.mesh} (no authority.key in ${creds.dir}): run this on the board where kizuna init ran`);

  const text = await fs.readFile(manifestPath, 'utf8').catch((err: Error) => {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath}: ${err.message}`);
  });
  const signature = signManifest(text, creds.authorityKey);
  // The store's own checks: schema, paths inside the folder, the model's bytes against the sha256.
  const { manifest } = await readModel(manifestPath);
  if (!verifyManifest(manifest, signature, creds.publicKey)) {
    throw new KizunaError('KZ_ERR_MANIFEST', `${manifestPath} changed while it was being signed, or authority.key is not the key of mesh.pub in ${creds.dir}; nothing written`);
  }
  const sigPath = signaturePath(manifestPath);
  await fs.writeFile(sigPath, `${signature}\n`, { mode: 0o644 });
  console.log(`signed ${manifest.name}@${manifest.version} (sha256 ${manifest.sha256}) for mesh ${config.mesh}: ${sigPath}`);
  return 0;
}
