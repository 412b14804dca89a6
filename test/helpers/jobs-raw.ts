/**
 * An app that speaks raw MQTT (mqtt.js, no Kizuna client): it publishes job payloads as given,
 * malformed ones included, and reads the job result messages of its client name.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { topics } from '../../mesh/topics.js';

export type JobMsg = Record<string, unknown> & { ok?: boolean; complete?: boolean; from?: number; results?: RawResult[]; error?: { code: string; message: string } };
export type RawResult = { index: number; ok: boolean; agent: string; answers?: { index: number }[]; error?: { code: string } };

export class RawApp {
  private readonly messages = new Map<string, JobMsg[]>();
  private readonly waiters = new Map<string, () => void>();

  private constructor(
    private readonly mqttClient: MqttClient,
    readonly mesh: string,
    readonly client: string,
  ) {}

  static async connect(url: string, mesh: string, client: string): Promise<RawApp> {
    const c = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: `raw-${client}`, reconnectPeriod: 0 });
    const app = new RawApp(c, mesh, client);
    c.on('message', (topic, payload) => {
      const id = topic.slice(topic.lastIndexOf('/') + 1);
      let msg: JobMsg;
      try {
        msg = JSON.parse(payload.toString('utf8')) as JobMsg;
      } catch {
        msg = { unparsable: payload.toString('utf8').slice(0, 200) };
      }
      const list = app.messages.get(id) ?? [];
      list.push(msg);
      app.messages.set(id, list);
      app.waiters.get(id)?.();
    });
    await c.subscribeAsync(topics.jobResultsTo(mesh, client), { qos: 1 });
    return app;
  }

  /** Every message received for job `id` so far. */
  received(id: string): JobMsg[] {
    return this.messages.get(id) ?? [];
  }

  /**
   * Publishes `payload` on `topic` (a job topic of this client, or any other) and resolves with
   * job `id`'s messages from then on once one is an error or says complete; rejects after `ms`.
   */
  send(topic: string, id: string, payload: string | Buffer, ms = 5000): Promise<JobMsg[]> {
    const start = this.received(id).length;
    return new Promise<JobMsg[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`no final answer to job ${id} within ${ms} ms; the last: ${JSON.stringify(this.received(id).slice(start).at(-1))?.slice(0, 600)}`));
      }, ms);
      this.waiters.set(id, () => {
        const last = this.received(id).at(-1)!;
        if (last.ok === false || last.complete === true) {
          clearTimeout(timer);
          this.waiters.delete(id);
          resolve(this.received(id).slice(start));
        }
      });
      this.mqttClient.publishAsync(topic, payload, { qos: 1 }).catch((err: Error) => reject(err));
    });
  }

  /** Publishes a job of this client without waiting for anything. */
  publish(model: string, id: string, payload: string | Buffer): Promise<unknown> {
    return this.mqttClient.publishAsync(topics.job(this.mesh, model, this.client, id), payload, { qos: 1 });
  }

  close(): Promise<void> {
    return this.mqttClient.endAsync(true);
  }
}
