/**
 * The retained status of a node (`kizuna/v1/<mesh>/node/<node>/status`): birth while it lives,
 * its will ("online": false) when it dies. It carries everything the others need: the rank inputs
 * for elections, where to reach it, and the models it serves (for the dispatcher).
 * `instance` and `seq` tell a stale will from a live node (a will from an older connection never
 * marks a newer connection offline).
 */
export interface ModelSummary {
  name: string;
  version: string;
  sha256: string;
  inputs: { name: string; dtype: string; shape: (number | string)[] }[];
  /** What its results must look like: the dispatcher checks a job's results against these. */
  outputs?: { name: string; dtype: string; shape: (number | string)[] }[];
  image?: { width: number; height: number; channels: string };
}

export interface NodeStatus {
  v: 1;
  node: string;
  instance: string;
  /** When this instance started (the node's own clock: it only orders its own instances). */
  started: number;
  /** Counts this instance's connections; its will carries the same number. */
  seq: number;
  online: boolean;
  /** Finishing its accepted work before it stops: it gets no new tasks. */
  draining?: boolean;
  role?: 'joining' | 'agent' | 'standby' | 'broker';
  term?: number;
  port?: number;
  addresses?: string[];
  eligible?: boolean;
  ramMiB?: number;
  cores?: number;
  throttled?: boolean;
  /** How many requests the dispatcher may give it at once (its credits). */
  slots?: number;
  models?: ModelSummary[];
}

/** A node status from a payload, or undefined if it is not one (an empty payload clears the topic). */
export function parseNodeStatus(payload: Buffer): NodeStatus | undefined {
  if (payload.length === 0 || payload.length > 1 << 20) return undefined;
  try {
    const s = JSON.parse(payload.toString('utf8')) as Partial<NodeStatus>;
    if (s.v !== 1 || typeof s.node !== 'string' || typeof s.instance !== 'string' || typeof s.online !== 'boolean' || !Number.isSafeInteger(s.seq) || !Number.isSafeInteger(s.started)) return undefined;
    if (s.models !== undefined && !Array.isArray(s.models)) return undefined;
    return s as NodeStatus;
  } catch {
    return undefined;
  }
}

/**
 * Whether `next` should replace `current` in a view. Within one instance, a status of the same or a
 * later connection does. Across instances, a birth always does (only a live process publishes one,
 * even if its clock is behind, as on a Pi without a real-time clock before NTP), and a will only
 * if its instance started later. So a will that arrives late, from an older connection or an older
 * instance, never marks a live node offline.
 */
export function supersedes(current: NodeStatus | undefined, next: NodeStatus): boolean {
  if (!current) return true;
  if (current.instance !== next.instance) return next.online || next.started >= current.started;
  return next.seq >= current.seq;
}
