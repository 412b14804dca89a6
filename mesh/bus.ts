/**
 * The Bus seam: what the worker needs of the mesh's messaging. Real: the MQTT transport, or,
 * on the board that hosts the broker, the broker itself in-process (no TCP hop for a task or its
 * reply). SwitchBus lets the worker keep its subscriptions while the agent changes role.
 */
import type { MessageHandler } from './mqtt.js';

export interface Bus {
  subscribe(topic: string, qos?: 0 | 1): Promise<void>;
  unsubscribe(topic: string): Promise<void>;
  publish(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
  onMessage(handler: MessageHandler): () => void;
}

/** A bus whose underlying bus can be swapped; subscriptions and handlers move with it. */
export class SwitchBus implements Bus {
  private readonly topics = new Map<string, 0 | 1>();
  private readonly handlers = new Set<MessageHandler>();
  private offCurrent?: () => void;

  constructor(private current: Bus) {
    this.offCurrent = current.onMessage((t, p, r) => this.deliver(t, p, r));
  }

  /** Moves every subscription to `next`, then stops listening to the previous bus. */
  async use(next: Bus): Promise<void> {
    if (next === this.current) return;
    const previous = this.current;
    const offPrevious = this.offCurrent;
    this.current = next;
    this.offCurrent = next.onMessage((t, p, r) => this.deliver(t, p, r));
    for (const [topic, qos] of this.topics) await next.subscribe(topic, qos);
    offPrevious?.();
    for (const topic of this.topics.keys()) await previous.unsubscribe(topic).catch(() => undefined);
  }

  private deliver(topic: string, payload: Buffer, retained: boolean): void {
    for (const h of this.handlers) h(topic, payload, retained);
  }

  async subscribe(topic: string, qos: 0 | 1 = 1): Promise<void> {
    this.topics.set(topic, qos);
    await this.current.subscribe(topic, qos);
  }

  async unsubscribe(topic: string): Promise<void> {
    this.topics.delete(topic);
    await this.current.unsubscribe(topic);
  }

  publish(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1; retain?: boolean }): Promise<void> {
    return this.current.publish(topic, payload, options);
  }

  onMessage(handler: MessageHandler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }
}
