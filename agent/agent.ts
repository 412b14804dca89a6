/**
 * The agent's composition root: every seam is created, started and stopped here, in order.
 *
 * start: models -> mesh listener -> discovery -> election (broker here, or follow one) ->
 *        MQTT through the listener -> roster mirror and worker -> status (birth; the will is death)
 * stop:  status draining -> worker answers what it accepted -> status offline -> MQTT ->
 *        broker role -> discovery -> listener -> models
 *
 * With `--broker URL` there is no listener and no election: the agent uses that broker.
 */
import { randomBytes } from 'node:crypto';
import { MeshListener } from '../broker/listener.js';
import { Transport, type TransportOptions, type Will } from '../mesh/mqtt.js';
import { SwitchBus } from '../mesh/bus.js';
import { LocalBus } from '../broker/local-bus.js';
import { Roster } from '../mesh/roster.js';
import { parseNodeStatus, type NodeStatus } from '../mesh/status.js';
import { topics } from '../mesh/topics.js';
import type { Engine } from '../models/engine.js';
import { OnnxEngine } from '../models/onnx-engine.js';
import { SimulatedEngine } from '../models/simulated-engine.js';
import { ModelStore } from '../models/store.js';
import { Cas } from '../models/cas.js';
import type { FetchOptions } from '../models/transfer.js';
import { Distribution, storeDir } from './distribution.js';
import type { Advert, Role } from './advert.js';
import { advertOf, boardMemoryBytes, statusOf, type SelfState } from './self.js';
import { autoBudget } from '../models/placement.js';
import { agentClientId } from './broker-role.js';
import { MeshRouting } from './routing.js';
import type { Config } from './config.js';
import { Coordinator, type BrokerRef, type CoordinatorHost } from './coordinator.js';
import type { Dispatcher } from '../broker/dispatcher.js';
import { DispatchDuty } from './dispatch-duty.js';
import { createDiscovery, type Discovery } from './discovery/index.js';
import { answerHello, probe } from './discovery/hello.js';
import { withoutRevoked } from './discovery/trusted.js';
import { loadNodeId } from './identity.js';
import { IdentitySettler } from './identity-settle.js';
import { KizunaError } from '../mesh/errors.js';
import { createLogger, type Logger } from './log.js';
import { Worker } from './worker.js';
import type { HealthReporter } from './health.js';
import type { SystemProbe } from './health/system.js';
import { isLoopback, listenHost, meshSecurity, type AgentSecurity } from './security.js';
import { isRevoked } from './credentials.js';
import type { Dashboard } from './dashboard/server.js';
import { dashboardPolicy } from './dashboard/policy.js';
import type { HomeAssistantDiscovery } from './home-assistant.js';
import type { MetricsServer } from './metrics.js';
import { OperatorServices } from './operator-services.js';
import { watchModels } from './model-log.js';

export interface MeshView {
  broker: string | null;
  term: number;
  online: string[];
}

/** How long a stopping agent waits for the broker to take its last status. */
const GOODBYE_MS = 1000;

/** `p`, or nothing after `ms`: for best-effort steps that must not hold up a shutdown. */
function bounded(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
}

export interface AgentDeps {
  engine?: Engine;
  log?: Logger;
  /** Replaces the discovery the config asks for (tests: an in-memory network). */
  discovery?: Discovery;
  /** Where health reads the machine (tests: a fake Pi firmware file). */
  system?: SystemProbe;
  /** Timeouts and window of model transfers (tests: short timeouts). */
  fetch?: FetchOptions;
}

export class Agent {
  readonly roster = new Roster();
  readonly instance = randomBytes(6).toString('hex');
  private readonly started = Date.now();
  private meshListener?: MeshListener;
  private discovery?: Discovery;
  private coordinator?: Coordinator;
  /** The mesh port's route, and the broker while this board hosts it (agent/routing.ts). */
  private routing?: MeshRouting;
  /** With an external broker: the dispatcher duty, run by the best-ranked agent (agent/dispatch-duty.ts). */
  private duty?: DispatchDuty;
  private transport?: Transport;
  /** What the worker listens on: the transport, or the embedded broker in-process when this agent hosts it. */
  private bus?: SwitchBus;
  private worker?: Worker;
  /** This board's content-addressed model store, and the models it exchanges with the mesh. */
  private cas?: Cas;
  private distribution?: Distribution;
  /** Health reports, the dashboard, metrics and Home Assistant (agent/operator-services.ts). */
  private readonly services: OperatorServices;
  private role: Role = 'joining';
  private term = 0;
  private seq = 0;
  private draining = false;
  private stopping?: Promise<void>;
  private endOnItsOwn?: (why: KizunaError) => void;
  /** Settles when the agent stops by itself (this board was revoked): the CLI then exits. */
  readonly ended = new Promise<KizunaError>((resolve) => (this.endOnItsOwn = resolve));
  /** A live board claiming this node id while the mesh forms (agent/identity-settle.ts). */
  private readonly identity: IdentitySettler;

  private constructor(
    readonly config: Config & { host: string },
    /** This agent's id in the mesh: from the config, else kept in the data directory. */
    private nodeId: string,
    readonly store: ModelStore,
    private readonly log: Logger,
    private readonly deps: AgentDeps,
    /** Mesh credentials (absent: an open mesh). */
    private readonly security?: AgentSecurity,
  ) {
    this.identity = new IdentitySettler({ config, log, instance: this.instance, node: () => this.node, joining: () => this.role === 'joining', ...(security ? { security } : {}) });
    this.services = new OperatorServices({
      config, node: () => this.node, instance: this.instance, store, roster: this.roster, log, ...(security ? { security } : {}),
      ...(deps.system ? { system: deps.system } : {}),
      brokerUrl: () => this.brokerUrl, mesh: () => this.mesh,
      throttled: () => {
        void this.publishStatus();
        void this.discovery?.update(this.advert()).catch((err: Error) => log.warn(`advert update failed: ${err.message}`));
      },
    });
  }

  static async create(config: Config, deps: AgentDeps = {}): Promise<Agent> {
    const log = deps.log ?? createLogger(config.logLevel);
    const real = deps.engine ?? new OnnxEngine();
    const engine = config.simulateMsPerInput > 0 ? new SimulatedEngine(real, config.simulateMsPerInput) : real;
    const security = meshSecurity(config, log);
    // With mesh credentials, a model that did not ship with the package needs the mesh's signature.
    // Placement: sessions within a memory budget, the rest loaded on demand (docs/MODELS.md).
    const budgetBytes = config.modelMemoryMib === undefined ? autoBudget(boardMemoryBytes()) : config.modelMemoryMib * 1024 * 1024;
    const store = new ModelStore(engine, { threads: config.threads }, security && { publicKey: security.creds.publicKey }, { budgetBytes });
    const node = security?.node ?? config.node ?? (await loadNodeId(config.dataDir));
    // A dashboard that would be refused later is refused now, before the board joins the mesh.
    if (config.homeAssistant && config.healthIntervalS <= 0) throw new KizunaError('KZ_ERR_CONFIG', 'homeAssistant needs health reports (its sensors read them): set healthIntervalS above 0');
    if (config.dashboardPort !== undefined) dashboardPolicy({ host: config.dashboardHost, mesh: config.mesh, ...(config.dashboardToken ? { token: config.dashboardToken } : {}), ...(security ? { publicKey: security.creds.publicKey } : {}) });
    return new Agent({ ...config, host: listenHost(config, security, log) }, node, store, log, deps, security);
  }

  get node(): string {
    return this.nodeId;
  }

  /** The URL apps can use: this agent's mesh port (any agent's works), or the external broker. */
  get brokerUrl(): string {
    if (this.config.broker) return this.config.broker;
    const scheme = this.security?.creds.tls ? 'mqtts' : 'mqtt';
    const host = this.config.host === '0.0.0.0' || this.config.host === '::' ? '127.0.0.1' : this.config.host;
    return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${this.meshListener?.port ?? this.config.port}`;
  }

  /** The mesh port's listener (its 'refused' events: connections cut off by the limits). */
  get listener(): MeshListener | undefined {
    return this.meshListener;
  }

  /** The worker, once started (its events and stats are what tests and health reports read). */
  get work(): Worker | undefined {
    return this.worker;
  }

  /** This agent's place in the mesh now. */
  get mesh(): { role: Role; term: number; broker?: BrokerRef } {
    return this.coordinator?.current ?? { role: this.role, term: this.term };
  }

  /** Models across the mesh on this board (its events are what tests read), once connected. */
  get models(): Distribution | undefined {
    return this.distribution;
  }

  /** The web dashboard, when `dashboardPort` is set. */
  get dashboard(): Dashboard | undefined {
    return this.services.dashboard;
  }

  /** The Prometheus endpoint, when `metricsPort` is set. */
  get metrics(): MetricsServer | undefined {
    return this.services.metrics;
  }

  /** Home Assistant discovery, when `homeAssistant` is set and the agent is connected. */
  get homeAssistantDiscovery(): HomeAssistantDiscovery | undefined {
    return this.services.homeAssistantDiscovery;
  }

  /** The health reporter, once connected (its 'report' events are what tests read). */
  get healthReporter(): HealthReporter | undefined {
    return this.services.health;
  }

  get dispatcher(): Dispatcher | undefined {
    return this.routing?.brokerRole?.dispatcher ?? this.duty?.dispatcher;
  }

  async start(): Promise<void> {
    try {
      await this.open();
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Releases whatever a failed start had opened, without the goodbyes of a clean stop. */
  private async abort(): Promise<void> {
    await this.services.stopEndpoints(true);
    this.coordinator?.stop();
    await this.services.stopReports(true);
    await this.duty?.stop().catch(() => undefined);
    await this.distribution?.stop().catch(() => undefined);
    await this.transport?.close(true).catch(() => undefined);
    await this.routing?.stop().catch(() => undefined);
    await this.discovery?.stop().catch(() => undefined);
    await this.meshListener?.stop().catch(() => undefined);
    await this.store.close().catch(() => undefined);
  }

  private async open(): Promise<void> {
    const { config, log } = this;
    await this.store.loadFolders(config.models);
    // Then the board's own store: models added here or fetched from the mesh, checked the same way.
    this.cas = await Cas.open(storeDir(config.dataDir));
    await this.store.loadStore(this.cas);
    for (const p of this.store.problems) log.error(`${p.code}: ${p.message}`);
    watchModels(this.store, log, () => {
      if (!this.stopping) void this.publishStatus();
    });
    if (config.broker) {
      this.role = 'agent';
      await this.connect(config.broker);
      const duty = new DispatchDuty({ mesh: config.mesh, node: this.node, roster: this.roster, transport: this.transport!, log, stopping: () => this.stopping !== undefined });
      this.duty = duty;
      this.roster.on('change', () => void duty.review());
      await duty.review();
    } else {
      await this.joinMesh();
      await this.connect(`${this.security?.creds.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.meshListener!.port}`);
    }
    await this.services.startEndpoints();
    log.info(`agent ${this.node} serving mesh "${config.mesh}" on ${this.brokerUrl} as ${this.mesh.role}`);
  }

  private async joinMesh(): Promise<void> {
    const { config, log } = this;
    this.meshListener = await MeshListener.create({
      port: config.port,
      host: config.host,
      log: log.child('listener'),
      onHello: (s, first) => answerHello(s, { ...this.advert(), view: this.view() }, { first, ...(this.security?.hello ? { prover: this.security.hello.prove } : {}) }),
      guard: { maxPacketBytes: config.maxPacketBytes, publishPerSecond: config.publishPerSecond, publishBurst: config.publishBurst },
      ...(this.security?.creds.tls ? { tls: this.security.creds.tls } : {}),
    });
    // The broker we pipe to is unreachable: the election driver checks it (and elects if it is gone).
    this.meshListener.on('upstream-failed', () => this.coordinator?.brokerConnectionLost());
    const routing = new MeshRouting({
      config, listener: this.meshListener, roster: this.roster, log, ...(this.security ? { security: this.security } : {}),
      node: () => this.node, self: () => this.advert(), models: () => this.distribution, link: () => ({ bus: this.bus, transport: this.transport }),
    });
    this.routing = routing;
    const peers = config.peers.map((p) => ({ host: p.slice(0, p.lastIndexOf(':')), port: Number(p.slice(p.lastIndexOf(':') + 1)) }));
    // An agent listening on loopback only cannot be reached by other boards: no multicast for it.
    const mdns = config.discovery === 'mdns' && !isLoopback(config.host);
    this.discovery =
      this.deps.discovery ??
      createDiscovery({ mesh: config.mesh, peers, disabled: !mdns && !peers.length, probeTimeoutMs: config.probeTimeoutMs, ...(config.mdnsInterface ? { mdnsInterface: config.mdnsInterface } : {}), log });
    this.discovery.on('duplicate', (a: Advert) => this.identity.seen(a));
    const alone = !this.deps.discovery && !mdns && !peers.length;
    const security = this.security;
    const electorate = security ? withoutRevoked(this.discovery, (node) => isRevoked(security.creds, 'board', node)) : this.discovery;
    this.coordinator = new Coordinator(electorate, this.coordinatorHost(routing), {
      self: () => this.advert(),
      formationMs: alone ? 0 : config.formationMs,
      requireProof: this.security?.hello !== undefined,
      beforeJoining: () => this.settleIdentity(),
      log: log.child('election'),
    });
    this.coordinator.on('role', (role: Role, term: number) => {
      [this.role, this.term] = [role, term];
      void this.publishStatus();
    });
    await this.discovery.start(this.advert());
    await this.coordinator.start();
  }

  /** A board that had to take a fresh node id says so in its advert before it joins. */
  private async settleIdentity(): Promise<void> {
    const renewed = await this.identity.settle();
    if (!renewed) return;
    this.nodeId = renewed;
    await this.discovery!.update(this.advert());
  }

  /** What the election drives: the routes (agent/routing.ts), this agent's advert, its roster and probes. */
  private coordinatorHost(routing: MeshRouting): CoordinatorHost {
    const { config, log } = this;
    return {
      becomeBroker: (term, failed) => routing.becomeBroker(term, failed),
      stepDown: () => routing.stepDown(),
      follow: (b: BrokerRef) => routing.follow(b),
      hold: () => routing.hold(),
      advertise: (role, term) => {
        [this.role, this.term] = [role, term];
        void this.discovery?.update(this.advert()).catch((err: Error) => log.warn(`advert update failed: ${err.message}`));
      },
      roster: () => this.roster.all(),
      // With credentials only a member's signed answer counts: rogue adverts move no one.
      probe: (host, port) => probe(host, port, config.probeTimeoutMs, this.security?.hello?.verify),
    };
  }

  /** The MQTT connection (through this agent's own listener, or to the external broker). */
  private async connect(url: string): Promise<void> {
    const { config, log } = this;
    const statusTopic = topics.nodeStatus(config.mesh, this.node);
    this.transport = await this.firstConnection({
      url,
      clientId: agentClientId(this.node),
      ...(this.security ? this.security.login : {}),
      ...(this.security?.creds.tls ? { tls: { ca: this.security.creds.tls.ca, mesh: config.mesh } } : {}),
      keepaliveSeconds: config.keepaliveSeconds,
      connectTimeoutMs: Math.max(2000, config.formationMs * 2),
      // Each connection has its own number; a will from an older one never marks this one dead.
      will: (): Will => ({ topic: statusTopic, payload: JSON.stringify({ ...this.status(), online: false, seq: ++this.seq }), qos: 1, retain: true }),
    });
    this.transport.on('warning', (err: Error) => log.debug(`mqtt: ${err.message}`));
    this.transport.on('down', () => this.coordinator?.brokerConnectionLost());
    this.transport.on('retry-failed', () => this.coordinator?.brokerConnectionLost());
    this.transport.on('up', () => {
      void this.publishStatus();
      this.services.reconnected();
    });
    this.transport.onMessage((topic, payload) => this.onMeshMessage(topic, payload));
    await this.transport.subscribe([topics.allNodeStatus(config.mesh), ...(this.security ? [topics.revoked(config.mesh)] : [])], 1);
    // On the board that hosts the broker, tasks and replies skip TCP entirely.
    const hosted = this.routing?.brokerRole;
    this.bus = new SwitchBus(hosted ? new LocalBus(hosted.broker) : this.transport);
    this.worker = new Worker(this.bus, this.store, { ...config, node: this.node }, log.child('worker'));
    this.services.attach({ transport: this.transport, bus: this.bus, worker: this.worker });
    await this.worker.start();
    this.distribution = new Distribution({
      mesh: config.mesh, node: this.node, cas: this.cas!, store: this.store, bus: this.transport, roster: this.roster, log: log.child('models'),
      statusChanged: () => void this.publishStatus(),
      ...(this.security ? { publicKey: this.security.creds.publicKey } : {}),
      ...(this.deps.fetch ? { fetch: this.deps.fetch } : {}),
    });
    await this.distribution.start();
    await this.publishStatus();
    await this.services.startReports();
  }

  /**
   * The first MQTT connection. Through this agent's own listener it can be closed before its
   * CONNACK while routes change at formation (the candidate it followed, still joining, followed
   * another broker, and a piped connection is served only by a broker): it tries a few times.
   * An external broker (--broker) gets one try, so a wrong URL fails at once.
   */
  private async firstConnection(options: TransportOptions): Promise<Transport> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await Transport.connect(options);
      } catch (err) {
        if (this.config.broker || attempt >= 5) throw err;
        this.log.debug(`first connection to the mesh failed (${(err as Error).message}); trying again`);
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  private onMeshMessage(topic: string, payload: Buffer): void {
    // Kept on every board, so whichever becomes broker next still refuses the revoked.
    if (this.security && topic === topics.revoked(this.config.mesh)) {
      if (this.security.onRevocations(payload)) this.log.info(`revocation list ${this.security.creds.revoked.seq}: ${this.security.creds.revoked.entries.join(', ')}`);
      if (isRevoked(this.security.creds, 'board', this.node) && !this.stopping) {
        const err = new KizunaError('KZ_ERR_UNAUTHORIZED', `this board (${this.node}) is revoked from mesh ${this.config.mesh}: stopping`);
        this.log.error(err.message);
        // No goodbyes: the mesh refuses this board's connection now, so a clean stop would wait forever.
        this.stopping = this.abort().finally(() => this.endOnItsOwn?.(err));
        return;
      }
      this.routing?.brokerRole?.broker.disconnectRevoked();
      return;
    }
    const accepted = this.roster.accept(topic, payload);
    if (topic === topics.nodeStatus(this.config.mesh, this.node)) this.answerOwnStatus(payload);
    if (accepted) this.coordinator?.membersChanged();
  }

  /**
   * Our retained status topic says we are offline: a will (of this connection, of an older one, or
   * of this node's previous process, arriving late), the ghost sweep, or an empty or invalid payload. Readers
   * that saw our birth ignore a stale will (mesh/status.ts, supersedes), but one that subscribes
   * now sees only the retained message: say again that we are alive. A birth of another instance
   * (a duplicate board) is never answered, or two live boards would answer each other forever.
   */
  private answerOwnStatus(payload: Buffer): void {
    if (this.stopping) return;
    if (payload.length && parseNodeStatus(payload)?.online) return;
    void this.publishStatus();
  }

  private async publishStatus(online = true): Promise<void> {
    if (!this.transport) return;
    const status = { ...this.status(), online };
    this.roster.set(status);
    await this.transport.publish(topics.nodeStatus(this.config.mesh, this.node), JSON.stringify(status), { retain: true }).catch(() => undefined);
  }

  /** What this agent tells the mesh about itself: in mDNS, in hello answers, in its status. */
  advert(): Advert {
    return advertOf(this.self());
  }

  private status(): NodeStatus {
    return statusOf(this.self());
  }

  private self(): SelfState {
    const { config, node, instance, started, role, term, seq, draining } = this;
    return {
      config, node, instance, started, role, term, seq, draining, port: this.meshListener?.port ?? config.port, models: this.store.list(), memory: this.store.memory(),
      throttled: this.services.health?.throttledNow ?? false,
      ...(this.distribution ? { transfers: this.distribution.transfers() } : {}),
    };
  }

  /** This agent's view of the mesh (in hello answers: how tests and operators compare views). */
  view(): MeshView {
    const { broker, term } = this.mesh;
    return { broker: broker?.node ?? null, term, online: this.roster.online().map((s) => s.node).sort() };
  }

  /** Idempotent: every caller waits for the same shutdown. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    const { log } = this;
    await this.services.stopEndpoints();
    this.coordinator?.stop();
    await this.services.stopReports();
    // Draining first: the dispatcher stops giving this agent new tasks, the accepted ones finish.
    this.draining = true;
    // Goodbyes wait for a broker only so long: with none reachable a status would queue for ever.
    await bounded(this.publishStatus(), GOODBYE_MS);
    await this.worker?.stop();
    await this.distribution?.stop();
    await bounded(this.publishStatus(false), GOODBYE_MS);
    await this.duty?.stop();
    await this.transport?.close();
    // Goodbye and a closed port first: followers must not find a broker that is about to vanish.
    await this.discovery?.stop();
    await this.meshListener?.stop();
    await this.routing?.stop();
    await this.store.close();
    log.info('agent stopped');
  }
}
