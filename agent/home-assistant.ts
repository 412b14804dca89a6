/**
 * Home Assistant MQTT discovery (opt-in, `homeAssistant`): the board announces itself as a device
 * with sensors (agent/home-assistant/discovery.ts), retained under `<prefix>/<component>/.../config`,
 * through the agent's own MQTT connection. It announces when its first health report is out (the
 * report says which figures the board has), again when that set changes, when Home Assistant
 * comes online (its birth, `online` on `<prefix>/status`), and after each reconnection (a new
 * broker after a failover holds no retained configs).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { EventEmitter } from 'node:events';
import type { NodeHealth } from '../mesh/health.js';
import { discoveryMessages, type BoardDevice, type DiscoveryMessage } from './home-assistant/discovery.js';
import { haTopics } from './home-assistant/ids.js';
import type { Logger } from './log.js';
import { kizunaVersion } from './version.js';

/** What discovery needs of the agent's MQTT connection (mesh/mqtt.ts Transport). */
export interface DiscoveryMqtt {
  publish(topic: string, payload: string, options: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
  subscribe(topic: string, qos?: 0 | 1): Promise<void>;
  unsubscribe(topic: string): Promise<void>;
  onMessage(handler: (topic: string, payload: Buffer) => void): () => void;
}

export interface HomeAssistantOptions {
  mesh: string;
  node: string;
  prefix: string;
  intervalS: number;
  mqtt: DiscoveryMqtt;
  /** The health reporter: its 'report' events (NodeHealth). */
  reports: EventEmitter;
  device?: BoardDevice;
  log: Logger;
}

/** Events: 'announced' ({ reason, topics }) after each publication of the configs. */
export class HomeAssistantDiscovery extends EventEmitter {
  private latest?: NodeHealth;
  /** The topics of the configs published last (their set: which entities the board announced). */
  private announced?: string[];
  private offMessage?: () => void;
  private readonly onReport = (h: NodeHealth) => this.report(h);
  private stopped = false;
  readonly device: BoardDevice;

  constructor(private readonly o: HomeAssistantOptions) {
    super();
    this.device = o.device ?? boardDevice();
  }

  async start(): Promise<void> {
    const status = haTopics.status(this.o.prefix);
    this.offMessage = this.o.mqtt.onMessage((topic, payload) => {
      if (topic === status && payload.toString('utf8').trim() === 'online') void this.announce('home-assistant-online');
    });
    this.o.reports.on('report', this.onReport);
    await this.o.mqtt.subscribe(status, 1);
  }

  /** After a reconnection: the broker may be a new one, without the retained configs. */
  reconnected(): void {
    void this.announce('reconnected');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.o.reports.off('report', this.onReport);
    this.offMessage?.();
    // Not waited for: with no broker reachable it would hold the agent's shutdown.
    void this.o.mqtt.unsubscribe(haTopics.status(this.o.prefix)).catch(() => undefined);
  }

  /** The configs of the latest report (none before the first one). */
  messages(): DiscoveryMessage[] {
    if (!this.latest) return [];
    const { mesh, node, prefix, intervalS } = this.o;
    return discoveryMessages({ mesh, node, prefix, intervalS, device: this.device, health: this.latest });
  }

  private report(h: NodeHealth): void {
    const first = !this.latest;
    this.latest = h;
    const now = this.messages().map((m) => m.topic);
    if (first || now.join() !== this.announced?.join()) void this.announce(first ? 'first-report' : 'figures-changed');
  }

  /** Publishes every config, retained; clears those of entities the board no longer has. */
  async announce(reason: string): Promise<void> {
    if (this.stopped || !this.latest) return;
    const messages = this.messages();
    const gone = (this.announced ?? []).filter((t) => !messages.some((m) => m.topic === t));
    this.announced = messages.map((m) => m.topic);
    try {
      await Promise.all([
        ...messages.map((m) => this.o.mqtt.publish(m.topic, JSON.stringify(m.config), { qos: 1, retain: true })),
        // An empty retained message removes the entity from Home Assistant.
        ...gone.map((t) => this.o.mqtt.publish(t, '', { qos: 1, retain: true })),
      ]);
      this.o.log.debug(`Home Assistant: ${messages.length} entities announced (${reason})`);
      this.emit('announced', { reason, topics: this.announced });
    } catch (err) {
      this.o.log.warn(`Home Assistant discovery not published: ${(err as Error).message}`);
    }
  }
}

/** This board as Home Assistant shows it: a Raspberry Pi's model from its device tree, else the OS and CPU. */
export function boardDevice(): BoardDevice {
  let model: string | undefined;
  try {
    model = readFileSync('/proc/device-tree/model', 'utf8').replace(/\0/g, '').trim() || undefined;
  } catch {
    model = undefined;
  }
  return { model: model ?? `${os.type()} ${os.arch()}`, swVersion: kizunaVersion() };
}
