/**
 * `kizuna models list`: the models of this board's store and, with --mesh or --broker, the mesh
 * catalogue: each model's version, file (sha256 prefix), size, and which boards hold it (their
 * statuses) or are fetching it.
 */
import { parseArgs } from 'node:util';
import { decodeCatalog, type CatalogEntry } from '../../mesh/catalog.js';
import { Roster } from '../../mesh/roster.js';
import { parseCatalogTopic, topics } from '../../mesh/topics.js';
import { Cas } from '../../models/cas.js';
import { storeDir } from '../distribution.js';
import { boardConfig, linkToMesh, mb, meshFlag, MESH_NAME_HELP, MESH_OPTIONS, readRetained } from './models-mesh.js';

const HELP = `usage: kizuna models list [--mesh] [--broker URL] [--json] [options]

Lists the models of this board's store; with --mesh (or --broker), also the mesh catalogue
and which boards hold each model (or are fetching it).

  --mesh            the mesh catalogue too
  --json            one JSON object instead of tables
${MESH_NAME_HELP}`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const { meshWide, args } = meshFlag(argv);
  const { mesh: _name, ...options } = MESH_OPTIONS;
  const parsed = parseArgs({ args, options: { ...options, 'mesh-name': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (parsed.values.help) return (console.log(HELP), 0);
  const values = { ...parsed.values, ...(parsed.values['mesh-name'] ? { mesh: parsed.values['mesh-name'] } : {}) };
  const config = boardConfig(values);
  const cas = await Cas.open(storeDir(config.dataDir));
  const local = [];
  for (const m of await cas.models()) {
    const size = await cas.blobSize(m.manifest.sha256);
    local.push({ name: m.manifest.name, version: m.manifest.version, sha256: m.manifest.sha256, bytes: size ?? 0, file: size === undefined ? 'missing' : 'ok', signed: Boolean(m.sig) });
  }
  const partial = await cas.partials();
  const wantMesh = meshWide || values.broker !== undefined;
  let mesh: { name: string; version: string; sha256: string; bytes: number; origin: string; holders: string[]; fetching: string[] }[] | undefined;
  if (wantMesh) {
    const link = await linkToMesh(values, config);
    try {
      const retained = await readRetained(link.transport, [topics.allCatalog(link.mesh), topics.allNodeStatus(link.mesh)]);
      const roster = new Roster();
      const entries: CatalogEntry[] = [];
      for (const [topic, payload] of retained) {
        if (roster.accept(topic, payload)) continue;
        const cat = parseCatalogTopic(topic);
        if (!cat) continue;
        try {
          const msg = decodeCatalog(cat.model, payload);
          if (msg.kind === 'entry') entries.push(msg.entry);
        } catch {
          // not an entry this version reads
        }
      }
      mesh = entries.sort((a, b) => a.manifest.name.localeCompare(b.manifest.name)).map((e) => {
        const sha = e.manifest.sha256;
        return {
          name: e.manifest.name, version: e.manifest.version, sha256: sha, bytes: e.size, origin: e.origin,
          holders: roster.online().filter((s) => s.models?.some((m) => m.name === e.manifest.name && m.sha256 === sha)).map((s) => s.node).sort(),
          fetching: roster.online().flatMap((s) => s.transfers?.filter((t) => t.sha256 === sha).map((t) => `${s.node} ${Math.floor((100 * t.done) / Math.max(1, t.total))}%`) ?? []),
        };
      });
    } finally {
      await link.close();
    }
  }
  if (values.json) {
    console.log(JSON.stringify({ store: cas.root, local, partial, ...(mesh ? { mesh } : {}) }));
    return 0;
  }
  console.log(`this board's store (${cas.root}):`);
  if (!local.length) console.log('  (empty)');
  else console.log(table([['name', 'version', 'sha256', 'size', 'file', 'signed'], ...local.map((m) => [m.name, m.version, m.sha256.slice(0, 12), mb(m.bytes), m.file, m.signed ? 'yes' : 'no'])]));
  for (const p of partial) console.log(`  fetching ${p.sha256.slice(0, 12)}: ${p.have} of ${p.of} chunks on disk`);
  if (mesh) {
    console.log(`\nmesh ${config.mesh} catalogue:`);
    if (!mesh.length) console.log('  (empty)');
    else console.log(table([['name', 'version', 'sha256', 'size', 'held by', 'fetching'], ...mesh.map((m) => [m.name, m.version, m.sha256.slice(0, 12), mb(m.bytes), m.holders.join(', ') || '-', m.fetching.join(', ') || '-'])]));
  }
  return 0;
}
