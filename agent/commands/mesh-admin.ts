/**
 * The mesh's credentials from the command line:
 *   kizuna init [--mesh NAME] [--board NAME]    create the mesh on this board; print a join token for one more board
 *   kizuna token board NAME | app NAME          (on the board that created the mesh) a join token for a board, or an app token
 *   kizuna join TOKEN                           store a board's join token in this board's data directory
 *   kizuna revoke board NAME | app NAME [--broker URL]   revoke, and tell the mesh (retained, signed)
 * Options: --data-dir DIR (default ~/.kizuna), --mesh NAME (default home).
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { KizunaError } from '../../mesh/errors.js';
import { Transport } from '../../mesh/mqtt.js';
import { topics } from '../../mesh/topics.js';
import { revocationKey } from '../../mesh/tokens.js';
import { loadConfig } from '../config.js';
import { credentialsDir, initMesh, issueToken, joinMesh, joinToken, loadCredentials, revoke } from '../credentials.js';
import { loadNodeId } from '../identity.js';

const common = { 'data-dir': { type: 'string' as const }, mesh: { type: 'string' as const } } as const;

function settings(values: { 'data-dir'?: string; mesh?: string }) {
  const config = loadConfig({ overrides: { ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}), ...(values.mesh ? { mesh: values.mesh } : {}) } });
  return { dataDir: config.dataDir, mesh: config.mesh, port: config.port };
}

const kindOf = (word: string | undefined): 'board' | 'app' => {
  if (word === 'board' || word === 'app') return word;
  throw new KizunaError('KZ_ERR_CONFIG', `say board or app, not ${JSON.stringify(word ?? '')}`);
};

export async function init(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...common, board: { type: 'string' } } });
  const { dataDir, mesh } = settings(values);
  const creds = initMesh(dataDir, mesh, await loadNodeId(dataDir));
  const next = values.board ?? `${os.hostname().split('.')[0]!.replace(/[^A-Za-z0-9_-]/g, '') || 'board'}-2`;
  console.log(`mesh ${mesh} created: its key is in ${creds.dir} (keep authority.key secret; back it up).`);
  console.log(`this board is ${creds.board!.sub}. Join token for board ${next} (run kizuna token board NAME for more):\n`);
  console.log(joinToken(creds, next));
  return 0;
}

export async function token(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: common, allowPositionals: true });
  const { dataDir, mesh } = settings(values);
  const creds = loadCredentials(dataDir, mesh);
  if (!creds) throw new KizunaError('KZ_ERR_CONFIG', `no credentials for mesh ${mesh} in ${credentialsDir(dataDir, mesh)}: run kizuna init first`);
  const kind = kindOf(positionals[0]);
  const name = positionals[1];
  if (!name) throw new KizunaError('KZ_ERR_CONFIG', `usage: kizuna token ${kind} NAME`);
  console.log(kind === 'board' ? joinToken(creds, name) : issueToken(creds, kind, name));
  return 0;
}

export async function join(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: common, allowPositionals: true });
  const { dataDir } = settings(values);
  const t = positionals[0];
  if (!t) throw new KizunaError('KZ_ERR_CONFIG', 'usage: kizuna join TOKEN');
  const joined = joinMesh(dataDir, t);
  console.log(`joined mesh ${joined.mesh} as board ${joined.node}; start it with: kizuna agent --mesh ${joined.mesh}`);
  return 0;
}

export async function revokeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...common, broker: { type: 'string' } }, allowPositionals: true });
  const { dataDir, mesh, port } = settings(values);
  const creds = loadCredentials(dataDir, mesh);
  if (!creds?.boardToken) throw new KizunaError('KZ_ERR_CONFIG', `no credentials for mesh ${mesh}: run this on the board where kizuna init ran`);
  const kind = kindOf(positionals[0]);
  const name = positionals[1];
  if (!name) throw new KizunaError('KZ_ERR_CONFIG', `usage: kizuna revoke ${kind} NAME`);
  const { list, payload } = revoke(creds, revocationKey(kind, name));
  console.log(`revoked ${kind} ${name} (list ${list.seq}: ${list.entries.join(', ')})`);
  // Tell the mesh: any board's port reaches its broker, which checks the signature, keeps the
  // list retained and disconnects the revoked. Every board keeps a copy for later failovers.
  const transport = await Transport.connect({
    url: values.broker ?? `${creds.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    username: creds.board!.sub, password: creds.boardToken, reconnect: false, connectTimeoutMs: 5000,
    ...(creds.tls ? { tls: { ca: creds.tls.ca, mesh } } : {}),
  });
  try {
    await transport.publish(topics.revoked(mesh), payload, { qos: 1, retain: true });
  } finally {
    await transport.close();
  }
  console.log('the mesh has it: the revoked are disconnected and refused by every broker from now on');
  return 0;
}
