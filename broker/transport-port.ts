/**
 * The dispatcher's view of a broker it reaches over MQTT (an external Mosquitto or EMQX), where
 * it cannot sit inside the broker process: subscriptions become MQTT subscriptions.
 */
import type { Transport } from '../mesh/mqtt.js';
import { topicMatches } from '../mesh/topics.js';
import type { BrokerPort } from './dispatcher.js';

export class TransportPort implements BrokerPort {
  constructor(private readonly transport: Transport) {}

  async subscribe(filter: string, handler: (topic: string, payload: Buffer, retained: boolean) => void): Promise<() => Promise<void>> {
    const off = this.transport.onMessage((topic, payload, retained) => {
      if (topicMatches(filter, topic)) handler(topic, payload, retained);
    });
    await this.transport.subscribe(filter, 1);
    return async () => {
      off();
      await this.transport.unsubscribe(filter).catch(() => undefined);
    };
  }

  publish(topic: string, payload: Buffer, retain: boolean): Promise<void> {
    return this.transport.publish(topic, payload, { qos: 1, retain });
  }
}
