/**
 * The pure parts of a health report's system figures: parsers of what the kernel and the
 * Raspberry Pi firmware print, and the arithmetic on them. No I/O here (agent/health/system.ts
 * reads the files), so every case can be tried from a string.
 */
import type { ThrottleHealth } from '../../mesh/health.js';

/** One core's cumulative times, in the kernel's ticks: busy and all. */
export interface CoreTimes {
  busy: number;
  total: number;
}

/**
 * The per-core lines (`cpu0 ...`, `cpu1 ...`) of /proc/stat. Columns: user nice system idle iowait
 * irq softirq steal guest guest_nice; idle and iowait are idle, guest time is already in user.
 */
export function parseProcStat(text: string): CoreTimes[] {
  const cores: CoreTimes[] = [];
  for (const line of text.split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    const busy = user + nice + system + irq + softirq + steal;
    cores.push({ busy, total: busy + idle + iowait });
  }
  return cores;
}

/** The same from os.cpus() (where there is no /proc/stat): ms instead of ticks, same shares. */
export function coreTimesOf(cpus: readonly { times: { user: number; nice: number; sys: number; idle: number; irq: number } }[]): CoreTimes[] {
  return cpus.map(({ times: t }) => {
    const busy = t.user + t.nice + t.sys + t.irq;
    return { busy, total: busy + t.idle };
  });
}

const pct = (busy: number, total: number): number => (total > 0 ? Math.min(100, Math.max(0, (busy / total) * 100)) : 0);
const round1 = (x: number): number => Math.round(x * 10) / 10;

/**
 * Busy share of each core and of all together between two readings, 0..100 (one decimal). A core
 * that appeared or vanished between them (hotplug) is left out of both.
 */
export function cpuLoad(prev: readonly CoreTimes[], next: readonly CoreTimes[]): { total_pct: number; cores_pct: number[] } {
  const n = Math.min(prev.length, next.length);
  let busy = 0;
  let total = 0;
  const cores_pct: number[] = [];
  for (let i = 0; i < n; i++) {
    const db = Math.max(0, next[i]!.busy - prev[i]!.busy);
    const dt = Math.max(0, next[i]!.total - prev[i]!.total);
    cores_pct.push(round1(pct(db, dt)));
    busy += db;
    total += dt;
  }
  return { total_pct: round1(pct(busy, total)), cores_pct };
}

/** MemTotal and MemAvailable of /proc/meminfo, in bytes (undefined when either is missing: kernels before 3.14). */
export function parseMeminfo(text: string): { total: number; available: number } | undefined {
  const kb = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kb('MemTotal');
  const available = kb('MemAvailable');
  return total !== undefined && available !== undefined ? { total, available } : undefined;
}

/** A thermal zone's `temp` (millidegrees Celsius) in degrees, one decimal; undefined when it is not a number. */
export function parseMilliCelsius(text: string): number | undefined {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) return undefined;
  const c = Number(t) / 1000;
  return c > -273.15 && c < 1000 ? round1(c) : undefined;
}

/**
 * The firmware's throttling bit field as the board prints it: the sysfs file holds bare hex
 * ("50005\n"), vcgencmd prints "throttled=0x50005". Undefined when it is neither.
 */
export function parseThrottled(text: string): number | undefined {
  const m = /^\s*(?:throttled=)?(?:0x)?([0-9a-fA-F]{1,8})\s*$/.exec(text);
  return m ? parseInt(m[1]!, 16) : undefined;
}

/** Bits of get_throttled (Raspberry Pi documentation, "vcgencmd get_throttled"). */
export const THROTTLE_BITS = {
  under_voltage: 0,
  freq_capped: 1,
  throttled: 2,
  soft_temp_limit: 3,
  under_voltage_ever: 16,
  freq_capped_ever: 17,
  throttled_ever: 18,
  soft_temp_limit_ever: 19,
} as const;

/** The bit field decoded. `now` is any of bits 0-3: hot or under-powered at this moment. */
export function decodeThrottled(raw: number, source: ThrottleHealth['source']): ThrottleHealth {
  const bit = (b: number) => ((raw >>> b) & 1) === 1;
  const flags = Object.fromEntries(Object.entries(THROTTLE_BITS).map(([k, b]) => [k, bit(b)])) as Record<keyof typeof THROTTLE_BITS, boolean>;
  return { raw: raw >>> 0, source, now: (raw & 0xf) !== 0, ...flags };
}
