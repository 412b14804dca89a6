/** Watches a mesh's retained node statuses through any agent's port, as an operator would. */
import { Transport } from '../../mesh/mqtt.js';
import { Roster } from '../../mesh/roster.js';
import { topics } from '../../mesh/topics.js';

export class MeshWatch {
  readonly roster = new Roster();
  private constructor(private readonly transport: Transport) {}

  static async connect(urls: string[], mesh = 'home'): Promise<MeshWatch> {
    let attempt = 0;
    const transport = await Transport.connect({ url: () => urls[attempt++ % urls.length], keepaliveSeconds: 1, backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 } });
    const watch = new MeshWatch(transport);
    transport.onMessage((topic, payload) => watch.roster.accept(topic, payload));
    await transport.subscribe(topics.allNodeStatus(mesh));
    return watch;
  }

  /** Online nodes and their roles, e.g. { a: 'broker', b: 'standby' }. */
  roles(): Record<string, string> {
    return Object.fromEntries(this.roster.online().map((s) => [s.node, s.role ?? '?']).sort());
  }

  /** Resolves when `predicate` holds on the roster (checked at every change), or rejects after `ms`. */
  until(predicate: (w: MeshWatch) => boolean, ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate(this)) return;
        clearTimeout(timer);
        this.roster.off('change', check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.roster.off('change', check);
        reject(new Error(`not reached within ${ms} ms: ${what}; roles now ${JSON.stringify(this.roles())}`));
      }, ms);
      this.roster.on('change', check);
      check();
    });
  }

  close(): Promise<void> {
    return this.transport.close(true);
  }
}
