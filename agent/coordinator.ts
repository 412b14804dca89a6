/**
 * The election driver: decides what this agent is (the broker, or a follower of one) and keeps the
 * mesh listener routed to the elected broker. The decisions are election.ts's pure functions; this
 * class only gathers the facts (adverts, the roster, hello probes) and acts on the answers.
 *
 *  - forming: listen (connections held), advertise, look for a broker for `formationMs`; follow
 *    the best broker seen, else walk the candidates by rank: the first one alive becomes broker.
 *  - broker lost (our MQTT connection dropped and the broker no longer answers a hello): walk the
 *    successors (the standby first) the same way; every agent stops at the same live node.
 *  - another broker of the mesh seen (a healed partition): the higher term, then the better rank,
 *    wins; the loser steps down and its followers move over.
 */
import { EventEmitter } from 'node:events';
import type { Advert, Role } from './advert.js';
import type { Discovery } from './discovery/discovery.js';
import { decide, nextTerm, resolveSplit, successors, type BrokerClaim, type RankInputs } from './election.js';
import type { Logger } from './log.js';
import { UnprovenAnswer } from './discovery/hello.js';
import type { NodeStatus } from '../mesh/status.js';

export interface BrokerRef {
  node: string;
  term: number;
  host: string;
  port: number;
}

/** What the coordinator drives; the agent implements it with the listener, aedes and the dispatcher. */
export interface CoordinatorHost {
  /** Runs the embedded broker here (seeded with the mirrored retained state) and routes to it. */
  becomeBroker(term: number, failed: readonly string[]): Promise<void>;
  /** Stops running the broker here (a healed partition chose another one). */
  stepDown(): Promise<void>;
  /** Routes the listener to another agent's broker and reconnects this agent through it. */
  follow(broker: BrokerRef): void;
  /** Holds new connections while there is no broker. */
  hold(): void;
  /** Publishes the new role in mDNS / hello answers. */
  advertise(role: Role, term: number): void;
  /** Every node this agent knows from the roster, online or not (liveness comes from MQTT). */
  roster(): NodeStatus[];
  probe(host: string, port: number): Promise<Advert>;
}

export interface CoordinatorOptions {
  self: () => Advert;
  /** Called once the formation window has passed, before this agent takes a role (identity checks). */
  beforeJoining?: () => Promise<void>;
  formationMs: number;
  /**
   * The mesh has credentials and probes verify hello answers: adverts are then only hints. Only
   * boards that proved membership in a hello answer, or are online in the roster (statuses come
   * over authenticated MQTT), rank for the standby and raise the term.
   */
  requireProof?: boolean;
  /** How long a followed candidate that answers but is not broker yet may take to become it (default 3 s). */
  successorGraceMs?: number;
  log: Logger;
}

export class Coordinator extends EventEmitter {
  private role: Role = 'joining';
  private term = 0;
  private broker?: BrokerRef;
  private busy: Promise<void> = Promise.resolve();
  /**
   * Nodes found dead, with the status they had then: a node stays suspect until it comes back
   * (a later connection or instance), so a dead broker is never tried again in the next failover.
   */
  private readonly suspects = new Map<string, { instance?: string; seq?: number }>();
  private stopped = false;
  private checking = false;
  /** When this agent started following its current broker (Date.now()). */
  private followedAt = 0;
  /** Broker claims (node, instance, term) whose board could not prove membership: not probed again. */
  private readonly refuted = new Set<string>();
  /** Adverts (node/instance) whose board could not prove membership: no candidates. */
  private readonly impostors = new Set<string>();
  /** The last proven hello answer of each board (with requireProof). */
  private readonly proven = new Map<string, Advert>();

  constructor(
    private readonly discovery: Discovery,
    private readonly host: CoordinatorHost,
    private readonly options: CoordinatorOptions,
  ) {
    super();
    discovery.on('peer', (advert: Advert) => this.onPeer(advert));
  }

  get current(): { role: Role; term: number; broker?: BrokerRef } {
    return { role: this.role, term: this.term, ...(this.broker ? { broker: this.broker } : {}) };
  }

  /** Forms or joins the mesh; resolves once this agent is the broker or follows one. */
  async start(): Promise<void> {
    this.host.hold();
    await this.waitForBroker(this.options.formationMs);
    await this.options.beforeJoining?.();
    await this.serialize(async () => {
      // Every broker seen, best claim first: the best may be a rogue advert that proves nothing.
      for (const advert of byClaim(this.brokerAdverts())) if (await this.tryFollow(advert)) return;
      await this.elect([]);
    });
  }

  stop(): void {
    this.stopped = true;
  }

  /**
   * The agent's MQTT connection to the broker dropped, or the broker it pipes to refused: is the
   * broker gone? Signals that arrive while a check is pending add nothing.
   */
  brokerConnectionLost(): void {
    if (this.role === 'broker' || this.stopped || this.checking) return;
    this.checking = true;
    void this.serialize(async () => {
      this.checking = false;
      const broker = this.broker;
      if (!broker) return this.elect([]);
      try {
        const a = await this.ask(broker.host, broker.port);
        if (a.role === 'broker' && a.node === broker.node) return; // still there: the transport reconnects
        // Alive but not broker yet: a walk follows the first live candidate, which may still be
        // noticing the old broker's loss or walking itself. Declaring it gone now would elect a
        // second broker; it gets a grace period to take the role.
        if (a.node === broker.node && Date.now() - this.followedAt < (this.options.successorGraceMs ?? 3000)) return;
      } catch {
        // refused or silent: it is gone
      }
      this.options.log.warn(`broker ${broker.node} (term ${broker.term}) is gone; electing`);
      this.suspect(broker.node);
      await this.elect([...this.suspects.keys()]);
    });
  }

  /** Runs one election step at a time: events arrive while a walk is still probing. */
  private serialize(step: () => Promise<void>): Promise<void> {
    this.busy = this.busy.then(step).catch((err: Error) => this.options.log.error(`election: ${err.stack ?? err.message}`));
    return this.busy;
  }

  private brokerAdverts(): Advert[] {
    return [...this.discovery.peers().values()].filter((a) => a.role === 'broker' && a.term > 0);
  }

  /** The best broker advert seen within `ms`, or undefined. */
  private waitForBroker(ms: number): Promise<Advert | undefined> {
    const best = () => bestClaim(this.brokerAdverts());
    return new Promise((resolve) => {
      const found = best();
      if (found || ms <= 0) return resolve(found);
      const onPeer = (a: Advert) => {
        if (a.role !== 'broker') return;
        finish();
      };
      const finish = () => {
        clearTimeout(timer);
        this.discovery.off('peer', onPeer);
        resolve(best());
      };
      const timer = setTimeout(finish, ms);
      this.discovery.on('peer', onPeer);
    });
  }

  /** Follows `advert` if it answers a hello as a broker. */
  private async tryFollow(advert: Advert): Promise<boolean> {
    const found = await this.brokerAnswer(advert, 1);
    if (!found) {
      this.options.log.debug(`cannot follow ${advert.node} at ${advert.addresses[0] ?? '?'}:${advert.port}`);
      return false;
    }
    this.setFollowing({ node: found.answer.node, term: found.answer.term, host: found.host, port: found.answer.port });
    return true;
  }

  /** Walks the candidates by rank (the standby first); the first one alive is, or becomes, broker. */
  private async elect(failed: string[]): Promise<void> {
    if (this.stopped) return;
    this.host.hold();
    this.role = 'joining';
    const self = this.options.self();
    const members = this.candidates(self, 'walk');
    const incumbent = this.broker ? { node: this.broker.node, term: this.broker.term } : undefined;
    const order = successors({ members, ...(incumbent ? { incumbent } : {}) }, failed);
    for (const node of order) {
      if (node === self.node) return this.lead(failed);
      const c = members.find((m) => m.node === node)!;
      const host = c.addresses[0];
      if (!host) continue;
      try {
        const a = await this.ask(host, c.port, c);
        // Alive: it is the broker already, or it walks the same list and stops at itself.
        this.setFollowing({ node: a.node, term: Math.max(a.term, this.term), host, port: a.port });
        return;
      } catch {
        failed.push(node);
        this.suspect(node);
      }
    }
    if (self.eligible) return this.lead(failed);
    this.options.log.warn('no broker and no eligible agent reachable; waiting');
  }

  /**
   * Everyone this agent knows, with what it needs to rank and reach them. To 'walk' (probe in
   * turn, which verifies) every advert not refuted yet counts; to 'rank' (the standby, a split's
   * claims) with proof required, only proven answers and the roster do.
   */
  private candidates(self: Advert, purpose: 'walk' | 'rank'): Advert[] {
    const byNode = new Map<string, Advert>();
    for (const a of this.discovery.peers().values()) {
      if (this.impostors.has(instanceKey(a))) continue;
      if (purpose === 'walk' || !this.options.requireProof) byNode.set(a.node, a);
      else if (this.proven.has(a.node)) byNode.set(a.node, this.proven.get(a.node)!);
    }
    // mDNS never forgets a killed node; the roster (wills, keepalive) says who is really gone.
    for (const s of this.host.roster()) {
      if (s.node === self.node) continue;
      if (!s.online) byNode.delete(s.node);
      else if (s.port && s.addresses?.length) byNode.set(s.node, statusToAdvert(s));
    }
    byNode.set(self.node, self);
    return [...byNode.values()];
  }

  private async lead(failed: readonly string[]): Promise<void> {
    // Terms anyone may advertise count only without proof required: a rogue's term 2^53 would
    // otherwise push the mesh's next term out of range.
    const heard = this.options.requireProof ? [...this.proven.values()] : [...this.discovery.peers().values()];
    const terms = [this.term, this.broker?.term ?? 0, ...heard.map((a) => a.term), ...this.host.roster().map((s) => s.term ?? 0)];
    const term = nextTerm(terms);
    this.options.log.info(`becoming the broker (term ${term})`);
    await this.host.becomeBroker(term, [...new Set([...failed, ...this.suspects.keys()])]);
    const self = this.options.self();
    this.role = 'broker';
    this.term = term;
    this.broker = { node: self.node, term, host: self.addresses[0] ?? '127.0.0.1', port: self.port };
    this.host.advertise('broker', term);
    this.emit('role', 'broker', term);
    // Broker adverts that arrived during the walk were set aside (onPeer ignores them while
    // joining): another agent may have become broker meanwhile. Look at them again now.
    for (const a of this.brokerAdverts()) this.onPeer(a);
  }

  private setFollowing(broker: BrokerRef): void {
    this.broker = broker;
    this.followedAt = Date.now();
    this.term = broker.term;
    this.role = this.standbyIsMe(broker.node) ? 'standby' : 'agent';
    this.host.follow(broker);
    this.host.advertise(this.role, this.term);
    this.options.log.info(`following broker ${broker.node} (term ${broker.term}) at ${broker.host}:${broker.port} as ${this.role}`);
    this.emit('role', this.role, this.term);
  }

  private standbyIsMe(brokerNode: string): boolean {
    const self = this.options.self();
    const members = this.candidates(self, 'rank');
    return decide({ members, incumbent: { node: brokerNode, term: this.term } }).standby === self.node;
  }

  private suspect(node: string): void {
    const s = this.host.roster().find((r) => r.node === node);
    this.suspects.set(node, { ...(s ? { instance: s.instance, seq: s.seq } : {}) });
  }

  /** The roster changed: the standby may be someone else now, the broker's term may be known. */
  membersChanged(): void {
    for (const [node, then] of this.suspects) {
      const now = this.host.roster().find((r) => r.node === node);
      if (now?.online && (now.instance !== then.instance || now.seq > (then.seq ?? -1))) this.suspects.delete(node);
    }
    if (this.role !== 'agent' && this.role !== 'standby') return;
    const brokerTerm = this.host.roster().find((s) => s.node === this.broker!.node)?.term ?? 0;
    if (brokerTerm > this.term) {
      this.term = this.broker!.term = brokerTerm;
      this.host.advertise(this.role, this.term);
    }
    const role = this.standbyIsMe(this.broker!.node) ? 'standby' : 'agent';
    if (role === this.role) return;
    this.role = role;
    this.host.advertise(role, this.term);
    this.emit('role', role, this.term);
  }

  /** A peer's advert: another broker of this mesh means a healed partition (or a stale view). */
  private onPeer(advert: Advert): void {
    if (!this.outranksMine(advert) || this.refuted.has(claimKey(advert))) return;
    void this.serialize(async () => {
      // Decided again when the step runs: an election may have run since it was queued (this
      // agent may now lead with a higher term), and the advert may be superseded.
      advert = this.discovery.peers().get(advert.node) ?? advert;
      if (!this.outranksMine(advert) || this.refuted.has(claimKey(advert))) return;
      // An advert is a hint anyone can multicast: act only on the board's own hello answer (signed
      // on a mesh with credentials). After a link comes back the first packets can wait a second
      // for ARP: a few tries before giving up on it.
      const found = await this.brokerAnswer(advert, 3);
      if (!found || !this.outranksMine(found.answer)) return;
      if (this.role === 'broker') {
        this.options.log.warn(`broker ${found.answer.node} (term ${found.answer.term}) outranks this one (term ${this.term}): stepping down`);
        await this.host.stepDown();
        this.role = 'agent';
      }
      this.setFollowing({ node: found.answer.node, term: found.answer.term, host: found.host, port: found.answer.port });
    });
  }

  /** A hello probe; remembers proven answers and refuted adverts. */
  private async ask(host: string, port: number, advert?: Advert): Promise<Advert> {
    try {
      const answer = await this.host.probe(host, port);
      if (this.options.requireProof) this.proven.set(answer.node, answer);
      return answer;
    } catch (err) {
      if (err instanceof UnprovenAnswer && advert) {
        this.impostors.add(instanceKey(advert));
        this.refuted.add(claimKey(advert));
      }
      throw err;
    }
  }

  /** What the advertised broker answers itself, when it answers as a broker; refuted claims are remembered. */
  private async brokerAnswer(advert: Advert, tries: number): Promise<{ answer: Advert; host: string } | undefined> {
    const host = advert.addresses[0];
    if (!host) return undefined;
    for (let i = 0; i < tries; i++) {
      try {
        const answer = await this.ask(host, advert.port, advert);
        return answer.role === 'broker' ? { answer, host } : undefined;
      } catch (err) {
        if (!(err instanceof UnprovenAnswer)) continue;
        this.options.log.warn(`ignored broker advert of ${advert.node} (term ${advert.term}) at ${host}: ${err.message}`);
        return undefined;
      }
    }
    return undefined;
  }

  /** Whether `advert` is a broker of this mesh that beats the one this agent leads or follows. */
  private outranksMine(advert: Advert): boolean {
    if (this.stopped || advert.role !== 'broker' || advert.term === 0 || advert.node === this.broker?.node) return false;
    if (this.role === 'joining') return false; // the walk in progress will find it (or lead() looks again)
    const mine = this.claimOf(this.broker);
    return !(mine && resolveSplit(mine, advert).node === mine.node);
  }

  private claimOf(broker: BrokerRef | undefined): BrokerClaim | undefined {
    if (!broker) return undefined;
    const self = this.options.self();
    const inputs: RankInputs | undefined =
      broker.node === self.node ? self : this.candidates(self, 'rank').find((c) => c.node === broker.node);
    return inputs ? { ...pickRank(inputs), term: broker.term } : undefined;
  }
}

function pickRank(a: RankInputs): RankInputs {
  return { node: a.node, eligible: a.eligible, ramMiB: a.ramMiB, cores: a.cores, throttled: a.throttled };
}

/** The winning claim among broker adverts (higher term, then better rank). */
function bestClaim(adverts: Advert[]): Advert | undefined {
  return byClaim(adverts)[0];
}

/** Broker adverts, the winning claim first (resolveSplit is a total order). */
function byClaim(adverts: Advert[]): Advert[] {
  return [...adverts].sort((a, b) => (resolveSplit(a, b).node === a.node ? -1 : 1));
}

const claimKey = (a: Advert): string => `${a.node}/${a.instance}/${a.term}`;
const instanceKey = (a: Advert): string => `${a.node}/${a.instance}`;

export function statusToAdvert(s: NodeStatus): Advert {
  return {
    v: 1,
    mesh: '',
    node: s.node,
    instance: s.instance,
    role: s.role ?? 'agent',
    term: s.term ?? 0,
    port: s.port ?? 0,
    addresses: s.addresses ?? [],
    eligible: s.eligible ?? false,
    ramMiB: s.ramMiB ?? 0,
    cores: s.cores ?? 0,
    throttled: s.throttled ?? false,
  };
}

