/**
 * The agent's composition root: every seam is created, started and stopped here, in order.
 * start: model store -> embedded broker (unless an external one is configured) -> MQTT -> worker -> status
 * stop:  worker drains (every accepted request answered) -> status offline -> MQTT -> broker -> models
 */
import os from 'node:os';
import { BrokerHost } from '../broker/host.js';
import { Transport } from '../mesh/mqtt.js';
import { topics, PROTOCOL_VERSION } from '../mesh/topics.js';
import type { Engine } from '../models/engine.js';
import { OnnxEngine } from '../models/onnx-engine.js';
import { ModelStore } from '../models/store.js';
import type { Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { Worker } from './worker.js';
import { loadNodeId } from './identity.js';

export interface AgentDeps {
  engine?: Engine;
  log?: Logger;
}

export class Agent {
  private broker?: BrokerHost;
  private transport?: Transport;
  private worker?: Worker;
  private stopping?: Promise<void>;

  private constructor(
    readonly config: Config,
    /** This agent's id in the mesh: from the config, else kept in the data directory. */
    readonly node: string,
    readonly store: ModelStore,
    private readonly log: Logger,
  ) {}

  static async create(config: Config, deps: AgentDeps = {}): Promise<Agent> {
    const log = deps.log ?? createLogger(config.logLevel);
    const store = new ModelStore(deps.engine ?? new OnnxEngine(), { threads: config.threads });
    const node = config.node ?? (await loadNodeId(config.dataDir));
    return new Agent(config, node, store, log);
  }

  /** The URL apps use to reach this agent's broker (or the external broker). */
  get brokerUrl(): string {
    if (this.config.broker) return this.config.broker;
    const host = this.config.host === '0.0.0.0' || this.config.host === '::' ? '127.0.0.1' : this.config.host;
    return `mqtt://${host.includes(':') ? `[${host}]` : host}:${this.broker?.port ?? this.config.port}`;
  }

  /** The worker, once started (its events and stats are what tests and health reports read). */
  get work(): Worker | undefined {
    return this.worker;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    await this.store.loadFolders(config.models);
    for (const p of this.store.problems) log.error(`${p.code}: ${p.message}`);
    for (const m of this.store.list()) log.info(`model ${m.manifest.name}@${m.manifest.version} loaded (${(m.bytes / 1024).toFixed(0)} KiB)`);
    if (!config.broker) this.broker = await BrokerHost.create({ port: config.port, host: config.host, log: log.child('broker') });
    const statusTopic = topics.nodeStatus(config.mesh, this.node);
    this.transport = await Transport.connect({
      url: this.brokerUrl,
      clientId: `kizuna-agent-${this.node}`,
      will: { topic: statusTopic, payload: JSON.stringify({ v: PROTOCOL_VERSION, node: this.node, online: false }), qos: 1, retain: true },
    });
    this.worker = new Worker(this.transport, this.store, { ...config, node: this.node }, log.child('worker'));
    await this.worker.start();
    await this.transport.publish(statusTopic, JSON.stringify(this.status(true)), { retain: true });
    log.info(`agent ${this.node} serving mesh "${config.mesh}" on ${this.brokerUrl}`);
  }

  private status(online: boolean) {
    return {
      v: PROTOCOL_VERSION,
      node: this.node,
      online,
      role: this.broker ? 'broker' : 'agent',
      host: os.hostname(),
      models: this.store.list().map(({ manifest: m }) => ({
        name: m.name,
        version: m.version,
        sha256: m.sha256,
        inputs: m.inputs,
        image: m.preprocess ? { width: m.preprocess.width, height: m.preprocess.height, channels: m.preprocess.channels } : undefined,
      })),
    };
  }

  /** Idempotent: every caller waits for the same shutdown. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    const { log } = this;
    await this.worker?.stop();
    if (this.transport) {
      await this.transport
        .publish(topics.nodeStatus(this.config.mesh, this.node), JSON.stringify(this.status(false)), { retain: true })
        .catch(() => undefined);
      await this.transport.close();
    }
    await this.broker?.stop();
    await this.store.close();
    log.info('agent stopped');
  }
}
