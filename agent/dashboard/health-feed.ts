/**
 * Health reports for the dashboard: the agent's own MQTT connection subscribes to every board's
 * retained health topic (boards may read them), and each valid report goes into the feed under
 * the node its topic names. A retained report (the latest a board left, maybe long ago) is placed
 * in time by its own `at`, never later than now; a live one by when it arrived, on this agent's
 * clock, so boards whose clocks disagree still chart side by side.
 */
import type { MessageHandler } from '../../mesh/mqtt.js';
import { parseNodeHealth } from '../../mesh/health.js';
import { parseNodeHealthTopic, topics } from '../../mesh/topics.js';
import type { Feed } from './feed.js';

/** What the dashboard needs of an MQTT connection (the agent's Transport). */
export interface MeshMessages {
  onMessage(handler: MessageHandler): () => void;
  subscribe(topic: string, qos: 0 | 1): Promise<void>;
  unsubscribe(topic: string): Promise<void>;
}

export async function followHealth(mqtt: MeshMessages, mesh: string, feed: Feed, now: () => number = Date.now): Promise<() => Promise<void>> {
  const filter = topics.allNodeHealth(mesh);
  const off = mqtt.onMessage((topic, payload, retained) => {
    const node = parseNodeHealthTopic(topic);
    if (!node) return;
    const report = parseNodeHealth(payload);
    if (!report || report.node !== node) return;
    const t = now();
    feed.setHealth(node, report, retained ? Math.min(report.at, t) : t);
  });
  await mqtt.subscribe(filter, 0);
  return async () => {
    off();
    await mqtt.unsubscribe(filter).catch(() => undefined);
  };
}
