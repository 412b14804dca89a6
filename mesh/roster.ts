/**
 * The roster: the latest status of every node of a mesh, kept from the retained status topics.
 * Pure bookkeeping (no I/O): the dispatcher, the election driver and the status CLI feed it the
 * status messages they receive and read the same view from it.
 */
import { EventEmitter } from 'node:events';
import { parseNodeStatus, supersedes, type NodeStatus } from './status.js';
import { parseNodeStatusTopic } from './topics.js';

export class Roster extends EventEmitter {
  private readonly nodes = new Map<string, NodeStatus>();

  /** Takes one message of a status topic; returns true when the view changed. Emits 'change' (node, status). */
  accept(topic: string, payload: Buffer): boolean {
    const node = parseNodeStatusTopic(topic);
    if (!node) return false;
    if (payload.length === 0) return this.remove(node);
    const status = parseNodeStatus(payload);
    if (!status || status.node !== node) return false;
    return this.set(status);
  }

  set(status: NodeStatus): boolean {
    const current = this.nodes.get(status.node);
    if (!supersedes(current, status)) return false;
    const changed = !current || !sameJson(current, status);
    this.nodes.set(status.node, status);
    if (changed) this.emit('change', status.node, status);
    return true;
  }

  remove(node: string): boolean {
    if (!this.nodes.delete(node)) return false;
    this.emit('change', node, undefined);
    return true;
  }

  get(node: string): NodeStatus | undefined {
    return this.nodes.get(node);
  }

  all(): NodeStatus[] {
    return [...this.nodes.values()];
  }

  online(): NodeStatus[] {
    return this.all().filter((s) => s.online);
  }

  /** Online nodes that serve `model` and take new work (`draining` ones included on request). */
  serving(model: string, includeDraining = false): NodeStatus[] {
    return this.online().filter((s) => (includeDraining || !s.draining) && s.models?.some((m) => m.name === model));
  }
}

/** Whether two statuses serialise the same; one that cannot be serialised (never from parseNodeStatus) counts as changed. */
function sameJson(a: NodeStatus, b: NodeStatus): boolean {
  try {
    return JSON.stringify(a) === JSON.stringify(b);
  } catch {
    return false;
  }
}
