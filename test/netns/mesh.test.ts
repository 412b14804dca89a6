/**
 * The real mesh across hosts: agents in network namespaces (10.77.0.1N) find each other by real
 * mDNS with no configuration, elect one broker, and keep answering every request of an app that
 * knows several agents' URLs while a board dies, is cut off, is partitioned away or comes back.
 * Views are compared with hello probes from inside the lab; traffic comes from fixtures/driver.ts.
 * Needs root (CI is root); skips elsewhere, naming what is missing. One lab for the whole file:
 * every scenario starts fresh agents (new data directories) on a healed network, and kills them.
 * Tests 8 and 9 are known issues (todo), checked on what scenarios 2-5 measured.
 *
 * KZ_NETNS_LOGS=DIR keeps every agent's and driver's output; KZ_NETNS_LOG_LEVEL=debug for more.
 */
import { after, afterEach, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CLI } from '../helpers/cli.js';
import { NetnsLab, netnsAvailable, type LabProcess } from '../helpers/netns.js';
import { repoRoot } from '../helpers/shared.js';
import { answered, showViews, unsettled, type Probe, type View, type Views } from '../helpers/views.js';

const node = process.execPath;
const PORT = 1883;
const fixture = (name: string) => path.join(repoRoot, 'dist', 'test', 'netns', 'fixtures', name);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const available = netnsAvailable();

interface Member { n: number; node: string; proc: LabProcess }
interface Answer { i: number; n: number; agent: string; ms: number; t: number }
interface Summary { sent: number; answered: number; failed: number; errors: Record<string, number>; duplicates: number; dup_sample: { id: string; first: string; again: string; after_ms: number }[]; conflicts: number; mismatched: number; max_gap_ms: number; by_agent: Record<string, number> }

const ok = answered;
const show = showViews;


/** The agents, drivers and probes of one scenario, in the shared lab. */
class Scene {
  readonly members = new Map<number, Member>();
  private readonly procs = new Set<LabProcess>();
  /** Agents and drivers by label, for KZ_NETNS_LOGS. */
  private readonly logged = new Map<string, LabProcess>();

  constructor(
    readonly lab: NetnsLab,
    private readonly dir: string,
    readonly name: string,
  ) {}

  addr(n: number): string {
    return `${this.lab.host(n).address}:${PORT}`;
  }

  dataDir(n: number): string {
    return path.join(this.dir, `${this.name}-h${n}`);
  }

  /** Starts an agent in host n (mDNS on its lab address only) and resolves once it serves. */
  async agent(n: number, options: { node?: string; mesh?: string; logLevel?: string } = {}): Promise<Member> {
    const args = [CLI, 'agent', '--insecure', '--host', '0.0.0.0', '--port', String(PORT), '--mdns-interface', this.lab.host(n).address, '--data-dir', this.dataDir(n),
      '--formation-ms', '1500', '--log-level', options.logLevel ?? process.env.KZ_NETNS_LOG_LEVEL ?? 'info'];
    if (options.node) args.push('--node', options.node);
    if (options.mesh) args.push('--mesh', options.mesh);
    const proc = this.track(this.lab.spawn(n, node, args), `h${n}-agent${this.logged.size}`);
    const served = await proc.waitForOutput(/agent (\S+) serving mesh/, 20_000);
    const member = { n, node: served[1]!, proc };
    this.members.set(n, member);
    return member;
  }

  /** Every agent's hello answer, probed from inside host `from`. */
  async views(from: number, hosts: number[]): Promise<Views> {
    const probe = this.track(this.lab.spawn(from, node, [fixture('views.js'), ...hosts.map((n) => this.addr(n))], { env: { ...process.env, PROBE_TIMEOUT_MS: '800' } }));
    const line = (await probe.waitForOutput(/^(\{.*\})$/, 10_000))[1]!;
    const byAddr = JSON.parse(line) as Record<string, Probe>;
    return new Map(hosts.map((n) => [n, byAddr[this.addr(n)] ?? { error: 'missing' }]));
  }

  /** Probes every 200 ms until `check` returns undefined (settled); rejects with the last reason after `ms`. */
  async until(from: number, hosts: number[], check: (v: Views) => string | undefined, ms: number, what: string): Promise<Views> {
    const deadline = Date.now() + ms;
    let last: Views = new Map();
    let why: string | undefined = 'never probed';
    for (let round = 0; round < 1000 && Date.now() < deadline; round++) {
      last = await this.views(from, hosts);
      why = check(last);
      if (why === undefined) return last;
      await sleep(200);
    }
    throw new Error(`not reached within ${ms} ms: ${what}; last: ${why}\n${show(last)}`);
  }

  /** Starts fixtures/driver.js in host n against the agents of `hosts` (in that order). */
  async driver(n: number, hosts: number[], options: { mesh?: string; client?: string; maxCount?: number } = {}): Promise<Driver> {
    const urls = hosts.map((h) => `mqtt://${this.addr(h)}`).join(',');
    const args = [fixture('driver.js'), '--urls', urls, '--lanes', '4', '--pace-ms', '10', '--max-ms', '90000', '--keepalive-s', '1', '--resend-ms', '1000', '--client', options.client ?? `${this.name}-drv${n}`];
    if (options.mesh) args.push('--mesh', options.mesh);
    if (options.maxCount) args.push('--max-count', String(options.maxCount));
    const proc = this.track(this.lab.spawn(n, node, args), `h${n}-driver${this.logged.size}`);
    await proc.waitForOutput(/"ready":true/, 15_000);
    return new Driver(proc);
  }

  /** Milliseconds from `since` to host n's first "becoming the broker" log line after it. */
  electedAfter(n: number, since: number): number {
    const lines = this.members.get(n)?.proc.stderrText().split('\n') ?? [];
    const at = lines.filter((l) => /becoming the broker/.test(l)).map((l) => Date.parse(l.slice(0, 24))).find((t) => t >= since);
    return at === undefined ? NaN : at - since;
  }

  /** A member's node id by host. */
  node(n: number): string {
    const m = this.members.get(n);
    if (!m) throw new Error(`no agent in host ${n}`);
    return m.node;
  }

  /** The host whose agent has `role` in `views`. */
  static holder(views: Views, role: string): number {
    const found = [...views].find(([, p]) => ok(p) && p.role === role);
    if (!found) throw new Error(`no ${role} in ${show(views)}`);
    return found[0];
  }

  /** The last lines of every agent's log, for a failure message. */
  logs(lines = 40): string {
    return [...this.members.values()]
      .map((m) => `--- h${m.n} ${m.node} (exit ${m.proc.exitCode ?? m.proc.signalCode ?? 'running'})\n${m.proc.stderrText().trimEnd().split('\n').slice(-lines).join('\n')}`)
      .join('\n');
  }

  /** Kills every process of the scenario and waits (bounded) until they are gone. */
  async clear(): Promise<void> {
    const live = [...this.procs].filter((p) => p.exitCode === null && p.signalCode === null);
    const gone = live.map((p) => new Promise((r) => p.once('close', r)));
    for (const p of live) p.kill('SIGKILL');
    await Promise.race([Promise.all(gone), sleep(5000)]);
    this.procs.clear();
    // KZ_NETNS_LOGS=DIR keeps every agent's and driver's output, for a post-mortem.
    const keep = process.env.KZ_NETNS_LOGS;
    if (keep) {
      await fs.mkdir(keep, { recursive: true });
      for (const [k, p] of this.logged.entries()) await fs.writeFile(path.join(keep, `${this.name}-${k}.log`), p.stdoutText() + p.stderrText());
    }
  }

  private track(p: LabProcess, label?: string): LabProcess {
    this.procs.add(p);
    if (label) this.logged.set(label, p);
    p.once('close', () => this.procs.delete(p));
    return p;
  }
}

class Driver {
  constructor(readonly proc: LabProcess) {}

  /** Resolves once `count` requests have been answered. */
  async answered(count: number, ms = 20_000): Promise<void> {
    await this.proc.waitForOutput(new RegExp(`"n":${count},`), ms);
  }

  answers(): Answer[] {
    return this.lines().filter((o): o is Answer & Record<string, unknown> => typeof o.n === 'number');
  }

  /** How many requests were answered so far. */
  count(): number {
    return this.answers().length;
  }

  /** Resolves once `more` requests beyond those answered now have been answered. */
  async more(more: number, ms = 20_000): Promise<void> {
    await this.answered(this.count() + more, ms);
  }

  /** Stops sending, waits for the requests in flight, and returns the summary. */
  async stop(): Promise<Summary> {
    this.proc.kill('SIGTERM');
    await this.proc.waitForOutput(/"summary":true/, 30_000);
    return this.lines().find((o) => o.summary === true) as unknown as Summary;
  }

  /** Fault to service again: the first answer after the longest silence that the fault began. */
  failoverMs(faultAt: number): number {
    const ts = this.answers().map((a) => a.t).sort((a, b) => a - b);
    let best = { gap: -1, next: NaN };
    for (let k = 1; k < ts.length; k++) {
      const [prev, next] = [ts[k - 1]!, ts[k]!];
      if (next > faultAt && prev <= faultAt + 1000 && next - prev > best.gap) best = { gap: next - prev, next };
    }
    return best.next - faultAt;
  }

  private lines(): Record<string, unknown>[] {
    return this.proc.stdoutText().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

/** Every request answered (the client resolves each id once), none failed, no two different answers for an id, agents agree on every digit. */
function assertNoneLost(s: Summary, who = 'driver'): void {
  assert.ok(s.sent > 0, `${who} sent nothing`);
  assert.deepEqual({ answered: s.answered, failed: s.failed, errors: s.errors }, { answered: s.sent, failed: 0, errors: {} }, `${who}: ${JSON.stringify(s)}`);
  assert.equal(s.conflicts, 0, `${who}: an id was answered twice with different answers: ${JSON.stringify(s)}`);
  assert.equal(s.mismatched, 0, `${who}: agents disagree on a digit: ${JSON.stringify(s)}`);
}

/** What the scenarios measured, for the known-issue checks at the end. */
const findings: { duplicates: string[]; traffic: number; cut?: { electedMs: number; servedMs: number } } = { duplicates: [], traffic: 0 };

/** Notes what a driver's summary says about the known issues (tests 8 and 9). */
function record(s: Summary, who: string): void {
  findings.traffic++;
  if (s.duplicates) findings.duplicates.push(`${who}: ${s.duplicates} ids answered twice, e.g. ${JSON.stringify(s.dup_sample.slice(0, 2))}`);
}

const traffic = (s: Summary) =>
  `${s.sent} requests, all answered, longest silence ${s.max_gap_ms} ms, by agent ${JSON.stringify(s.by_agent)}, ${s.duplicates} duplicate replies${s.duplicates ? ` e.g. ${JSON.stringify(s.dup_sample.slice(0, 3))}` : ''}`;

describe('a mesh of real hosts (network namespaces, mDNS, no configuration)', { skip: available.ok ? false : available.reason }, () => {
  let lab: NetnsLab;
  let dir: string;
  let scene: Scene | undefined;

  before(async () => {
    lab = await NetnsLab.create(5);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kz-netns-mesh-'));
  });
  after(async () => {
    await scene?.clear();
    await lab?.destroy();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await scene?.clear();
    scene = undefined;
    // A known network for the next scenario, whatever this one left.
    await lab.heal();
    for (let n = 1; n <= lab.hosts; n++) await lab.restore(n);
  });

  /** Runs a scenario in a fresh Scene; a failure carries the tail of every agent's log. */
  const scenario = (name: string, body: (s: Scene, t: TestContext) => Promise<void>) => async (t: TestContext) => {
    scene = new Scene(lab, dir, name);
    try {
      await body(scene, t);
    } catch (err) {
      const logs = `\n${scene.logs()}`;
      if (err instanceof Error) [err.message, err.stack] = [err.message + logs, (err.stack ?? '') + logs];
      throw err;
    }
  };

  /** Starts agents named `<prefix><n>` in `hosts` and waits for one settled mesh of them. */
  async function form(s: Scene, hosts: number[], from: number, prefix = s.name): Promise<Views> {
    await Promise.all(hosts.map((n) => s.agent(n, { node: `${prefix}${n}` })));
    return s.until(from, hosts, (v) => unsettled(v, hosts.map((n) => s.node(n))), 15_000, 'one settled mesh');
  }

  test('1. forms with no configuration: one broker, one standby, identical views', { timeout: 40_000 }, scenario('s1', async (s, t) => {
    const started = Date.now();
    // No --node, no peers: ids come from the data directory, agents from mDNS.
    await Promise.all([1, 2, 3].map((n) => s.agent(n)));
    const nodes = [1, 2, 3].map((n) => s.node(n));
    assert.equal(new Set(nodes).size, 3, `distinct node ids: ${nodes}`);
    const views = await s.until(4, [1, 2, 3], (v) => unsettled(v, nodes), 15_000, 'one settled mesh');
    const roles = [...views.values()].filter(ok).map((p) => p.role).sort();
    assert.deepEqual(roles, ['agent', 'broker', 'standby']);
    t.diagnostic(`formed in ${Date.now() - started} ms (processes started to settled views): ${show(views)}`);
  }));

  /** Settled views of `hosts` without the failed ones, probed from `from`: who leads now. */
  async function settledWithout(s: Scene, hosts: number[], failed: number[], from: number, what: string): Promise<{ broker: number; term: number; views: Views }> {
    const live = hosts.filter((n) => !failed.includes(n));
    const views = await s.until(from, live, (v) => unsettled(v, live.map((n) => s.node(n))), 15_000, what);
    const broker = Scene.holder(views, 'broker');
    const p = views.get(broker);
    return { broker, term: ok(p) ? p.term : 0, views };
  }

  test('2. kill -9 of the broker during traffic: nothing lost, a new broker, the dead node offline everywhere', { timeout: 60_000 }, scenario('s2', async (s, t) => {
    const hosts = [1, 2, 3];
    const views = await form(s, hosts, 4);
    const [b, sb] = [Scene.holder(views, 'broker'), Scene.holder(views, 'standby')];
    const drv = await s.driver(4, hosts);
    await drv.answered(100);
    const faultAt = Date.now();
    s.members.get(b)!.proc.kill('SIGKILL');
    await drv.more(100);
    // Every survivor names the standby as broker, and none still counts the dead one as online.
    const now = await settledWithout(s, hosts, [b], 4, `${s.node(sb)} broker, ${s.node(b)} offline in every view`);
    assert.equal(now.broker, sb, 'the standby took over');
    const summary = await drv.stop();
    assertNoneLost(summary);
    record(summary, 'kill -9 of the broker');
    t.diagnostic(`kill -9 ${s.node(b)}: ${s.node(sb)} broker (term ${now.term}) ${s.electedAfter(sb, faultAt)} ms after, first answer after ${drv.failoverMs(faultAt)} ms; ${traffic(summary)}`);
  }));

  test('3. the broker host cut off during traffic: nothing lost, a new broker; back, it steps down and follows', { timeout: 75_000 }, scenario('s3', async (s, t) => {
    const hosts = [1, 2, 3];
    const views = await form(s, hosts, 4);
    const b = Scene.holder(views, 'broker');
    const others = hosts.filter((n) => n !== b);
    // Two apps knowing every board: one was talking to the board that vanishes, the other has it
    // last in its list, so its round-robin reaches the silent board after the election (test 9).
    const drivers = [await s.driver(4, [b, ...others]), await s.driver(5, [...others, b])];
    await Promise.all(drivers.map((d) => d.answered(100)));
    const faultAt = Date.now();
    await lab.cut(b);
    await Promise.all(drivers.map((d) => d.more(100, 30_000)));
    const now = await settledWithout(s, hosts, [b], 4, `a new broker without ${s.node(b)}`);
    const elected = s.electedAfter(now.broker, faultAt);
    // Silence is all the others get from the cut host: keepalive (1 s) and one hello timeout.
    assert.ok(elected < 6000, `new broker ${elected} ms after the cut`);
    const failovers = drivers.map((d) => d.failoverMs(faultAt));
    await lab.restore(b);
    const restoredAt = Date.now();
    // Back, the old broker meets a higher term: it steps down and follows; never two brokers.
    const back = await s.until(4, hosts, (v) => unsettled(v, hosts.map((n) => s.node(n))), 30_000, `${s.node(b)} back as a follower of ${s.node(now.broker)}`);
    const settledMs = Date.now() - restoredAt;
    assert.equal(Scene.holder(back, 'broker'), now.broker, 'the new broker keeps the job');
    assert.match(s.members.get(b)!.proc.stderrText(), /stepping down/, 'the old broker stepped down');
    await Promise.all(drivers.map((d) => d.more(50)));
    const sums = await Promise.all(drivers.map((d) => d.stop()));
    sums.forEach((sum, k) => {
      assertNoneLost(sum, `driver ${k + 1}`);
      record(sum, `cut of the broker host, driver ${k + 1}`);
    });
    findings.cut = { electedMs: elected, servedMs: failovers[1]! };
    t.diagnostic(`cut ${s.node(b)}: ${s.node(now.broker)} broker (term ${now.term}) ${elected} ms after; first answer after ${failovers[0]} ms (app on the cut board first) and ${failovers[1]} ms (cut board last); restored: one mesh in ${settledMs} ms; app 1: ${traffic(sums[0]!)}; app 2: ${traffic(sums[1]!)}`);
  }));

  test('4. the standby killed 50 ms after the broker: nothing lost, the next-ranked takes over', { timeout: 60_000 }, scenario('s4', async (s, t) => {
    const hosts = [1, 2, 3, 4];
    const views = await form(s, hosts, 5);
    const [b, sb] = [Scene.holder(views, 'broker'), Scene.holder(views, 'standby')];
    // Same machine, same rank inputs: the node id decides.
    const next = hosts.filter((n) => n !== b && n !== sb).sort((x, y) => (s.node(x) < s.node(y) ? -1 : 1))[0]!;
    const drv = await s.driver(5, hosts);
    await drv.answered(100);
    const faultAt = Date.now();
    s.members.get(b)!.proc.kill('SIGKILL');
    await sleep(50);
    s.members.get(sb)!.proc.kill('SIGKILL');
    await drv.more(100);
    const now = await settledWithout(s, hosts, [b, sb], 5, `${s.node(next)} broker, the two dead offline`);
    assert.equal(now.broker, next, 'the next-ranked took over');
    const summary = await drv.stop();
    assertNoneLost(summary);
    record(summary, 'broker and standby killed');
    t.diagnostic(`kill -9 ${s.node(b)}, 50 ms later ${s.node(sb)}: ${s.node(next)} broker (term ${now.term}) ${s.electedAfter(next, faultAt)} ms after, first answer after ${drv.failoverMs(faultAt)} ms; ${traffic(summary)}`);
  }));

  test('5. a partition into halves that both keep serving, then heal: one broker, the loser stepped down', { timeout: 90_000 }, scenario('s5', async (s, t) => {
    const hosts = [1, 2, 3, 4];
    const views = await form(s, hosts, 1);
    const b = Scene.holder(views, 'broker');
    const [mine, other] = [1, 2].includes(b) ? [[1, 2], [3, 4]] : [[3, 4], [1, 2]];
    // One app on each side, knowing only the boards of its side.
    const drvA = await s.driver(mine[0]!, mine);
    const drvB = await s.driver(other[0]!, other);
    await Promise.all([drvA.answered(50), drvB.answered(50)]);
    const faultAt = Date.now();
    await lab.partition(mine, other);
    await Promise.all([drvA.more(100), drvB.more(100, 30_000)]);
    const sideA = await settledWithout(s, mine, [], mine[0]!, `${s.node(b)}'s side settled alone`);
    assert.equal(sideA.broker, b);
    const sideB = await settledWithout(s, other, [], other[0]!, 'the other side settled alone, with its own broker');
    const failoverB = drvB.failoverMs(faultAt);
    await lab.heal();
    const healedAt = Date.now();
    const healed = await s.until(1, hosts, (v) => unsettled(v, hosts.map((n) => s.node(n))), 30_000, 'one mesh again');
    const settledMs = Date.now() - healedAt;
    assert.equal(Scene.holder(healed, 'broker'), sideB.broker, 'the higher term wins');
    assert.match(s.members.get(b)!.proc.stderrText(), /stepping down/, 'the loser stepped down');
    await Promise.all([drvA.more(50), drvB.more(50)]);
    const [sumA, sumB] = await Promise.all([drvA.stop(), drvB.stop()]);
    assertNoneLost(sumA, `driver on ${s.node(b)}'s side`);
    assertNoneLost(sumB, `driver on ${s.node(sideB.broker)}'s side`);
    record(sumA, 'partition, side A');
    record(sumB, 'partition, side B');
    t.diagnostic(`partition: ${s.node(sideB.broker)} broker of its half (term ${sideB.term}) ${s.electedAfter(sideB.broker, faultAt)} ms after, first answer there after ${failoverB} ms; healed: one mesh in ${settledMs} ms; side A: ${traffic(sumA)}; side B: ${traffic(sumB)}`);
  }));

  test('6. two meshes on one network: each its own broker, never mixed', { timeout: 40_000 }, scenario('s6', async (s, t) => {
    const meshes = { kitchen: [1, 2, 3], garage: [4, 5] };
    await Promise.all(Object.entries(meshes).flatMap(([mesh, hosts]) => hosts.map((n) => s.agent(n, { mesh, node: `${mesh}${n}` }))));
    for (const [mesh, hosts] of Object.entries(meshes)) {
      const nodes = hosts.map((n) => s.node(n));
      const views = await s.until(hosts[0]!, hosts, (v) => unsettled(v, nodes), 15_000, `mesh ${mesh} settled`);
      assert.ok([...views.values()].every((p) => ok(p) && p.mesh === mesh));
    }
    // Traffic in each mesh is served by that mesh's agents only.
    const drivers = await Promise.all(Object.entries(meshes).map(([mesh, hosts]) => s.driver(hosts[0]!, hosts, { mesh, maxCount: 60 })));
    // Each stops by itself after 60 requests.
    const sums = await Promise.all(drivers.map(async (d) => {
      await d.proc.waitForOutput(/"summary":true/, 30_000);
      return d.stop();
    }));
    Object.keys(meshes).forEach((mesh, k) => {
      assertNoneLost(sums[k]!, `driver of ${mesh}`);
      for (const agent of Object.keys(sums[k]!.by_agent)) assert.ok(agent.startsWith(mesh), `${mesh} answered by ${agent}`);
    });
    t.diagnostic(`kitchen ${JSON.stringify(sums[0]!.by_agent)}, garage ${JSON.stringify(sums[1]!.by_agent)}`);
  }));

  test('7. two boards with the same node id: the later one takes a fresh id, both are members', { timeout: 40_000 }, scenario('s7', async (s, t) => {
    const copied = 'pi-copied-1a2b';
    for (const n of [1, 2]) {
      await fs.mkdir(s.dataDir(n), { recursive: true });
      await fs.writeFile(path.join(s.dataDir(n), 'node-id'), copied + '\n');
    }
    const first = await s.agent(1);
    assert.equal(first.node, copied);
    const later = await s.agent(2);
    assert.notEqual(later.node, copied);
    assert.match(later.proc.stderrText(), /already used by a live board/);
    assert.equal((await fs.readFile(path.join(s.dataDir(2), 'node-id'), 'utf8')).trim(), later.node, 'the fresh id is kept');
    const views = await s.until(3, [1, 2], (v) => unsettled(v, [copied, later.node]), 15_000, 'both boards members');
    t.diagnostic(`${later.node} renamed; ${show(views)}`);
  }));

  // Known issues, measured by the scenarios above (run alone, these have nothing to check).
  test('8. no request id is answered twice on the wire', {
    todo: 'after a partition heals, an id resent during the split can be answered by an agent of each side (measured: 1 id in about 2,700, the same answer 1 ms apart); the app client keeps the first, a raw MQTT subscriber sees both',
  }, (t) => {
    if (!findings.traffic) return t.skip('run with scenarios 2-5');
    assert.deepEqual(findings.duplicates, []);
  });

  test('9. after a cut, every app that knows a live board is served again within 1 s of the new broker', {
    todo: 'an app connected to the cut board itself is served again about 3.9 s after the cut (its own keepalive must notice the silence first), 2 s after the new broker; apps on surviving boards are served about 2.0 s after the cut',
  }, (t) => {
    if (!findings.cut) return t.skip('run with scenario 3');
    const { electedMs, servedMs } = findings.cut;
    assert.ok(servedMs < electedMs + 1000, `elected ${electedMs} ms after the cut, served ${servedMs} ms after`);
  });
});
