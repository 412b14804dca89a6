/**
 * What the `kizuna models` actions share to reach the mesh: a connection as this board (its
 * board token and the mesh CA from its data directory, as `kizuna revoke` does), or as an app
 * (--token, --ca: a laptop pushing a model), or open (no credentials: loopback); and a read of
 * retained state (the catalogue, the statuses).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { KizunaError } from '../../mesh/errors.js';
import { Transport } from '../../mesh/mqtt.js';
import { tokenSubject } from '../../mesh/tokens.js';
import { loadConfig, type Config } from '../config.js';
import { loadCredentials, type MeshCredentials } from '../credentials.js';
import { loadNodeId } from '../identity.js';
import { readModelPackage, type ModelPackage } from '../../models/model-source.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { signManifest, verifyManifest } from '../../models/signature.js';

export const MESH_OPTIONS = {
  broker: { type: 'string' as const },
  mesh: { type: 'string' as const },
  'data-dir': { type: 'string' as const },
  token: { type: 'string' as const },
  ca: { type: 'string' as const },
};

export const MESH_HELP = `  --data-dir DIR    this board's data directory: its store and credentials (default ~/.kizuna)
  --mesh NAME       mesh name (default home)
  --broker URL      any board of the mesh (default this board's agent: mqtt(s)://127.0.0.1:PORT)
  --token TOKEN     connect as an app with this token (or $KIZUNA_TOKEN); default: as this board
  --ca FILE         the mesh's CA certificate (ca.pem) with --token (or $KIZUNA_CA)`;

/**
 * In list and rm, a bare \`--mesh\` means "the mesh too" (the catalogue), so the mesh's name is
 * \`--mesh-name NAME\` there (or $KIZUNA_MESH). Returns the flag and the other arguments.
 */
export function meshFlag(argv: string[]): { meshWide: boolean; args: string[] } {
  return { meshWide: argv.includes('--mesh'), args: argv.filter((a) => a !== '--mesh') };
}

export const MESH_NAME_HELP = MESH_HELP.replace('  --mesh NAME       mesh name (default home)', '  --mesh-name NAME  mesh name (default home, or $KIZUNA_MESH)');

export type MeshValues = { broker?: string; mesh?: string; 'data-dir'?: string; token?: string; ca?: string };

/** The board's settings (data directory, mesh, port), from the flags, the environment and defaults. */
export function boardConfig(values: MeshValues): Config {
  return loadConfig({ overrides: { ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}), ...(values.mesh ? { mesh: values.mesh } : {}) } });
}

export interface MeshLink {
  transport: Transport;
  mesh: string;
  /** The name this connection acts in: the board's node id or the app's name. */
  me: string;
  kind: 'board' | 'app' | 'open';
  creds?: MeshCredentials;
  close(): Promise<void>;
}

/** Who this command is on the mesh, before connecting. */
export async function identity(values: MeshValues, config: Config): Promise<{ me: string; kind: MeshLink['kind']; creds?: MeshCredentials; token?: string; ca?: string }> {
  const token = values.token ?? process.env.KIZUNA_TOKEN;
  const caFile = values.ca ?? process.env.KIZUNA_CA;
  const creds = loadCredentials(config.dataDir, config.mesh);
  if (token) {
    const sub = tokenSubject(token);
    if (!sub) throw new KizunaError('KZ_ERR_UNAUTHORIZED', 'the token is not a Kizuna token (kz1.<claims>.<signature>)');
    const ca = caFile ? fs.readFileSync(caFile, 'utf8') : creds?.tls?.ca;
    return { me: sub, kind: 'app', token, ...(ca ? { ca } : {}), ...(creds ? { creds } : {}) };
  }
  if (creds?.board && creds.boardToken) return { me: creds.board.sub, kind: 'board', creds, token: creds.boardToken, ...(creds.tls ? { ca: creds.tls.ca } : {}) };
  return { me: config.node ?? (await loadNodeId(config.dataDir)), kind: 'open', ...(creds ? { creds } : {}) };
}

/** Connects to the mesh; rejects (KZ_ERR_UNAUTHORIZED, a connection error) when it cannot. */
export async function linkToMesh(values: MeshValues, config: Config, options: { connectTimeoutMs?: number } = {}): Promise<MeshLink> {
  const who = await identity(values, config);
  const url = values.broker ?? process.env.KIZUNA_URL ?? `${who.ca ? 'mqtts' : 'mqtt'}://127.0.0.1:${config.port}`;
  const transport = await Transport.connect({
    url,
    clientId: `kizuna-cli-${who.me.slice(0, 40)}-${randomBytes(3).toString('hex')}`,
    keepaliveSeconds: 5,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    ...(who.token ? { username: who.me, password: who.token } : {}),
    ...(who.ca ? { tls: { ca: who.ca, mesh: config.mesh } } : {}),
  }).catch((err: Error) => {
    if (/not authori[sz]ed/i.test(err.message)) throw new KizunaError('KZ_ERR_UNAUTHORIZED', `${url} refused this ${who.kind === 'app' ? `app (${who.me})` : `board (${who.me})`}: ${err.message}`);
    throw new KizunaError('KZ_ERR_CONFIG', `cannot reach the mesh at ${url}: ${err.message}`, { cause: err });
  });
  return { transport, mesh: config.mesh, me: who.me, kind: who.kind, ...(who.creds ? { creds: who.creds } : {}), close: () => transport.close() };
}

/**
 * The retained messages of `filters`: they arrive right after the subscription; the read ends
 * once none came for `quietMs` (or after `maxMs`).
 */
export async function readRetained(transport: Transport, filters: string[], quietMs = 300, maxMs = 5000): Promise<Map<string, Buffer>> {
  const seen = new Map<string, Buffer>();
  let timer: NodeJS.Timeout | undefined;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const quiet = () => {
    clearTimeout(timer);
    timer = setTimeout(done, quietMs);
  };
  const off = transport.onMessage((topic, payload) => {
    if (payload.length) seen.set(topic, payload);
    else seen.delete(topic);
    quiet();
  });
  const cap = setTimeout(done, maxMs);
  try {
    await transport.subscribe(filters, 1);
    quiet();
    await finished;
  } finally {
    clearTimeout(timer);
    clearTimeout(cap);
    off();
    await transport.unsubscribe(filters).catch(() => undefined);
  }
  return seen;
}

export const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

/** What describes a model file, for add and push. */
export const SOURCE_OPTIONS = {
  name: { type: 'string' }, version: { type: 'string' }, manifest: { type: 'string' }, 'chunk-size': { type: 'string' },
} as const;
export const SOURCE_HELP = `  --name NAME       the model's name (FILE only; default the file's name)
  --version V       the model's version (FILE only; default 1)
  --manifest M      the manifest that describes FILE
  --chunk-size N    bytes per chunk over the mesh (default 262144)`;

/** FILE or MANIFEST read as the options say, signed by the mesh key when this board holds it and the mesh needs it. */
export async function readSource(input: string, values: { name?: string; version?: string; manifest?: string; 'chunk-size'?: string }, config: Config): Promise<ModelPackage> {
  const pkg = await readModelPackage(input, {
    ...(values.name ? { name: values.name } : {}), ...(values.manifest ? { manifest: values.manifest } : {}), ...(values.version ? { version: values.version } : {}),
    ...(values['chunk-size'] ? { chunkSize: Number(values['chunk-size']) } : {}),
    engine: async () => new OnnxEngine(),
  });
  signIfNeeded(pkg, config.dataDir, config.mesh);
  return pkg;
}

/**
 * On a mesh with credentials boards load only models the mesh key signed: a manifest without a
 * signature is signed here when this board holds the key; else it is refused.
 */
export function signIfNeeded(pkg: ModelPackage, dataDir: string, mesh: string): void {
  const creds = loadCredentials(dataDir, mesh);
  if (!creds) return;
  const manifest = pkg.text ? JSON.parse(pkg.text) : pkg.manifest;
  if (pkg.sig) {
    if (!verifyManifest(manifest, pkg.sig, creds.publicKey)) throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `the signature of ${pkg.manifest.name} is not the key of mesh ${mesh}'s: sign the manifest again (kizuna models sign)`);
    return;
  }
  if (!creds.authorityKey) {
    throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${pkg.manifest.name} is not signed, and mesh ${mesh}'s boards load only signed models: sign its manifest with kizuna models sign on the board that holds the mesh key, then add the manifest`);
  }
  pkg.sig = signManifest(manifest, creds.authorityKey);
}
