/**
 * The operator's view of one agent: the health reporter, the web dashboard, the Prometheus
 * endpoint and Home Assistant discovery. None of them serves inference; they only read what the
 * agent keeps anyway, so they live here, apart from the composition root, behind four steps:
 *
 *   attach (on the first MQTT connection, before the worker starts: health watches it)
 *   -> startReports (once the birth is out: Home Assistant, then the health timer)
 *   -> startEndpoints (once the agent serves: dashboard, metrics)
 *   stopEndpoints -> (the agent stops the election) -> stopReports, before the goodbyes.
 */
import type { Transport } from '../mesh/mqtt.js';
import type { SwitchBus } from '../mesh/bus.js';
import type { Roster } from '../mesh/roster.js';
import type { NodeHealth } from '../mesh/health.js';
import type { ModelStore } from '../models/store.js';
import type { Role } from './advert.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { Worker } from './worker.js';
import type { AgentSecurity } from './security.js';
import { HealthReporter } from './health.js';
import type { SystemProbe } from './health/system.js';
import { Dashboard } from './dashboard/server.js';
import { HomeAssistantDiscovery } from './home-assistant.js';
import { MetricsServer } from './metrics.js';
import { agentFamilies, processFigures } from './metrics/families.js';
import { kizunaVersion } from './version.js';

export interface OperatorServicesOptions {
  config: Config;
  node: () => string;
  instance: string;
  store: ModelStore;
  roster: Roster;
  log: Logger;
  security?: AgentSecurity;
  /** Where health reads the machine (tests: a fake Pi firmware file). */
  system?: SystemProbe;
  /** The URL the dashboard hands to browsers. */
  brokerUrl: () => string;
  /** This agent's place in the mesh now (for the metrics). */
  mesh: () => { role: Role; term: number };
  /** A change of throttling changes this board's rank: the agent says it in its status. */
  throttled: () => void;
}

/** The MQTT side of the agent, once connected: what health reports ride on and watch. */
interface Link {
  transport: Transport;
  bus: SwitchBus;
  worker: Worker;
}

export class OperatorServices {
  private link?: Link;
  /** Publishes this board's health report every healthIntervalS (agent/health.ts). */
  private reporter?: HealthReporter;
  private dashboardServer?: Dashboard;
  private metricsServer?: MetricsServer;
  private homeAssistant?: HomeAssistantDiscovery;

  constructor(private readonly o: OperatorServicesOptions) {}

  get health(): HealthReporter | undefined {
    return this.reporter;
  }

  get dashboard(): Dashboard | undefined {
    return this.dashboardServer;
  }

  get metrics(): MetricsServer | undefined {
    return this.metricsServer;
  }

  get homeAssistantDiscovery(): HomeAssistantDiscovery | undefined {
    return this.homeAssistant;
  }

  /** The health reporter on the agent's connection; it watches the bus and worker before they start. */
  attach(link: Link): void {
    const { config, store, log } = this.o;
    this.link = link;
    const { transport, worker } = link;
    this.reporter = new HealthReporter({
      mesh: config.mesh,
      intervalS: config.healthIntervalS,
      publish: (topic, payload) => transport.publish(topic, payload, { qos: 0, retain: true }),
      source: {
        node: () => this.o.node(),
        instance: this.o.instance,
        counters: () => worker.stats,
        inFlight: () => worker.inFlight,
        concurrency: config.concurrency,
        loaded: () => {
          const warm = store.memory().warm;
          return store.list().map((m) => ({ name: m.manifest.name, version: m.manifest.version, resident: warm.has(m.manifest.name) }));
        },
        dataDir: config.dataDir,
      },
      log: log.child('health'),
      ...(this.o.system ? { system: this.o.system } : {}),
    });
    this.reporter.on('throttled', () => this.o.throttled());
    this.reporter.watch(link.bus, worker);
  }

  /** Once this board's status is out: Home Assistant discovery (when configured), then the health timer. */
  async startReports(): Promise<void> {
    const { config, log } = this.o;
    const health = this.reporter!;
    if (config.homeAssistant) {
      this.homeAssistant = new HomeAssistantDiscovery({
        mesh: config.mesh, node: this.o.node(), prefix: config.homeAssistantPrefix, intervalS: config.healthIntervalS, mqtt: this.link!.transport, reports: health, log: log.child('home-assistant'),
      });
      await this.homeAssistant.start();
    }
    health.start();
  }

  /** The MQTT connection is back: retained reports and discovery configs are sent again. */
  reconnected(): void {
    this.reporter?.reconnected();
    this.homeAssistant?.reconnected();
  }

  /** The HTTP endpoints, when their ports are set. */
  async startEndpoints(): Promise<void> {
    const { config } = this.o;
    if (config.dashboardPort !== undefined) await this.startDashboard(config.dashboardPort);
    if (config.metricsPort !== undefined) await this.startMetrics(config.metricsPort);
  }

  /** `lenient` (a failed start): every step runs, whatever the one before it threw. */
  async stopEndpoints(lenient = false): Promise<void> {
    await settle(this.dashboardServer?.stop(), lenient);
    await settle(this.metricsServer?.stop(), lenient);
  }

  async stopReports(lenient = false): Promise<void> {
    await settle(this.homeAssistant?.stop(), lenient);
    await settle(this.reporter?.stop(), lenient);
  }

  private async startDashboard(port: number): Promise<void> {
    const { config } = this.o;
    const creds = this.o.security?.creds;
    const transport = this.link?.transport;
    this.dashboardServer = await Dashboard.start({
      host: config.dashboardHost, port, mesh: config.mesh, node: this.o.node(), roster: this.o.roster, meshUrl: () => this.o.brokerUrl(),
      // Its requests travel as base64 JSON: the largest image that fits the mesh's payload limit.
      maxImageBytes: Math.floor(((config.maxPayloadBytes - 1024) * 3) / 4), log: this.o.log.child('dashboard'),
      ...(creds ? { credentials: { publicKey: creds.publicKey, ...(creds.tls ? { ca: creds.tls.ca } : {}) } } : {}),
      ...(config.dashboardToken ? { token: config.dashboardToken } : {}),
      // The boards' health reports reach it through this agent's own connection.
      ...(transport ? { health: transport } : {}),
    });
  }

  /** Prometheus metrics from what the agent keeps anyway: the health meter, the worker, the mesh. */
  private async startMetrics(port: number): Promise<void> {
    const { config, store, roster } = this.o;
    let health: NodeHealth | undefined;
    this.reporter?.on('report', (h: NodeHealth) => (health = h));
    this.metricsServer = await MetricsServer.start({
      host: config.metricsHost, port, labels: { mesh: config.mesh, node: this.o.node() }, log: this.o.log.child('metrics'),
      collect: () => {
        const warm = store.memory().warm;
        const worker = this.link?.worker;
        const mesh = this.o.mesh();
        return agentFamilies({
          instance: this.o.instance, version: kizunaVersion(),
          models: this.reporter?.meter.totalsByModel() ?? new Map(),
          ...(worker ? { worker: worker.stats } : {}),
          inFlight: worker?.inFlight ?? 0, concurrency: config.concurrency,
          served: store.list().map((m) => ({ name: m.manifest.name, version: m.manifest.version, resident: warm.has(m.manifest.name) })),
          role: mesh.role, term: mesh.term, boardsOnline: roster.online().length, boardsKnown: roster.all().length,
          ...(health ? { health } : {}),
          process: processFigures(),
        });
      },
    });
  }
}

async function settle(step: Promise<void> | undefined, lenient: boolean): Promise<void> {
  await (lenient ? step?.catch(() => undefined) : step);
}
