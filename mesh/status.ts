/**
 * The retained status of a node (`kizuna/v1/<mesh>/node/<node>/status`): birth while it lives,
 * its will ("online": false) when it dies. It carries everything the others need: the rank inputs
 * for elections, where to reach it, and the models it serves (for the dispatcher).
 * `instance` and `seq` tell a stale will from a live node (a will from an older connection never
 * marks a newer connection offline).
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { nestedDeeperThan } from './schemas.js';

/** A board lists every IPv4 address it has (agent/self.ts): bridges and VPNs add some. */
export const MAX_ADDRESSES = 256;

const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const SafeInteger = Type.Integer({ minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER });

/** A model input or output: its name, dtype and shape (a string dimension such as "N" is free). */
const TensorSpecSchema = Type.Object({
  name: Type.String({ maxLength: 256 }),
  // Any dtype name, not only ours: a newer board may serve a dtype this one does not know.
  dtype: Type.String({ maxLength: 32 }),
  shape: Type.Array(Type.Union([Count, Type.String({ maxLength: 32 })]), { maxItems: 8 }),
});

export const ModelSummarySchema = Type.Object({
  name: Type.String({ maxLength: 128 }),
  version: Type.String({ maxLength: 32 }),
  sha256: Type.String({ maxLength: 128 }),
  inputs: Type.Array(TensorSpecSchema, { maxItems: 32 }),
  /** What its results must look like: the dispatcher checks a job's results against these. */
  outputs: Type.Optional(Type.Array(TensorSpecSchema, { maxItems: 32 })),
  image: Type.Optional(Type.Object({ width: Count, height: Count, channels: Type.String({ maxLength: 16 }) })),
  /**
   * Its session is in memory (placement): false, the board serves it but loads it first (a cold
   * start). Absent: a board older than placement, which loads every model at start: warm.
   */
  warm: Type.Optional(Type.Boolean()),
});

/**
 * Every field the roster, the dispatcher and the election read is typed and bounded. Fields this
 * version does not know are let through (a newer board may add some), but no status nests deeper
 * than STATUS_MAX_DEPTH (parseNodeStatus).
 */
export const NodeStatusSchema = Type.Object({
  v: Type.Literal(1),
  node: Type.String({ maxLength: 128 }),
  instance: Type.String({ maxLength: 256 }),
  /** When this instance started (the node's own clock: it only orders its own instances). */
  started: SafeInteger,
  /** Counts this instance's connections; its will carries the same number. */
  seq: SafeInteger,
  online: Type.Boolean(),
  /** Finishing its accepted work before it stops: it gets no new tasks. */
  draining: Type.Optional(Type.Boolean()),
  role: Type.Optional(Type.Union([Type.Literal('joining'), Type.Literal('agent'), Type.Literal('standby'), Type.Literal('broker')])),
  term: Type.Optional(Count),
  port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  addresses: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: MAX_ADDRESSES })),
  eligible: Type.Optional(Type.Boolean()),
  ramMiB: Type.Optional(Count),
  cores: Type.Optional(Count),
  throttled: Type.Optional(Type.Boolean()),
  /** How many requests the dispatcher may give it at once (its credits). */
  slots: Type.Optional(Count),
  models: Type.Optional(Type.Array(ModelSummarySchema, { maxItems: 1024 })),
  /** Memory for model sessions: the budget (0: none) and what the warm models take, in MiB. */
  modelMemory: Type.Optional(Type.Object({ budgetMiB: Count, usedMiB: Count })),
  /** Model files it is fetching from the mesh now: bytes done of total (agent/distribution.ts). */
  transfers: Type.Optional(
    Type.Array(Type.Object({ name: Type.String({ maxLength: 128 }), sha256: Type.String({ maxLength: 128 }), done: Count, total: Count }), { maxItems: 64 }),
  ),
});

export type ModelSummary = Static<typeof ModelSummarySchema>;

/** Whether `status`'s board has `model` in memory (a board that does not say loads all at start). */
export function isWarm(status: Pick<NodeStatus, 'models'>, model: string): boolean {
  return status.models?.find((m) => m.name === model)?.warm !== false;
}
export type NodeStatus = Static<typeof NodeStatusSchema>;

const checkStatus = TypeCompiler.Compile(NodeStatusSchema);
/** A valid status nests 6 levels (status/models/i/inputs/j/shape); room for fields of newer versions. */
const STATUS_MAX_DEPTH = 16;

/**
 * A node status from a payload, or undefined if it is not one (an empty payload clears the topic).
 * Anyone on the mesh may publish a retained status, so it is checked whole: an odd field, or
 * nesting deep enough to overflow a recursive walk (JSON.stringify), and it is refused.
 */
export function parseNodeStatus(payload: Buffer): NodeStatus | undefined {
  if (payload.length === 0 || payload.length > 1 << 20) return undefined;
  let s: unknown;
  try {
    s = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!checkStatus.Check(s) || nestedDeeperThan(s, STATUS_MAX_DEPTH)) return undefined;
  return s;
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
