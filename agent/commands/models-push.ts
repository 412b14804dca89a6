/**
 * `kizuna models push FILE|MANIFEST --broker URL`: from a laptop (or any machine that is not a
 * board), publishes a model's catalogue entry and serves its chunks until boards hold verified
 * copies, showing their progress; then exits. Boards go on sharing it among themselves.
 */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { encodeCatalogEntry } from '../../mesh/catalog.js';
import { KizunaError } from '../../mesh/errors.js';
import { Roster } from '../../mesh/roster.js';
import { parseBlobRequestTopic, topics } from '../../mesh/topics.js';
import { entryOf } from '../../models/model-source.js';
import { ChunkServer } from '../../models/transfer.js';
import { boardConfig, linkToMesh, mb, MESH_HELP, MESH_OPTIONS, readSource, SOURCE_HELP, SOURCE_OPTIONS } from './models-mesh.js';

const HELP = `usage: kizuna models push FILE|MANIFEST --broker URL [options]

Publishes a model to the mesh catalogue and serves its chunks from this machine until boards
hold a verified copy, with their progress; then exits (the boards share it among themselves).
On a mesh with credentials, connect as an app (--token, --ca) and push a MANIFEST signed by the
mesh key (MANIFEST.sig, from kizuna models sign on the board that holds the key).

${SOURCE_HELP}
  --boards N        wait until N boards hold it (default 1)
  --timeout S       give up after S seconds (default 600)
${MESH_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...MESH_OPTIONS,
      ...SOURCE_OPTIONS,
      boards: { type: 'string' }, timeout: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
  });
  const [input, ...extra] = positionals;
  if (values.help || !input || extra.length) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const config = boardConfig(values);
  const wanted = Number(values.boards ?? 1);
  const timeoutS = Number(values.timeout ?? 600);
  if (!Number.isInteger(wanted) || wanted < 1) throw new KizunaError('KZ_ERR_CONFIG', `--boards ${values.boards}: a whole number of boards, at least 1`);
  const pkg = await readSource(input, values, config);
  const { name, version, sha256 } = pkg.manifest;
  const link = await linkToMesh(values, config);
  if (link.kind === 'app' && !pkg.sig) {
    await link.close();
    throw new KizunaError('KZ_ERR_MODEL_INTEGRITY', `${name} is not signed: a mesh with credentials takes only models the mesh key signed (kizuna models sign MANIFEST on the board that holds it, then push MANIFEST)`);
  }
  const entry = entryOf(pkg, link.me);
  const plan = { sha256, size: pkg.size, chunkSize: pkg.chunkSize, chunks: pkg.chunks };
  const file = await fs.open(pkg.file, 'r');
  const started = Date.now();
  const server = new ChunkServer(
    (sha) => (sha === sha256 ? { plan, read: async (offset, length) => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await file.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } } : undefined),
    (requester, sha, index, bytes) => link.transport.publish(topics.blobChunk(link.mesh, requester, link.me, sha, index), bytes, { qos: 1 }),
  );
  let served = 0;
  server.on('served', (s: { bytes: number }) => (served += s.bytes));
  const roster = new Roster();
  const shown = new Map<string, number>();
  try {
    const done = new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new KizunaError('KZ_ERR_TIMEOUT', `no ${wanted} board(s) hold ${name} after ${timeoutS} s`)), timeoutS * 1000);
      link.transport.onMessage((topic, payload) => {
        const req = parseBlobRequestTopic(topic);
        if (req) {
          if (req.holder === link.me) server.request(req.requester, req.sha256, payload);
          return;
        }
        if (!roster.accept(topic, payload)) return;
        for (const s of roster.online()) {
          const t = s.transfers?.find((x) => x.sha256 === sha256);
          if (!t) continue;
          const pct = Math.floor((100 * t.done) / Math.max(1, t.total));
          if (pct >= (shown.get(s.node) ?? -10) + 10 || (pct === 100 && shown.get(s.node) !== 100)) {
            shown.set(s.node, pct);
            console.log(`${s.node}: ${pct}% (${mb(t.done)} of ${mb(t.total)})`);
          }
        }
        const holders = roster.online().filter((s) => s.models?.some((m) => m.name === name && m.sha256 === sha256)).map((s) => s.node);
        if (holders.length >= wanted) {
          clearTimeout(timer);
          resolve(holders);
        }
      });
    });
    await link.transport.subscribe([topics.blobRequestsTo(link.mesh, link.me), topics.allNodeStatus(link.mesh)], 1);
    await link.transport.publish(topics.catalog(link.mesh, name), encodeCatalogEntry(entry), { qos: 1, retain: true });
    console.log(`pushed ${name}@${version} (sha256 ${sha256.slice(0, 12)}, ${mb(pkg.size)}, ${pkg.chunks.length} chunks) to mesh ${link.mesh}; serving it until ${wanted} board(s) hold it`);
    const holders = await done;
    const s = (Date.now() - started) / 1000;
    console.log(`held and verified by ${holders.join(', ')} after ${s.toFixed(2)} s (${mb(served)} sent from here)`);
    return 0;
  } finally {
    server.stop();
    await file.close();
    await link.close();
  }
}
