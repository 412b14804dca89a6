/**
 * For the jobs tests: a mesh of real agent processes on loopback (static peers), a tap that sees
 * every shard the dispatcher sends and every shard result an agent returns, and a checker that
 * reads a job's results and asserts each input got exactly one right answer, in input order.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { JobItemResult, JobRun } from '../../mesh/job-client.js';
import { Transport } from '../../mesh/mqtt.js';
import { parseShardResultTopic, parseShardTopic, topics } from '../../mesh/topics.js';
import { spawnAgent } from './cli.js';
import { freePorts } from './ports.js';

export interface Member {
  node: string;
  port: number;
  child: ChildProcess;
  stderr: () => string;
}

/** Agents as processes, each on a port fixed up front so a board can come back on its own port. */
export class JobsMesh {
  readonly members = new Map<string, Member>();

  private readonly ports = new Map<string, number>();
  /** Each agent's static peers: the others planned with it, and every agent planned before it. */
  private readonly peers = new Map<string, string[]>();

  private constructor(private readonly flags: string[]) {}

  /** Ports for `nodes`; start them with spawn(). `flags` go to every agent. */
  static async plan(nodes: string[], flags: string[]): Promise<JobsMesh> {
    const mesh = new JobsMesh(flags);
    await mesh.add(...nodes);
    return mesh;
  }

  /** Ports for more agents (those planned before are their peers; they learn of these from the roster). */
  async add(...nodes: string[]): Promise<void> {
    const ports = await freePorts(nodes.length);
    const before = [...this.ports.keys()];
    nodes.forEach((n, i) => this.ports.set(n, ports[i]!));
    for (const n of nodes) this.peers.set(n, [...before, ...nodes.filter((m) => m !== n)]);
  }

  portOf(node: string): number {
    return this.ports.get(node)!;
  }

  url(node: string): string {
    return `mqtt://127.0.0.1:${this.portOf(node)}`;
  }

  /** The URLs of `nodes` (default: every planned agent). */
  urls(nodes = [...this.ports.keys()]): string[] {
    return nodes.map((n) => this.url(n));
  }

  /** Starts `node` (its peers: every agent planned before it), simulating `ms` per input; resolves once it serves. */
  async spawn(node: string, ms: number, extra: string[] = []): Promise<Member> {
    const peers = this.peers.get(node)!.map((n) => `127.0.0.1:${this.portOf(n)}`).join(',');
    const { child, port, stderr } = await spawnAgent([
      '--port', String(this.portOf(node)), '--node', node, '--peers', peers, '--simulate-ms-per-input', String(ms), ...this.flags, ...extra,
    ]);
    const member = { node, port, child, stderr };
    this.members.set(node, member);
    return member;
  }

  /** Resolves when `node`'s log matches `pattern` (lines logged earlier count), or rejects after `ms`. */
  waitForLog(node: string, pattern: RegExp, ms: number): Promise<RegExpExecArray> {
    const m = this.members.get(node)!;
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = pattern.exec(m.stderr());
        if (!found) return;
        clearTimeout(timer);
        m.child.stderr!.off('data', check);
        resolve(found);
      };
      const timer = setTimeout(() => {
        m.child.stderr!.off('data', check);
        reject(new Error(`${node} did not log ${pattern} within ${ms} ms; its log ends:\n${m.stderr().slice(-2000)}`));
      }, ms);
      m.child.stderr!.on('data', check);
      check();
    });
  }

  /** Sends `signal`; for SIGKILL and SIGTERM, resolves once the process has exited. */
  async signal(node: string, signal: NodeJS.Signals): Promise<void> {
    const { child } = this.members.get(node)!;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = signal === 'SIGKILL' || signal === 'SIGTERM' ? once(child, 'exit') : undefined;
    child.kill(signal);
    await exited;
  }

  /** Kills every process still running (resumed first, so a stopped one dies too). */
  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.members.keys()].map(async (n) => {
        const { child } = this.members.get(n)!;
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGCONT');
        await this.signal(n, 'SIGKILL');
      }),
    );
  }
}

export interface ShardEvent {
  /**
   * A shard sent to an agent, its result from an agent, a job sent by an app (`start` is its
   * "from"), or the dispatcher's last message of a job.
   */
  kind: 'shard' | 'result' | 'job' | 'complete';
  job: string;
  start: number;
  end: number;
  /** The agent a shard was sent to, or the agent a result says it comes from ('' for complete). */
  node: string;
  /** When the tap received it (performance.now()). */
  at?: number;
}

/** Watches every shard, shard result and job completion of a mesh (and follows it through a failover). */
export class JobTap {
  readonly events: ShardEvent[] = [];
  private readonly waiters = new Set<() => boolean>();

  private constructor(private readonly transport: Transport) {}

  static async connect(urls: string[], mesh = 'home'): Promise<JobTap> {
    let attempt = 0;
    const transport = await Transport.connect({
      url: () => urls[attempt++ % urls.length], keepaliveSeconds: 1, backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 },
    });
    const tap = new JobTap(transport);
    transport.onMessage((topic, payload) => tap.onMessage(topic, payload));
    await transport.subscribe([topics.allShardResults(mesh), `kizuna/v1/${mesh}/shard/#`, `kizuna/v1/${mesh}/jobres/#`, topics.allJobs(mesh)]);
    return tap;
  }

  private onMessage(topic: string, payload: Buffer): void {
    const n = this.events.length;
    const shard = parseShardTopic(topic);
    if (shard) this.events.push({ kind: 'shard', job: shard.job, start: shard.start, end: shard.end, node: shard.node });
    const res = shard ? undefined : parseShardResultTopic(topic);
    if (res) {
      let agent = '?';
      try {
        agent = String((JSON.parse(payload.toString('utf8')) as { agent?: unknown }).agent ?? '?');
      } catch {
        // garbage: the agent is unknown
      }
      this.events.push({ kind: 'result', job: res.job, start: res.start, end: res.end, node: agent });
    }
    const parts = topic.split('/');
    if (parts[3] === 'job' && parts.length === 7) {
      // The app client writes "from" first (jobPayload).
      const from = /^\{"from":(\d+),/.exec(payload.subarray(0, 32).toString('latin1'))?.[1];
      this.events.push({ kind: 'job', job: parts[6]!, start: Number(from ?? 0), end: 0, node: '' });
    }
    if (parts[3] === 'jobres' && parts.length === 6) {
      try {
        const msg = JSON.parse(payload.toString('utf8')) as { ok?: unknown; complete?: unknown };
        if (msg.ok === false || msg.complete === true) this.events.push({ kind: 'complete', job: parts[5]!, start: 0, end: 0, node: '' });
      } catch {
        // not a job result
      }
    }
    const at = performance.now();
    for (let i = n; i < this.events.length; i++) this.events[i]!.at = at;
    for (const w of [...this.waiters]) if (w()) this.waiters.delete(w);
  }

  /** How many events it has seen: a mark for next(). */
  get mark(): number {
    return this.events.length;
  }

  /** The first event from `since` on (in arrival order) that satisfies `predicate`, once it has arrived; rejects after `ms`. */
  next(since: number, predicate: (e: ShardEvent) => boolean, ms: number, what: string): Promise<ShardEvent> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.events.slice(since).find(predicate);
        if (!found) return false;
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`not seen within ${ms} ms: ${what}`));
      }, ms);
      if (!check()) this.waiters.add(check);
    });
  }

  close(): Promise<void> {
    return this.transport.close(true);
  }
}

export interface Collected {
  /** Who answered each input. */
  agents: string[];
  byAgent: Record<string, number>;
  ms: number;
}

/**
 * Reads a whole job: asserts each input's result arrives once, in input order, without an error,
 * with the class `expected(i)`. `onResult(n)` is called after the n-th result (it may act on the mesh).
 */
export async function collect(run: JobRun, expected: (i: number) => number, onResult: (n: number, item: JobItemResult) => void | Promise<void> = () => undefined): Promise<Collected> {
  const started = performance.now();
  const agents: string[] = [];
  const byAgent: Record<string, number> = {};
  for await (const item of run) {
    assert.equal(item.index, agents.length, 'results come in input order, each once');
    assert.equal(item.error, undefined, `input ${item.index}: ${item.error?.code} ${item.error?.message}`);
    const answer = (item.result!.answers![0] as { index: number }).index;
    assert.equal(answer, expected(item.index), `input ${item.index} answered ${answer} by ${item.result!.agent}`);
    agents.push(item.result!.agent);
    byAgent[item.result!.agent] = (byAgent[item.result!.agent] ?? 0) + 1;
    await onResult(agents.length, item);
  }
  assert.equal(agents.length, run.total, 'every input has its result');
  return { agents, byAgent, ms: performance.now() - started };
}
