/** The embedded broker as a Bus, for the worker on the board that hosts it: no TCP in between. */
import type { Bus } from '../mesh/bus.js';
import type { MessageHandler } from '../mesh/mqtt.js';
import type { EmbeddedBroker } from './embedded.js';

export class LocalBus implements Bus {
  private readonly handlers = new Set<MessageHandler>();
  private readonly unsubscribers = new Map<string, () => Promise<void>>();

  constructor(private readonly broker: EmbeddedBroker) {}

  async subscribe(topic: string): Promise<void> {
    if (this.unsubscribers.has(topic)) return;
    this.unsubscribers.set(topic, await this.broker.subscribe(topic, (t, p, r) => this.handlers.forEach((h) => h(t, p, r))));
  }

  async unsubscribe(topic: string): Promise<void> {
    const off = this.unsubscribers.get(topic);
    this.unsubscribers.delete(topic);
    await off?.();
  }

  publish(topic: string, payload: Buffer | string, options: { retain?: boolean } = {}): Promise<void> {
    return this.broker.publish(topic, Buffer.isBuffer(payload) ? payload : Buffer.from(payload), options.retain ?? false);
  }

  onMessage(handler: MessageHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }
}
