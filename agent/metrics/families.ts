/**
 * The metric families of one agent, from what it already keeps: the health reporter's meter
 * (per model: requests, errors, a latency histogram since the start), the worker's counters
 * (errors by code, in flight), its latest health report (the board's CPU, memory, temperature,
 * throttling), the process (RSS, CPU seconds, start time) and its view of the mesh (role, term,
 * boards online). Pure: `AgentFigures` is read once per scrape.
 */
import type { NodeHealth } from '../../mesh/health.js';
import { LATENCY_BUCKETS_MS, type ModelTotals } from '../health/inference.js';
import type { WorkerStats } from '../worker.js';
import { histogram, type Family } from './exposition.js';

/** The roles a board may have (agent/advert.ts Role), each a series of kizuna_mesh_role. */
export const MESH_ROLES = ['broker', 'standby', 'agent', 'joining'] as const;

export interface AgentFigures {
  instance: string;
  version: string;
  /** Per model since the start (the health reporter's meter); empty when health reports are off. */
  models: ReadonlyMap<string, ModelTotals>;
  worker?: Readonly<WorkerStats>;
  inFlight: number;
  concurrency: number;
  served: readonly { name: string; version: string; resident?: boolean }[];
  role: string;
  term: number;
  boardsOnline: number;
  boardsKnown: number;
  /** The latest health report published, if any. */
  health?: NodeHealth;
  process: { rssBytes: number; heapUsedBytes: number; cpuSeconds: number; startTimeSeconds: number; uptimeSeconds: number };
}

const NO_TRAFFIC: ModelTotals = { requests: 0, errors: 0, latency: { count: 0, sumMs: 0, buckets: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0) } };

const gauge = (name: string, help: string, value: number | undefined): Family => ({ name, help, type: 'gauge', samples: value === undefined ? [] : [{ value }] });
const counter = (name: string, help: string, value: number | undefined): Family => ({ name, help, type: 'counter', samples: value === undefined ? [] : [{ value }] });
const bool = (b: boolean | undefined) => (b === undefined ? undefined : b ? 1 : 0);

export function agentFamilies(f: AgentFigures): Family[] {
  // Served models have series from the start (zeros), so a rate() sees their first requests.
  const names = [...new Set([...f.models.keys(), ...f.served.map((m) => m.name)])].sort();
  const models = names.map((name) => [name, f.models.get(name) ?? NO_TRAFFIC] as const);
  const w = f.worker;
  const h = f.health;
  const errorCodes = Object.entries(w?.errors ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return [
    { name: 'kizuna_info', help: 'This agent: its process instance and Kizuna version (always 1).', type: 'gauge', samples: [{ labels: { instance: f.instance, version: f.version }, value: 1 }] },
    {
      name: 'kizuna_inference_requests_total', help: 'Inputs answered per model (single requests, results and errors, and job inputs, one each).', type: 'counter',
      samples: models.map(([model, t]) => ({ labels: { model }, value: t.requests })),
    },
    {
      name: 'kizuna_inference_errors_total', help: 'Error replies to single requests, per model.', type: 'counter',
      samples: models.map(([model, t]) => ({ labels: { model }, value: t.errors })),
    },
    histogram(
      'kizuna_inference_latency_seconds',
      'Single requests, from the agent accepting one to its reply being sent, per model.',
      models.map(([model, t]) => {
        let cumulative = 0;
        const buckets = LATENCY_BUCKETS_MS.map((ms, i) => [ms / 1000, (cumulative += t.latency.buckets[i]!)] as const);
        return { labels: { model }, buckets, sum: t.latency.sumMs / 1000, count: t.latency.count };
      }),
    ),
    counter('kizuna_requests_received_total', 'Requests and job inputs the worker received (duplicates included).', w?.received),
    counter('kizuna_results_total', 'Requests and job inputs answered with a result.', w?.answered),
    { name: 'kizuna_errors_total', help: 'Error replies by code (KZ_ERR_*), job inputs included.', type: 'counter', samples: errorCodes.map(([code, n]) => ({ labels: { code }, value: n ?? 0 })) },
    counter('kizuna_duplicate_requests_total', 'Requests received again with an id already answered or running (answered from the reply cache or ignored).', w?.duplicates),
    counter('kizuna_job_shards_total', 'Parts of jobs run here.', w?.shards),
    gauge('kizuna_in_flight', 'Requests and job shards accepted and not answered yet.', f.inFlight),
    gauge('kizuna_queue_depth', 'Of those, how many wait for an inference slot (an estimate: in flight minus concurrency).', Math.max(0, f.inFlight - f.concurrency)),
    gauge('kizuna_concurrency', 'Inferences this agent runs at once.', f.concurrency),
    {
      name: 'kizuna_model_resident', help: 'Each model this board serves: 1 when its session is in memory, 0 when it loads on demand.', type: 'gauge',
      samples: [...f.served].sort((a, b) => a.name.localeCompare(b.name)).map((m) => ({ labels: { model: m.name, version: m.version }, value: m.resident === false ? 0 : 1 })),
    },
    { name: 'kizuna_mesh_role', help: 'This board\'s role in the mesh: 1 for the current one.', type: 'gauge', samples: MESH_ROLES.map((role) => ({ labels: { role }, value: role === f.role ? 1 : 0 })) },
    gauge('kizuna_mesh_term', 'The broker term this board follows.', f.term),
    gauge('kizuna_mesh_boards_online', 'Boards of the mesh online, as this board sees them (itself included).', f.boardsOnline),
    gauge('kizuna_mesh_boards', 'Boards of the mesh this board knows of, online or not.', f.boardsKnown),
    gauge('kizuna_health_report_timestamp_seconds', 'When the latest health report (the kizuna_board_* figures) was made, by the board\'s clock.', h && h.at / 1000),
    gauge('kizuna_board_cpu_busy_percent', 'Busy share of all cores together over the latest health report\'s period.', h?.cpu.total_pct),
    gauge('kizuna_board_memory_total_bytes', 'RAM the kernel manages.', h?.memory.total_bytes),
    gauge('kizuna_board_memory_available_bytes', 'Memory new work can use without swapping (MemAvailable).', h?.memory.available_bytes),
    gauge('kizuna_board_temperature_celsius', 'The hottest thermal zone (absent when the board has none).', h?.temperature_c),
    gauge('kizuna_board_throttled', 'A Raspberry Pi\'s firmware says throttled, capped or under-voltage now (absent elsewhere).', bool(h?.throttle?.now)),
    gauge('kizuna_board_under_voltage', 'A Raspberry Pi\'s supply is below 4.63 V now (absent elsewhere).', bool(h?.throttle?.under_voltage)),
    gauge('kizuna_board_disk_free_bytes', 'What the agent may still write in its data directory\'s file system.', h?.disk?.free_bytes),
    gauge('process_resident_memory_bytes', 'Resident memory of the agent process.', f.process.rssBytes),
    gauge('nodejs_heap_used_bytes', 'V8 heap in use.', f.process.heapUsedBytes),
    counter('process_cpu_seconds_total', 'CPU time of the agent process, user and system.', f.process.cpuSeconds),
    gauge('process_start_time_seconds', 'When the agent process started, seconds since 1970.', f.process.startTimeSeconds),
    gauge('process_uptime_seconds', 'Seconds since the agent process started.', f.process.uptimeSeconds),
  ];
}

/** This process's own figures. */
export function processFigures(): AgentFigures['process'] {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  return {
    rssBytes: mem.rss,
    heapUsedBytes: mem.heapUsed,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    startTimeSeconds: Math.round(performance.timeOrigin) / 1000,
    uptimeSeconds: process.uptime(),
  };
}
