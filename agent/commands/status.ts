/**
 * `kizuna status`: every board of the mesh, from the retained statuses (alive or not, role,
 * address, models) and health reports (load, temperature, memory, throughput, latency), as a
 * table or one JSON object. `kizuna top` (./top.ts) shows the same view live.
 *
 * The view is pure (`MeshBoards`: messages in, rows out), so both commands and the tests share it.
 */
import { parseArgs } from 'node:util';
import { parseNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { Roster } from '../../mesh/roster.js';
import type { NodeStatus } from '../../mesh/status.js';
import { parseNodeHealthTopic, topics } from '../../mesh/topics.js';
import { table } from '../stats.js';
import { boardConfig, linkToMesh, MESH_OPTIONS, readRetained, type MeshLink, type MeshValues } from './models-mesh.js';

export const STATUS_OPTIONS = { ...MESH_OPTIONS, json: { type: 'boolean' as const }, help: { type: 'boolean' as const, short: 'h' } };

export const CONNECT_HELP = `  --broker URL      any board of the mesh (default this board's agent: mqtt(s)://127.0.0.1:PORT, or $KIZUNA_URL)
  --mesh NAME       mesh name (default home, or $KIZUNA_MESH)
  --token TOKEN     connect as an app with this token (or $KIZUNA_TOKEN); default: as this board
  --ca FILE         the mesh's CA certificate (ca.pem) with --token (or $KIZUNA_CA)
  --data-dir DIR    this board's data directory, for its credentials (default ~/.kizuna)`;

const HELP = `usage: kizuna status [--broker URL] [--json] [options]

Every board of the mesh: its role (broker, standby, agent), whether it is online, its address and
models, and its latest health report (CPU load, temperature, memory, requests per second, p95
latency, when it last reported). Read from the mesh's retained messages (docs/OPERATIONS.md).

  --json            one JSON object: {"mesh", "at", "boards": [{summary..., "status", "health"}]}
${CONNECT_HELP}`;

const ROLE_ORDER: Record<string, number> = { broker: 0, standby: 1, agent: 2, joining: 3 };

/** One board as the table and the JSON show it. */
export interface BoardRow {
  node: string;
  role: string;
  online: boolean;
  draining: boolean;
  address: string;
  models: string[];
  load_pct: number | null;
  temperature_c: number | null;
  throttled: boolean | null;
  memory_used_pct: number | null;
  agent_rss_bytes: number | null;
  rate_per_s: number | null;
  /** The worst p95 of its models in the last period. */
  p95_ms: number | null;
  /** When its latest health report was made (its clock), and how long before `now` that was. */
  last_seen: number | null;
  last_seen_ago_ms: number | null;
}

/** The boards of a mesh, from its status and health topics. */
export class MeshBoards {
  readonly roster = new Roster();
  private readonly health = new Map<string, NodeHealth>();

  /** Takes one message; returns true when the view changed. */
  accept(topic: string, payload: Buffer): boolean {
    const node = parseNodeHealthTopic(topic);
    if (node === undefined) return this.roster.accept(topic, payload);
    if (!payload.length) return this.health.delete(node);
    const h = parseNodeHealth(payload);
    if (!h || h.node !== node) return false;
    const current = this.health.get(node);
    // A late report of an earlier process or period never replaces a newer one.
    if (current && current.instance === h.instance && h.seq < current.seq) return false;
    this.health.set(node, h);
    return true;
  }

  healthOf(node: string): NodeHealth | undefined {
    return this.health.get(node);
  }

  /** Every board known by a status or a health report: online first (broker, standby, agents), then by node id. */
  rows(now: number): BoardRow[] {
    const nodes = new Set([...this.roster.all().map((s) => s.node), ...this.health.keys()]);
    return [...nodes]
      .map((node) => boardRow(this.roster.get(node), this.health.get(node), node, now))
      .sort((a, b) => Number(b.online) - Number(a.online) || (ROLE_ORDER[a.role] ?? 9) - (ROLE_ORDER[b.role] ?? 9) || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  /** The JSON form: the summary of each board, with its whole status and health report. */
  json(mesh: string, now: number): { mesh: string; at: number; boards: (BoardRow & { status: NodeStatus | null; health: NodeHealth | null })[] } {
    return {
      mesh,
      at: now,
      boards: this.rows(now).map((r) => ({ ...r, status: this.roster.get(r.node) ?? null, health: this.health.get(r.node) ?? null })),
    };
  }
}

export function boardRow(s: NodeStatus | undefined, h: NodeHealth | undefined, node: string, now: number): BoardRow {
  const p95s = (h?.inference.models ?? []).map((m) => m.p95_ms).filter((p): p is number => p !== null);
  const address = s?.addresses?.[0] !== undefined ? `${s.addresses[0]}:${s.port ?? '?'}` : '';
  return {
    node,
    role: s?.role ?? '?',
    online: s?.online ?? false,
    draining: s?.draining ?? false,
    address,
    models: (s?.models ?? []).map((m) => m.name),
    load_pct: h ? h.cpu.total_pct : null,
    temperature_c: h?.temperature_c ?? null,
    throttled: h?.throttle ? h.throttle.now : (s?.throttled ?? null),
    memory_used_pct: h && h.memory.total_bytes > 0 ? Math.round((h.memory.used_bytes / h.memory.total_bytes) * 1000) / 10 : null,
    agent_rss_bytes: h?.memory.agent_rss_bytes ?? null,
    rate_per_s: h ? h.inference.rate_per_s : null,
    p95_ms: p95s.length ? Math.max(...p95s) : null,
    last_seen: h?.at ?? null,
    last_seen_ago_ms: h ? Math.max(0, now - h.at) : null,
  };
}

/** A duration for people: 0.4s, 12s, 3m, 2h, 5d. */
export function ago(ms: number): string {
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

const dash = (x: number | null, f: (x: number) => string): string => (x === null ? '-' : f(x));

/** The boards as a text table (one line per board). */
export function renderTable(rows: readonly BoardRow[]): string {
  if (!rows.length) return 'no boards: nothing retained on the status topics (is an agent running?)';
  const models = (m: string[]) => (m.length <= 2 ? m.join(',') : `${m.slice(0, 2).join(',')} +${m.length - 2}`) || '-';
  return table(
    ['node', 'role', 'online', 'address', 'models', 'load %', 'temp', 'mem %', 'rss MB', 'req/s', 'p95 ms', 'last seen'],
    rows.map((r) => [
      r.node,
      r.role,
      r.online ? (r.draining ? 'draining' : 'yes') : 'NO',
      r.address || '-',
      models(r.models),
      dash(r.load_pct, (x) => x.toFixed(1)),
      dash(r.temperature_c, (x) => `${x.toFixed(1)}C`) + (r.throttled ? ' THR' : ''),
      dash(r.memory_used_pct, (x) => x.toFixed(1)),
      dash(r.agent_rss_bytes, (x) => (x / 1e6).toFixed(0)),
      dash(r.rate_per_s, (x) => x.toFixed(1)),
      dash(r.p95_ms, (x) => x.toFixed(2)),
      dash(r.last_seen_ago_ms, (x) => `${ago(x)} ago`),
    ]),
  );
}

/** Connects as `kizuna models` does: this board's credentials, an app token, or an open mesh. */
export async function connectView(values: MeshValues): Promise<{ link: MeshLink; filters: string[] }> {
  const config = boardConfig(values); // --mesh, else $KIZUNA_MESH, else home
  const link = await linkToMesh(values, config);
  return { link, filters: [topics.allNodeStatus(link.mesh), topics.allNodeHealth(link.mesh)] };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: STATUS_OPTIONS });
  if (values.help) return (console.log(HELP), 0);
  const { link, filters } = await connectView(values);
  try {
    const view = new MeshBoards();
    for (const [topic, payload] of await readRetained(link.transport, filters)) view.accept(topic, payload);
    const now = Date.now();
    console.log(values.json ? JSON.stringify(view.json(link.mesh, now)) : renderTable(view.rows(now)));
    return 0;
  } finally {
    await link.close();
  }
}
