/** The dispatcher's broker seam in memory, for fast unit tests: what it publishes, delivered to its own subscriptions. */
import type { BrokerPort } from '../../broker/dispatcher.js';
import { topicMatches } from '../../mesh/topics.js';

export class MemoryPort implements BrokerPort {
  readonly published: { topic: string; payload: Buffer }[] = [];
  private readonly subs: { filter: string; handler: (t: string, p: Buffer, r: boolean) => void }[] = [];
  async subscribe(filter: string, handler: (t: string, p: Buffer, r: boolean) => void) {
    const sub = { filter, handler };
    this.subs.push(sub);
    return async () => void this.subs.splice(this.subs.indexOf(sub), 1);
  }
  async publish(topic: string, payload: Buffer) {
    this.published.push({ topic, payload });
    for (const s of [...this.subs]) if (topicMatches(s.filter, topic)) s.handler(topic, payload, false);
  }
  /** Tasks sent to `node`, as client/id. */
  tasks(node: string): string[] {
    return this.published.filter((p) => p.topic.includes(`/task/${node}/`)).map((p) => p.topic.split('/').slice(-2).join('/'));
  }
  /** Tasks sent to `node`, their request ids only. */
  taskIds(node: string): string[] {
    return this.tasks(node).map((t) => t.split('/')[1]!);
  }
  /** Error replies published so far (the dispatcher answers refusals itself). */
  errors(): { id: string; code: string }[] {
    return this.published.filter((p) => p.topic.includes('/res/')).map((p) => JSON.parse(p.payload.toString())).filter((r) => !r.ok).map((r) => ({ id: r.id, code: r.error.code }));
  }
}
