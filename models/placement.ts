/**
 * Placement on one board: which of the models it can serve (their bytes are here, verified) have
 * an onnxruntime session in memory. Pure functions, no I/O and no clock: the store's residency
 * (models/residency.ts) feeds them what is resident and acts on their answers.
 *
 * A board has a memory budget for model sessions. A request for a model that is not resident
 * loads it; if that would pass the budget, resident models that no inference uses are unloaded,
 * least recently used first. A model in use is never unloaded: the load waits until the models it
 * must displace are idle. A model that does not fit even alone is loaded alone (one model must
 * always be servable), past the budget.
 */

const MiB = 1024 * 1024;

/** What a session costs beyond its file, by the estimate: the file (x3) and a fixed part. */
export const ESTIMATE_FACTOR = 3;
export const ESTIMATE_BASE_BYTES = 1 * MiB;
/** A measured footprint is believed up to this many times the estimate (the rest is noise of the process). */
export const MEASURE_CAP_FACTOR = 8;
/** The automatic budget: this share of the board's memory, and never less than AUTO_MIN_BYTES. */
export const AUTO_SHARE = 0.4;
export const AUTO_MIN_BYTES = 64 * MiB;

/**
 * The memory a session of a model file of `fileBytes` is expected to take. Measured on the 2-core
 * x86 development machine (RSS after creating the session and one run): MobileNetV2 int8 3.5 MB
 * file -> 10-11 MB, fp32 13.3 MB -> 36-38 MB, YOLOX-Nano 3.5 MB -> 8-21 MB, the built-in digits
 * 0.1-0.4 MB -> under 1 MB. Weights are held about twice (the graph and prepacked kernels), plus
 * the arena of intermediate tensors: 3x the file and 1 MiB covers these.
 */
export function estimateBytes(fileBytes: number): number {
  return Math.ceil(ESTIMATE_FACTOR * Math.max(0, fileBytes) + ESTIMATE_BASE_BYTES);
}

/**
 * A model's footprint from its estimate and what was measured (RSS growth around its load), if
 * anything: never below the estimate, never above MEASURE_CAP_FACTOR times it (another request's
 * buffers allocated meanwhile are not the model's).
 */
export function footprint(estimate: number, measured?: number): number {
  if (measured === undefined || !Number.isFinite(measured)) return estimate;
  return Math.round(Math.min(MEASURE_CAP_FACTOR * estimate, Math.max(estimate, measured)));
}

/** The budget of a board with `totalBytes` of memory, when none is configured. */
export function autoBudget(totalBytes: number): number {
  return Math.max(AUTO_MIN_BYTES, Math.floor(AUTO_SHARE * totalBytes));
}

/** A model with a session in memory, or one being created. */
export interface Resident {
  name: string;
  /** Its footprint (the estimate while it loads). */
  bytes: number;
  /** When an inference last took it: any increasing counter; larger is more recent. */
  lastUsed: number;
  /** Inferences holding it now: never evicted while above 0. */
  inUse: number;
  /** Its session is being created: it counts, and cannot be evicted. */
  loading?: boolean;
}

export interface Want {
  name: string;
  /** Its expected footprint (estimateBytes, or what it measured when it was loaded before). */
  bytes: number;
}

export type Decision =
  /** Resident already (or loading: join that load). */
  | { kind: 'hit' }
  /** Unload `evict` (idle, least recently used first), then load it; `over`: alone past the budget. */
  | { kind: 'load'; evict: string[]; over: boolean }
  /** It fits only once `until` (in use or loading, least recently used first) are idle: ask again then. */
  | { kind: 'wait'; until: string[] };

/** Budget 0 (or less): no limit. */
export const unlimited = (budget: number): boolean => !(budget > 0);

const byAge = (a: Resident, b: Resident): number => a.lastUsed - b.lastUsed || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export function usedBytes(resident: readonly Resident[]): number {
  return resident.reduce((sum, r) => sum + r.bytes, 0);
}

/** What to do for a request of `want` on a board whose sessions are `resident`. */
export function decide(budget: number, resident: readonly Resident[], want: Want): Decision {
  if (resident.some((r) => r.name === want.name)) return { kind: 'hit' };
  if (unlimited(budget)) return { kind: 'load', evict: [], over: false };
  let used = usedBytes(resident);
  const evict: string[] = [];
  const idle = resident.filter((r) => r.inUse <= 0 && !r.loading).sort(byAge);
  for (const r of idle) {
    if (used + want.bytes <= budget) break;
    evict.push(r.name);
    used -= r.bytes;
  }
  if (used + want.bytes <= budget) return { kind: 'load', evict, over: false };
  const busy = resident.filter((r) => r.inUse > 0 || r.loading).sort(byAge);
  if (!busy.length) return { kind: 'load', evict, over: true };
  // The busy models it would displace, oldest first; all of them when it does not fit even then.
  const until: string[] = [];
  for (const r of busy) {
    until.push(r.name);
    used -= r.bytes;
    if (used + want.bytes <= budget) break;
  }
  return { kind: 'wait', until };
}

/**
 * Idle models to unload so that the resident ones fit the budget again (a footprint measured
 * above its estimate can pass it), least recently used first; never the last one resident.
 */
export function overflow(budget: number, resident: readonly Resident[]): string[] {
  if (unlimited(budget)) return [];
  let used = usedBytes(resident);
  let left = resident.length;
  const out: string[] = [];
  for (const r of resident.filter((x) => x.inUse <= 0 && !x.loading).sort(byAge)) {
    if (used <= budget || left <= 1) break;
    out.push(r.name);
    used -= r.bytes;
    left--;
  }
  return out;
}

/** Whether a model of `bytes` would be loaded at start: it fits beside what is resident, or nothing is. */
export function fitsNow(budget: number, resident: readonly Resident[], bytes: number): boolean {
  return unlimited(budget) || !resident.length || usedBytes(resident) + bytes <= budget;
}
