/**
 * The health reporter: every `healthIntervalS` seconds it publishes the board's health report,
 * retained, on `kizuna/v1/<mesh>/node/<node>/health` (mesh/health.ts is the schema,
 * docs/OPERATIONS.md the fields). The figures come from the kernel and firmware
 * (agent/health/system.ts), the worker's counters and events (agent/health/tap.ts,
 * agent/health/inference.ts); the report is built synchronously (`build`), so its own CPU cost,
 * measured with process.cpuUsage around it, is the reporter's alone.
 *
 * It also keeps the board's throttling state ('throttled' event on a change): what the status's
 * `throttled` (an election rank input) should say.
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Bus } from '../mesh/bus.js';
import { encodeNodeHealth, HEALTH_VERSION, type NodeHealth, type ThrottleHealth } from '../mesh/health.js';
import { topics } from '../mesh/topics.js';
import { InferenceMeter, periodTotals, snapshotCounters, type WorkerCounters } from './health/inference.js';
import { cpuLoad, type CoreTimes } from './health/probes.js';
import { SystemProbe } from './health/system.js';
import { WorkerTap } from './health/tap.js';
import type { Logger } from './log.js';

/** No report more often than this, whatever the configuration says. */
const MIN_INTERVAL_MS = 100;
/** The first report comes this soon after the start (a dashboard sees a new board at once). */
const FIRST_REPORT_MS = 1000;

export interface HealthClock {
  /** ms since 1970 (the report's `at`). */
  wall(): number;
  /** A monotonic ms clock (periods, latencies). */
  mono(): number;
}

const REAL_CLOCK: HealthClock = { wall: Date.now, mono: () => performance.now() };

/** What the reporter reads of the agent, each time it reports. */
export interface HealthSource {
  node(): string;
  instance: string;
  /** The worker's cumulative counters (agent/worker.ts `stats`), once it exists. */
  counters(): WorkerCounters | undefined;
  /** Requests and shards accepted and not answered yet (agent/worker.ts `inFlight`). */
  inFlight(): number;
  concurrency: number;
  /** The models served, and whether each one's session is in memory now. */
  loaded(): { name: string; version: string; resident?: boolean }[];
  dataDir: string;
}

export interface HealthOptions {
  mesh: string;
  intervalS: number;
  /** Where reports go (the agent's MQTT transport). */
  publish(topic: string, payload: Buffer): Promise<void>;
  source: HealthSource;
  log: Logger;
  clock?: HealthClock;
  system?: SystemProbe;
}

/** Events: 'report' (NodeHealth) after each publish; 'throttled' (now: boolean) when that changes. */
export class HealthReporter extends EventEmitter {
  readonly meter = new InferenceMeter();
  private readonly tap: WorkerTap;
  private readonly clock: HealthClock;
  private readonly system: SystemProbe;
  private timer?: NodeJS.Timeout;
  private seq = 0;
  private lastMono: number;
  private lastCores: CoreTimes[];
  private lastCounters: WorkerCounters = { answered: 0, errors: {} };
  /** CPU ms of encoding and publishing the previous report (counted in the next one). */
  private carriedCpuMs = 0;
  private throttle?: ThrottleHealth;
  private running?: Promise<void>;
  /** A reconnection came while a report was on its way: report again as soon as it is sent. */
  private again = false;
  private stopped = false;

  constructor(private readonly options: HealthOptions) {
    super();
    this.clock = options.clock ?? REAL_CLOCK;
    this.system = options.system ?? new SystemProbe();
    this.tap = new WorkerTap(this.meter, { mesh: options.mesh, node: options.source.node, now: this.clock.mono });
    this.lastMono = this.clock.mono();
    this.lastCores = this.system.coreTimes();
  }

  /** Whether the board is throttled or under-powered now (false when it cannot tell): for the status's `throttled`. */
  get throttledNow(): boolean {
    return this.throttle?.now ?? false;
  }

  /**
   * Listens to the worker's bus and events (before the worker starts, so the topic comes first).
   * Not when reports are off (interval 0): then the reporter costs nothing per request.
   */
  watch(bus: Bus, worker: EventEmitter): void {
    if (this.options.intervalS > 0) this.tap.attach(bus, worker);
  }

  /**
   * The first report within a second (or the interval, if shorter: the period of its CPU and rate
   * figures must be long enough to mean something), then one every interval; none when it is 0.
   */
  start(): void {
    if (this.options.intervalS <= 0 || this.stopped) return;
    this.schedule(Math.min(FIRST_REPORT_MS, this.options.intervalS * 1000));
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      void this.reportNow().finally(() => {
        const now = this.again;
        this.again = false;
        if (!this.stopped) this.schedule(now ? 0 : Math.max(MIN_INTERVAL_MS, this.options.intervalS * 1000));
      });
    }, ms);
  }

  /** After a (re)connection: report at once (a new broker has no retained report), then every interval. */
  reconnected(): void {
    if (this.options.intervalS <= 0 || this.stopped || !this.timer) return;
    if (this.running) this.again = true;
    else this.schedule(0);
  }

  /**
   * No more reports. A report still on its way is not waited for: with no broker reachable it
   * would wait for ever (closing the transport fails it).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.tap.detach();
  }

  /** Builds a report and publishes it (one at a time). */
  reportNow(): Promise<void> {
    this.running ??= this.publishOne().finally(() => (this.running = undefined));
    return this.running;
  }

  private async publishOne(): Promise<void> {
    const report = this.build();
    const cpu0 = process.cpuUsage();
    const topic = topics.nodeHealth(this.options.mesh, report.node);
    const sent = this.options.publish(topic, encodeNodeHealth(report));
    this.carriedCpuMs = cpuMs(process.cpuUsage(cpu0));
    try {
      await sent;
      this.emit('report', report);
    } catch (err) {
      this.options.log.debug(`health report not sent: ${(err as Error).message}`);
    }
  }

  /** The report of the period ending now (synchronous: its CPU time is the reporter's alone). */
  build(): NodeHealth {
    const cpu0 = process.cpuUsage();
    const { source } = this.options;
    const mono = this.clock.mono();
    const period_s = Math.max(0, (mono - this.lastMono) / 1000);
    this.lastMono = mono;

    const cores = this.system.coreTimes();
    const cpu = cpuLoad(this.lastCores, cores);
    this.lastCores = cores;
    const mem = this.system.memory();
    const temperature = this.system.temperature();
    this.updateThrottle(this.system.throttle());
    const disk = this.system.disk(source.dataDir);

    const counters = source.counters() ?? this.lastCounters;
    const totals = periodTotals(this.lastCounters, counters, period_s);
    this.lastCounters = snapshotCounters(counters);
    const loaded = source.loaded();
    this.tap.sweep();
    const inFlight = source.inFlight();

    const report: NodeHealth = {
      v: HEALTH_VERSION,
      node: source.node(),
      instance: source.instance,
      seq: ++this.seq,
      at: this.clock.wall(),
      interval_s: this.options.intervalS,
      period_s: round3(period_s),
      cpu: { ...cpu, load_avg: os.loadavg().map((l) => Math.round(l * 100) / 100) },
      memory: {
        total_bytes: mem.total,
        available_bytes: mem.available,
        used_bytes: Math.max(0, mem.total - mem.available),
        agent_rss_bytes: process.memoryUsage.rss(),
      },
      ...(temperature !== undefined ? { temperature_c: temperature } : {}),
      ...(this.throttle ? { throttle: this.throttle } : {}),
      ...(disk ? { disk } : {}),
      uptime: { process_s: round3(process.uptime()), host_s: round3(os.uptime()) },
      inference: {
        ...totals,
        in_flight: inFlight,
        queue_depth: Math.max(0, inFlight - source.concurrency),
        concurrency: source.concurrency,
        models: this.meter.take(period_s, loaded.map((m) => m.name)),
        loaded,
      },
      reporter_cpu_ms: 0,
    };
    report.reporter_cpu_ms = round3(cpuMs(process.cpuUsage(cpu0)) + this.carriedCpuMs);
    return report;
  }

  private updateThrottle(next: ThrottleHealth | undefined): void {
    const was = this.throttledNow;
    this.throttle = next;
    if (this.throttledNow !== was) this.emit('throttled', this.throttledNow);
  }
}

const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
