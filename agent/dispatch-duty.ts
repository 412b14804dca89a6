/**
 * With an external broker there is no elected broker to host the dispatcher: the best-ranked
 * eligible agent runs it as an MQTT client of that broker, and the next one takes over when it
 * goes offline (for a moment two may dispatch; agents absorb the duplicate ids). The agent asks
 * this module to look again whenever the roster changes.
 */
import { Dispatcher } from '../broker/dispatcher.js';
import { TransportPort } from '../broker/transport-port.js';
import type { Transport } from '../mesh/mqtt.js';
import type { Roster } from '../mesh/roster.js';
import { statusToAdvert } from './coordinator.js';
import { decide } from './election.js';
import type { Logger } from './log.js';

export interface DispatchDutyOptions {
  mesh: string;
  node: string;
  roster: Roster;
  transport: Transport;
  log: Logger;
  /** The agent is stopping: it takes no duty any more. */
  stopping: () => boolean;
}

export class DispatchDuty {
  private current?: Dispatcher;
  private duty: Promise<void> = Promise.resolve();

  constructor(private readonly o: DispatchDutyOptions) {}

  /** The dispatcher this agent runs, while the duty is its. */
  get dispatcher(): Dispatcher | undefined {
    return this.current;
  }

  /** Takes or hands over the duty as the ranking says now; one review at a time. */
  review(): Promise<void> {
    this.duty = this.duty.then(() => this.take()).catch((err: Error) => this.o.log.error(`dispatcher duty: ${err.message}`));
    return this.duty;
  }

  async stop(): Promise<void> {
    await this.current?.stop();
  }

  private async take(): Promise<void> {
    if (this.o.stopping()) return;
    const { mesh, node, roster, transport, log } = this.o;
    const members = roster.online().map(statusToAdvert);
    const mine = decide({ members }).broker === node;
    if (mine && !this.current) {
      this.current = new Dispatcher(new TransportPort(transport), { mesh, node, log: log.child('dispatcher') });
      await this.current.start();
      log.info('dispatching requests for the mesh on the external broker');
    } else if (!mine && this.current) {
      const d = this.current;
      this.current = undefined;
      await d.stop();
    }
  }
}
