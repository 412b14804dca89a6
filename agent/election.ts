/**
 * Broker election: which agent hosts the mesh's MQTT broker and which is its standby.
 *
 * Pure functions of a view (no I/O, no clock, no randomness), so every agent that holds the same
 * view computes the same answer, whatever order the adverts arrived in.
 *
 * Rank rule (compareRank), applied in order until one step decides:
 *   1. eligible before ineligible (an agent configured not to host is never broker or standby);
 *   2. not throttled before throttled (a board that is hot or under-powered now);
 *   3. more RAM, compared in whole GiB (floor(ramMiB / 1024)), so the few MiB that firmware,
 *      kernel or GPU split take from two boards of the same size do not decide;
 *   4. more CPU cores;
 *   5. smaller node id, by plain UTF-16 code-unit comparison (never locale: every agent must agree).
 * Step 5 makes this a strict total order on distinct node ids.
 *
 * Decision (decide): the incumbent broker stays while it is alive (a member) and eligible, even if a
 * better-ranked agent joined since: no pre-emption, because moving the broker disconnects everyone.
 * Otherwise the best-ranked eligible member is broker. The standby is the best-ranked eligible
 * member other than the broker. Either is absent when no member qualifies.
 *
 * Failover (successors): after the broker fails, agents try the standby first, then every other
 * eligible member by rank, never the old broker nor a node known to have failed; the first one
 * alive is the new broker.
 *
 * Split brain (resolveSplit): when two brokers of one mesh meet after a partition heals, the higher
 * term wins; on equal terms the better rank wins.
 */
import { MAX_TERM, type Advert } from './advert.js';

export type RankInputs = Pick<Advert, 'node' | 'eligible' | 'ramMiB' | 'cores' | 'throttled'>;

export interface View {
  /** Alive members, this agent included. Order does not matter; duplicate node ids are tolerated. */
  members: RankInputs[];
  /** The broker this agent currently follows (or leads), if any. */
  incumbent?: { node: string; term: number };
}

export interface Decision {
  broker?: string;
  standby?: string;
}

export type BrokerClaim = RankInputs & { term: number };

/** -1, 0 or 1; never NaN, so a bad number cannot break the sort's total order. */
function cmp(x: number | string, y: number | string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Non-finite numbers (NaN from a bad advert) count as 0 rather than poisoning comparisons. */
const num = (x: number) => (Number.isFinite(x) ? x : 0);
const gib = (ramMiB: number) => Math.floor(num(ramMiB) / 1024);
const flag = (b: boolean) => (b ? 1 : 0);

/** Negative when `a` ranks higher (is the better broker), positive when `b` does, 0 for the same node and inputs. */
export function compareRank(a: RankInputs, b: RankInputs): number {
  return (
    cmp(flag(b.eligible), flag(a.eligible)) ||
    cmp(flag(a.throttled), flag(b.throttled)) ||
    cmp(gib(b.ramMiB), gib(a.ramMiB)) ||
    cmp(num(b.cores), num(a.cores)) ||
    cmp(a.node, b.node)
  );
}

/** A sorted copy, best first. Duplicate node ids are kept (see `distinct`). */
export function rankOrder<T extends RankInputs>(members: readonly T[]): T[] {
  return [...members].sort(compareRank);
}

/** Eligible members best first, one entry per node id: the first by rank wins a duplicate. */
function eligibleByRank(members: readonly RankInputs[]): RankInputs[] {
  const seen = new Set<string>();
  const out: RankInputs[] = [];
  for (const m of rankOrder(members)) {
    if (seen.has(m.node)) continue;
    seen.add(m.node);
    if (m.eligible) out.push(m);
  }
  return out;
}

export function decide(view: View): Decision {
  const ranked = eligibleByRank(view.members);
  const inc = view.incumbent?.node;
  // No pre-emption: a live, eligible incumbent keeps the job.
  const broker = ranked.some((m) => m.node === inc) ? inc : ranked[0]?.node;
  const standby = ranked.find((m) => m.node !== broker)?.node;
  const d: Decision = {};
  if (broker !== undefined) d.broker = broker;
  if (standby !== undefined) d.standby = standby;
  return d;
}

/**
 * Whom to try, in order, to reach a new broker after the broker failed: eligible members by rank,
 * without the old broker (the incumbent) and without `failed`. When the view still holds the old
 * incumbent this starts with the standby decide() named, the best eligible member other than the
 * broker; an agent that already dropped the old broker from its view gets the same list, where
 * decide(view).standby would already be the next one down. The list is one order minus what is
 * known to have failed, so agents that know of different failures still stop at the same live node.
 * Without an incumbent, pass the failed broker in `failed`.
 */
export function successors(view: View, failed: readonly string[]): string[] {
  const skip = new Set(failed);
  if (view.incumbent) skip.add(view.incumbent.node);
  return eligibleByRank(view.members).map((m) => m.node).filter((n) => !skip.has(n));
}

/**
 * Which of two brokers of one mesh keeps the job after a partition heals: the higher term, then
 * the better rank. A total order, so the pick is symmetric and folding many claims in any order
 * gives the same winner.
 */
export function resolveSplit(a: BrokerClaim, b: BrokerClaim): BrokerClaim {
  const byTerm = cmp(num(b.term), num(a.term));
  return (byTerm || compareRank(a, b)) <= 0 ? a : b;
}

/** The term a new broker announces: one more than the highest term seen, so at least 1, at most MAX_TERM. */
export function nextTerm(seen: readonly number[]): number {
  let max = 0;
  for (const t of seen) if (Number.isFinite(t) && t > max) max = t;
  return Math.min(Math.floor(max) + 1, MAX_TERM);
}
