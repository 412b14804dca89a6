/**
 * The board's own figures for a health report, read directly from the kernel and the firmware:
 * /proc/stat (per-core CPU times), /proc/meminfo, /sys/class/thermal, statfs of the data
 * directory, and a Raspberry Pi's get_throttled (sysfs, else vcgencmd). Every read but vcgencmd is
 * a small synchronous file read (tens of microseconds), so the reporter can time its own CPU cost
 * with nothing else running in between. systeminformation is not used: its currentLoad blocks
 * about 0.5 s on its first call, and its cpuTemperature and fsSize cost 4-9 ms and 2-3 ms of CPU
 * per call here and start child processes whose CPU the agent's own figures do not show.
 *
 * The paths can be changed (tests give a fake sysfs); a file that is missing or unreadable makes
 * its figure absent, never an error.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ThrottleHealth } from '../../mesh/health.js';
import { coreTimesOf, decodeThrottled, parseMeminfo, parseMilliCelsius, parseProcStat, parseThrottled, type CoreTimes } from './probes.js';

export interface SystemPaths {
  procStat: string;
  meminfo: string;
  /** Folder of thermal_zone* folders. */
  thermal: string;
  /** The firmware's get_throttled file (Raspberry Pi kernels). */
  throttled: string;
  /** vcgencmd, tried when the file is absent; null: never. */
  vcgencmd: string | null;
}

export const DEFAULT_PATHS: SystemPaths = {
  procStat: '/proc/stat',
  meminfo: '/proc/meminfo',
  thermal: '/sys/class/thermal',
  throttled: '/sys/devices/platform/soc/soc:firmware/get_throttled',
  vcgencmd: 'vcgencmd',
};

const readText = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

export class SystemProbe {
  private readonly paths: SystemPaths;
  private thermalZones?: string[];
  /** vcgencmd's last answer (it runs in the background, so a report shows the previous one). */
  private vcgencmdReading?: ThrottleHealth;
  /** Whether vcgencmd answered at least once; false once it failed (not a Pi): never run again. */
  private vcgencmdWorks?: boolean;
  private vcgencmdRunning = false;

  constructor(paths: Partial<SystemPaths> = {}) {
    this.paths = { ...DEFAULT_PATHS, ...paths };
  }

  /** Cumulative per-core times (ticks from /proc/stat, else ms from os.cpus()). */
  coreTimes(): CoreTimes[] {
    const text = readText(this.paths.procStat);
    const cores = text ? parseProcStat(text) : [];
    return cores.length ? cores : coreTimesOf(os.cpus());
  }

  memory(): { total: number; available: number } {
    const text = readText(this.paths.meminfo);
    return (text && parseMeminfo(text)) || { total: os.totalmem(), available: os.freemem() };
  }

  /** The hottest thermal zone in °C, or undefined when there is none. */
  temperature(): number | undefined {
    this.thermalZones ??= this.listZones();
    let max: number | undefined;
    for (const zone of this.thermalZones) {
      const text = readText(path.join(zone, 'temp'));
      const c = text === undefined ? undefined : parseMilliCelsius(text);
      if (c !== undefined && (max === undefined || c > max)) max = c;
    }
    return max;
  }

  private listZones(): string[] {
    try {
      return fs
        .readdirSync(this.paths.thermal)
        .filter((d) => d.startsWith('thermal_zone'))
        .sort()
        .map((d) => path.join(this.paths.thermal, d));
    } catch {
      return [];
    }
  }

  disk(dir: string): { path: string; total_bytes: number; free_bytes: number } | undefined {
    try {
      const s = fs.statfsSync(dir);
      return { path: dir, total_bytes: s.blocks * s.bsize, free_bytes: s.bavail * s.bsize };
    } catch {
      return undefined;
    }
  }

  /**
   * The firmware's throttling flags: the sysfs file when it exists (read now), else vcgencmd's
   * last answer (and vcgencmd is started again in the background), else undefined.
   */
  throttle(): ThrottleHealth | undefined {
    const text = readText(this.paths.throttled);
    const raw = text === undefined ? undefined : parseThrottled(text);
    if (raw !== undefined) return decodeThrottled(raw, 'sysfs');
    if (text === undefined) this.runVcgencmd();
    return this.vcgencmdReading;
  }

  private runVcgencmd(): void {
    const cmd = this.paths.vcgencmd;
    if (!cmd || this.vcgencmdWorks === false || this.vcgencmdRunning) return;
    this.vcgencmdRunning = true;
    execFile(cmd, ['get_throttled'], { timeout: 2000 }, (err, stdout) => {
      this.vcgencmdRunning = false;
      const raw = err ? undefined : parseThrottled(String(stdout));
      if (raw === undefined) {
        // Not a Pi (no such command), or a firmware that does not answer: stop asking.
        if (this.vcgencmdWorks !== true) this.vcgencmdWorks = false;
        return;
      }
      this.vcgencmdWorks = true;
      this.vcgencmdReading = decodeThrottled(raw, 'vcgencmd');
    });
  }
}
