/**
 * Transport: the only module that touches mqtt.js. Adds TCP_NODELAY on every connection
 * (FIELD-NOTES: the Nagle trap) and a small promise API.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Socket } from 'node:net';

export interface TransportOptions {
  url: string;
  clientId?: string;
  keepaliveSeconds?: number;
  connectTimeoutMs?: number;
  /** Retry the connection after a loss (ms between tries; 0 disables). */
  reconnectPeriodMs?: number;
  will?: { topic: string; payload: Buffer | string; qos: 0 | 1; retain: boolean };
}

/** `retained` is true when the broker replays a retained message to a new subscription. */
export type MessageHandler = (topic: string, payload: Buffer, retained: boolean) => void;

export class Transport {
  private readonly handlers = new Set<MessageHandler>();

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      for (const h of this.handlers) h(topic, payload, packet.retain);
    });
    const noDelay = () => (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
    client.on('connect', noDelay);
    noDelay();
  }

  static async connect(options: TransportOptions): Promise<Transport> {
    const opts: IClientOptions = {
      protocolVersion: 4, // MQTT 3.1.1: what aedes and every broker speak
      clientId: options.clientId ?? `kizuna-${Math.random().toString(16).slice(2, 10)}`,
      keepalive: options.keepaliveSeconds ?? 30,
      connectTimeout: options.connectTimeoutMs ?? 10_000,
      reconnectPeriod: options.reconnectPeriodMs ?? 0,
      clean: true,
      ...(options.will ? { will: options.will } : {}),
    };
    const client = await mqtt.connectAsync(options.url, opts);
    return new Transport(client);
  }

  get connected(): boolean {
    return this.client.connected;
  }

  onMessage(handler: MessageHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  onConnectionChange(listener: (up: boolean) => void): void {
    this.client.on('connect', () => listener(true));
    this.client.on('close', () => listener(false));
  }

  async subscribe(topic: string | string[], qos: 0 | 1 = 1): Promise<void> {
    const granted = await this.client.subscribeAsync(topic, { qos });
    const refused = granted.filter((g) => g.qos === 128);
    if (refused.length) throw new Error(`subscription refused: ${refused.map((g) => g.topic).join(', ')}`);
  }

  async unsubscribe(topic: string | string[]): Promise<void> {
    await this.client.unsubscribeAsync(topic);
  }

  /** Resolves when the broker has the message (PUBACK for QoS 1). */
  async publish(topic: string, payload: Buffer | string, options: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: options.qos ?? 1, retain: options.retain ?? false });
  }

  /** Closes after in-flight messages are acknowledged; `force` drops them. */
  async close(force = false): Promise<void> {
    this.handlers.clear();
    await this.client.endAsync(force);
  }
}
