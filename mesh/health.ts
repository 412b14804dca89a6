/**
 * A board's health report (`kizuna/v1/<mesh>/node/<node>/health`, retained): published by every
 * agent every `healthIntervalS` seconds (agent/health.ts). Liveness is NOT here: it is the
 * node's status (mesh/status.ts: birth and will). A dead board's last health stays retained; read
 * `at` (and the status's `online`) before trusting its figures. docs/OPERATIONS.md describes each
 * field for people.
 *
 * Figures "since the last report" cover `period_s` seconds; `total_*` figures count since the
 * agent started (this `instance`). Absent optional fields mean "not measurable on this board"
 * (no thermal zone, not a Raspberry Pi), never zero.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { nestedDeeperThan } from './schemas.js';

export const HEALTH_VERSION = 1;

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const SafeInteger = Type.Integer({ minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER });
const NonNegative = Type.Number({ minimum: 0 });
const Percent = Type.Number({ minimum: 0, maximum: 100 });
const Name = Type.String({ maxLength: 128 });
/** A latency percentile in ms, or null when no request was answered in the period. */
const Latency = Type.Union([NonNegative, Type.Null()]);

export const CpuHealthSchema = Type.Object({
  /** Busy share of all cores together over the period, 0..100. */
  total_pct: Percent,
  /** Busy share of each core over the period, 0..100, in the kernel's core order. */
  cores_pct: Type.Array(Percent, { maxItems: 1024 }),
  /** The kernel's 1, 5 and 15 minute load averages (runnable tasks, not a percentage). */
  load_avg: Type.Array(NonNegative, { maxItems: 3 }),
});

export const MemoryHealthSchema = Type.Object({
  total_bytes: Count,
  /** What new work can use without swapping (Linux MemAvailable): free memory plus reclaimable caches. */
  available_bytes: Count,
  /** total_bytes - available_bytes. */
  used_bytes: Count,
  /** Resident memory of the agent's own process (onnxruntime sessions included). */
  agent_rss_bytes: Count,
});

/**
 * A Raspberry Pi's firmware flags (get_throttled), decoded. `*_ever` flags stay set since boot.
 * Absent on boards without the firmware interface.
 */
export const ThrottleHealthSchema = Type.Object({
  /** The raw bit field (bits 0-3 now, 16-19 since boot). */
  raw: Count,
  source: Type.Union([Type.Literal('sysfs'), Type.Literal('vcgencmd')]),
  /** Any of the four "now" flags: what the status's `throttled` (the election's rank input) says. */
  now: Type.Boolean(),
  under_voltage: Type.Boolean(),
  freq_capped: Type.Boolean(),
  throttled: Type.Boolean(),
  soft_temp_limit: Type.Boolean(),
  under_voltage_ever: Type.Boolean(),
  freq_capped_ever: Type.Boolean(),
  throttled_ever: Type.Boolean(),
  soft_temp_limit_ever: Type.Boolean(),
});

export const DiskHealthSchema = Type.Object({
  /** The agent's data directory (its model store lives there). */
  path: Type.String({ maxLength: 4096 }),
  total_bytes: Count,
  /** Bytes an unprivileged process can still write (statfs bavail). */
  free_bytes: Count,
});

export const ModelHealthSchema = Type.Object({
  name: Name,
  /** Answered since the last report: single requests (results and errors) and job inputs, one each. */
  requests: Count,
  rate_per_s: NonNegative,
  /** From acceptance to the reply being sent, single requests answered in the period (not job inputs). */
  p50_ms: Latency,
  p95_ms: Latency,
  /** Error replies to single requests in the period (job inputs' errors are in `errors_by_code` only). */
  errors: Count,
  total_requests: Count,
  total_errors: Count,
});

export const InferenceHealthSchema = Type.Object({
  /** Answered since the last report (results and errors; job inputs one each). */
  requests: Count,
  rate_per_s: NonNegative,
  /** Error replies since the last report, every code together (job inputs included). */
  errors: Count,
  errors_by_code: Type.Record(Type.String({ maxLength: 64 }), Count, { maxProperties: 64 }),
  total_requests: Count,
  total_errors: Count,
  total_errors_by_code: Type.Record(Type.String({ maxLength: 64 }), Count, { maxProperties: 64 }),
  /** Requests and job shards accepted and not answered yet, when the report was made. */
  in_flight: Count,
  /** Of those, how many wait for an inference slot: max(0, in_flight - concurrency) (an estimate). */
  queue_depth: Count,
  /** Inferences this agent runs at once. */
  concurrency: Count,
  /** Per model served here or asked for in the period; models without traffic have zeros and null percentiles. */
  models: Type.Array(ModelHealthSchema, { maxItems: 1024 }),
  /**
   * The models this board serves now (those its status lists); `resident`: its session is in
   * memory now (a served model may be loaded on demand under a memory budget).
   */
  loaded: Type.Array(Type.Object({ name: Name, version: Type.String({ maxLength: 32 }), resident: Type.Optional(Type.Boolean()) }), { maxItems: 1024 }),
});

/**
 * Every field is typed and bounded; fields this version does not know are let through (a newer
 * board may add some), but no report nests deeper than HEALTH_MAX_DEPTH.
 */
export const NodeHealthSchema = Type.Object({
  v: Type.Literal(HEALTH_VERSION),
  node: Name,
  /** The agent process that reported: the same `instance` as its status. */
  instance: Type.String({ maxLength: 256 }),
  /** Reports of this instance, from 1. */
  seq: Count,
  /** When the report was made, ms since 1970 by the board's clock. */
  at: SafeInteger,
  /** The configured reporting interval (healthIntervalS). */
  interval_s: NonNegative,
  /** The seconds the "since the last report" figures cover (the first report: since the agent started). */
  period_s: NonNegative,
  cpu: CpuHealthSchema,
  memory: MemoryHealthSchema,
  /** The hottest thermal zone, degrees Celsius; absent when the board exposes none. */
  temperature_c: Type.Optional(Type.Number({ minimum: -273.15, maximum: 1000 })),
  throttle: Type.Optional(ThrottleHealthSchema),
  disk: Type.Optional(DiskHealthSchema),
  uptime: Type.Object({ process_s: NonNegative, host_s: NonNegative }),
  inference: InferenceHealthSchema,
  /**
   * CPU time of this process spent on reporting: reading and computing this report's figures,
   * plus encoding and publishing the previous one (process.cpuUsage around each; the per-request
   * bookkeeping between reports is not in it).
   */
  reporter_cpu_ms: NonNegative,
});

export type NodeHealth = Static<typeof NodeHealthSchema>;
export type ModelHealth = Static<typeof ModelHealthSchema>;
export type ThrottleHealth = Static<typeof ThrottleHealthSchema>;

const checkHealth = TypeCompiler.Compile(NodeHealthSchema);
/** A valid report nests 4 levels (health/inference/models/i); room for fields of newer versions. */
const HEALTH_MAX_DEPTH = 12;
const HEALTH_MAX_BYTES = 1 << 20;

/** Whether `value` is a valid health report (for tests and writers). */
export function isNodeHealth(value: unknown): value is NodeHealth {
  return checkHealth.Check(value) && !nestedDeeperThan(value, HEALTH_MAX_DEPTH);
}

/** Why `value` is not a valid health report: one line per problem (empty when it is one). */
export function healthProblems(value: unknown): string[] {
  return [...checkHealth.Errors(value)].map((e) => `${e.path || '(root)'}: ${e.message}`);
}

/** A health report from a payload, or undefined if it is not one (an empty payload clears the topic). */
export function parseNodeHealth(payload: Buffer): NodeHealth | undefined {
  if (payload.length === 0 || payload.length > HEALTH_MAX_BYTES) return undefined;
  let h: unknown;
  try {
    h = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  return isNodeHealth(h) ? h : undefined;
}

export function encodeNodeHealth(h: NodeHealth): Buffer {
  return Buffer.from(JSON.stringify(h));
}
