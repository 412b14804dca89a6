/**
 * Operators' view of a real mesh: a real agent publishes its health report (the schema, figures
 * that move after requests and a job, retained for a new subscriber); two agent processes on
 * loopback are shown by `kizuna status` (a real process: table and --json) and `kizuna top`; a
 * board restarted with the same node id while its old will lands late stays online, for old and
 * new subscribers alike; and death: kill -9 shows the board offline within 1.5 keepalives, and
 * so does a board that goes silent (SIGSTOP), as a subscriber with a recorded clock sees it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KizunaClient } from '../../mesh/client.js';
import { KizunaError } from '../../mesh/errors.js';
import { healthProblems, isNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { Transport } from '../../mesh/mqtt.js';
import type { NodeStatus } from '../../mesh/status.js';
import { parseNodeHealthTopic, parseNodeStatusTopic, topics } from '../../mesh/topics.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { MeshBoards } from '../../agent/commands/status.js';
import { Waiters } from '../helpers/waiters.js';
import { startAgent } from '../helpers/agent.js';
import { CLI, runCli, spawnAgent } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';

const digits = loadDigits().heldOut.slice(0, 32);
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % digits.length]!.pixels } });
/** The agents' MQTT keepalive (the default, keepaliveSeconds 1). */
const KEEPALIVE_MS = 1000;

/** One message as a subscriber saw it, at its arrival time on the recorder's clock. */
interface Seen {
  at: number;
  topic: string;
  retained: boolean;
  node: string;
  status?: NodeStatus;
  health?: NodeHealth;
}

/**
 * A real MQTT subscriber to the statuses and health reports of a mesh, as an operator's tool is:
 * the view `kizuna status` shows, and every message with its arrival time (`now`, injectable).
 */
class Recorder {
  readonly view = new MeshBoards();
  readonly seen: Seen[] = [];
  private readonly waiters = new Waiters();
  private constructor(private readonly transport: Transport, readonly now: () => number) {}

  static async connect(url: string, now: () => number = () => performance.now()): Promise<Recorder> {
    const transport = await Transport.connect({ url, keepaliveSeconds: 2, backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 } });
    const r = new Recorder(transport, now);
    transport.onMessage((topic, payload, retained) => {
      const at = r.now();
      const node = parseNodeStatusTopic(topic) ?? parseNodeHealthTopic(topic);
      if (node === undefined) return;
      let parsed: unknown;
      try {
        parsed = payload.length ? JSON.parse(payload.toString()) : undefined;
      } catch {
        parsed = undefined;
      }
      const kind = parseNodeStatusTopic(topic) ? 'status' : 'health';
      r.seen.push({ at, topic, retained, node, [kind]: parsed } as Seen);
      r.view.accept(topic, payload);
      r.waiters.changed();
    });
    await transport.subscribe([topics.allNodeStatus('home'), topics.allNodeHealth('home')], 1);
    return r;
  }

  status(node: string): NodeStatus | undefined {
    return this.view.roster.get(node);
  }

  /** Resolves with the first value `probe` returns (checked at every message), or rejects after `ms`. */
  until<T>(probe: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return this.waiters.until(probe, ms, what);
  }

  publish(topic: string, payload: string): Promise<void> {
    return this.transport.publish(topic, payload, { qos: 1, retain: true });
  }

  close(): Promise<void> {
    return this.transport.close(true);
  }
}

describe('one agent reports its health', () => {
  test('a report every interval, valid by the schema, retained; its figures follow requests, errors and a job', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-health-agent-'));
    const agent = await startAgent({ node: 'health-a', healthIntervalS: 0.2, dataDir });
    const rec = await Recorder.connect(agent.brokerUrl);
    const client = await KizunaClient.connect({ url: agent.brokerUrl, client: 'health-test', timeoutMs: 20_000 });
    try {
      const reports = () => rec.seen.filter((s) => s.health && s.node === 'health-a').map((s) => s.health!);
      const first = await rec.until(() => reports()[0], 5000, 'a first report');
      assert.deepEqual(healthProblems(first), []);
      assert.equal(first.instance, agent.instance);
      assert.equal(first.interval_s, 0.2);
      assert.ok(first.memory.agent_rss_bytes > 10e6 && first.memory.total_bytes >= first.memory.available_bytes);
      assert.equal(first.cpu.cores_pct.length > 0, true);
      assert.equal(first.disk?.path, dataDir);
      assert.deepEqual(first.inference.loaded.map((m) => m.name).sort(), ['digits', 'digits-int8']);
      assert.ok(first.reporter_cpu_ms >= 0);

      for (let i = 0; i < 20; i++) await client.infer('digits', tensorOf(i));
      const bad = await client.infer('digits', { input: { dtype: 'float32', shape: [1, 10], data: new Float32Array(10) } }).catch((e: unknown) => e);
      assert.ok(bad instanceof KizunaError && bad.code === 'KZ_ERR_BAD_SHAPE');
      const items = [];
      for await (const item of client.job('digits', Array.from({ length: 12 }, (_, i) => tensorOf(i)))) items.push(item);
      assert.equal(items.length, 12);

      const last = await rec.until(() => reports().find((h) => h.inference.total_requests >= 33), 10_000, '33 answers in a report');
      for (const h of reports()) assert.ok(isNodeHealth(h), healthProblems(h).join('; '));
      assert.equal(last.inference.total_requests, 33, '20 requests, 1 refused, 12 job inputs');
      assert.deepEqual(last.inference.total_errors_by_code, { KZ_ERR_BAD_SHAPE: 1 });
      const model = (h: NodeHealth) => h.inference.models.find((m) => m.name === 'digits')!;
      assert.deepEqual([model(last).total_requests, model(last).total_errors], [33, 1]);
      // The periods add up to the totals, and the percentiles show where requests were answered.
      const upTo = reports().slice(0, reports().indexOf(last) + 1);
      assert.equal(upTo.reduce((n, h) => n + model(h).requests, 0), 33);
      assert.equal(upTo.reduce((n, h) => n + h.inference.requests, 0), 33);
      assert.equal(upTo.reduce((n, h) => n + (h.inference.errors_by_code.KZ_ERR_BAD_SHAPE ?? 0), 0), 1);
      const busy = upTo.filter((h) => model(h).p95_ms !== null);
      assert.ok(busy.length > 0);
      for (const h of busy) {
        assert.ok(model(h).p50_ms! <= model(h).p95_ms! && model(h).p95_ms! < 5000);
        assert.ok(h.inference.rate_per_s > 0 && model(h).rate_per_s > 0);
      }
      assert.ok(upTo.every((h, i) => i === 0 || h.seq === upTo[i - 1]!.seq + 1), 'one report after another, none lost on loopback');
      // Quiet again: the next periods are empty, the totals stay.
      const quiet = await rec.until(() => reports().find((h) => h.seq > last.seq && h.inference.requests === 0), 5000, 'a quiet period');
      assert.equal(model(quiet).p95_ms, null);
      assert.equal(quiet.inference.total_requests, 33);

      // Retained: a dashboard that starts now has the latest report at once.
      const late = await Recorder.connect(agent.brokerUrl);
      const retained = await late.until(() => late.seen.find((s) => s.health), 5000, 'the retained report');
      assert.equal(retained.retained, true);
      assert.equal(retained.health!.node, 'health-a');
      await late.close();
    } finally {
      await client.close().catch(() => undefined);
      await rec.close().catch(() => undefined);
      await agent.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('a mesh of two agent processes, seen by operators', () => {
  const procs = new Map<string, ChildProcess>();
  const dirs: string[] = [];
  let ports: number[];
  let rec: Recorder;
  /** The CLI's own data directory (no credentials: an open mesh). */
  const cliDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-health-cli-'));
  const url = () => `mqtt://127.0.0.1:${ports[0]}`;

  /** Starts `kizuna agent` as `node`, with the first port's agent as its peer. */
  const start = async (key: string, node: string, port: number, extra: string[] = []) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kz-health-${node}-`));
    dirs.push(dir);
    const peers = ports.filter((p) => p !== port).slice(0, 1).map((p) => `127.0.0.1:${p}`).join(',');
    const { child } = await spawnAgent(['--port', String(port), '--node', node, '--peers', peers, '--formation-ms', '600', '--data-dir', dir, '--health-interval-s', '0.5', ...extra]);
    procs.set(key, child);
    return child;
  };

  before(async () => {
    ports = await freePorts(4);
    await start('a', 'a', ports[0]!);
    await start('b', 'b', ports[1]!);
    rec = await Recorder.connect(url());
  });
  after(async () => {
    await rec?.close().catch(() => undefined);
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    for (const d of [...dirs, cliDir]) fs.rmSync(d, { recursive: true, force: true });
  });

  const roles = () => Object.fromEntries(rec.view.roster.online().map((s) => [s.node, s.role]));

  test('kizuna status (a real process) prints both boards with their roles; --json parses; kizuna top shows them live and quits on q', async () => {
    await rec.until(() => roles().a === 'broker' && roles().b === 'standby' && rec.view.healthOf('a') && rec.view.healthOf('b'), 10_000, 'a broker, b standby, both reporting');
    const table = await runCli(['status', '--broker', url(), '--data-dir', cliDir]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^node\s+role\s+online\s+address\s+models\s+load %\s+temp\s+mem %\s+rss MB\s+req\/s\s+p95 ms\s+last seen$/);
    const row = (node: string) => lines.find((l) => l.startsWith(`${node} `))!.trim().split(/\s{2,}/);
    assert.deepEqual(row('a').slice(0, 4), ['a', 'broker', 'yes', `127.0.0.1:${ports[0]}`]);
    assert.deepEqual(row('b').slice(0, 4), ['b', 'standby', 'yes', `127.0.0.1:${ports[1]}`]);
    assert.ok(lines.indexOf(lines.find((l) => l.startsWith('a '))!) < lines.indexOf(lines.find((l) => l.startsWith('b '))!), 'the broker first');
    for (const node of ['a', 'b']) assert.match(row(node).at(-1)!, /ago$/, 'a last report');

    const json = await runCli(['status', '--broker', url(), '--json', '--data-dir', cliDir]);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout.trim().split('\n').length, 1, 'one line');
    const doc = JSON.parse(json.stdout) as ReturnType<MeshBoards['json']>;
    assert.equal(doc.mesh, 'home');
    assert.deepEqual(doc.boards.map((b) => [b.node, b.role, b.online]), [['a', 'broker', true], ['b', 'standby', true]]);
    for (const b of doc.boards) {
      assert.ok(isNodeHealth(b.health), `${b.node}'s health report`);
      assert.equal(b.status?.node, b.node);
      assert.deepEqual(b.models.sort(), ['digits', 'digits-int8']);
      assert.equal(typeof b.load_pct, 'number');
    }

    // top: frames until it has both boards, then q.
    const top = spawn(process.execPath, [CLI, 'top', '--broker', url(), '--refresh', '0.2', '--data-dir', cliDir], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((resolve) => top.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`top showed no boards: ${out}`)), 10_000);
      top.stdout.on('data', (d) => {
        out += d;
        if (/^a\s+broker\s+yes/m.test(out) && /^b\s+standby\s+yes/m.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    assert.match(out, /kizuna top - mesh home - 2 boards, 2 online/);
    top.stdin.write('q');
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    if (code === 'still running') top.kill('SIGKILL');
    assert.equal(code, 0, 'q quits');
  });

  test('a board restarted with the same node id while its old will lands late stays online, for old and new subscribers', async () => {
    const old = rec.status('b')!;
    assert.equal(old.online, true);
    // The old process hangs (its connection stays open); the board comes back as a new process.
    procs.get('b')!.kill('SIGSTOP');
    await start('b2', 'b', ports[2]!);
    const newB = () => {
      const s = rec.status('b');
      return s?.online && s.instance !== old.instance ? s : undefined;
    };
    // Settled: standby again, and reporting (so no status of its own is on its way when the will lands).
    await rec.until(() => newB()?.role === 'standby' && rec.view.healthOf('b')?.instance === newB()!.instance, 10_000, 'the new b online as standby');
    const born = newB()!;
    // The broker published the old connection's will when the new one took its client id over.
    const oldWill = rec.seen.find((s) => s.node === 'b' && s.status && !s.status.online && s.status.instance === old.instance);
    assert.ok(oldWill, 'the old will was published');

    // Now the old will arrives once more, late, after the new birth (as from a slow or bridged broker).
    const replayedAt = rec.now();
    await rec.publish(topics.nodeStatus('home', 'b'), JSON.stringify({ ...old, online: false }));
    await rec.until(() => rec.seen.find((s) => s.at >= replayedAt && s.node === 'b' && s.status?.online && s.status.instance === born.instance), 5000, 'b says again it is alive');
    assert.equal(rec.status('b')?.online, true, 'a subscriber that saw the birth never marked b offline');
    assert.equal(rec.status('b')?.instance, born.instance);

    // A subscriber that starts now sees only the retained status: b, alive.
    const fresh = await Recorder.connect(url());
    const first = await fresh.until(() => fresh.seen.find((s) => s.node === 'b' && s.status), 5000, 'b\'s retained status');
    assert.equal(first.retained, true);
    assert.equal(first.status!.online, true, 'the retained status is the birth, not the late will');
    assert.equal(first.status!.instance, born.instance);
    await fresh.close();
    const table = await runCli(['status', '--broker', url(), '--data-dir', cliDir]);
    assert.match(table.stdout, /^b\s+standby\s+yes/m);
    procs.get('b')!.kill('SIGKILL');
  });

  test('kill -9: the board shows offline within 1.5 keepalives', async (t) => {
    const b = rec.status('b')!;
    assert.equal(b.online, true);
    const killedAt = rec.now();
    procs.get('b2')!.kill('SIGKILL');
    const death = await rec.until(() => rec.seen.find((s) => s.at >= killedAt && s.node === 'b' && s.status && !s.status.online), 5000, 'b offline');
    const ms = death.at - killedAt;
    t.diagnostic(`offline ${ms.toFixed(1)} ms after kill -9`);
    assert.ok(ms <= 1.5 * KEEPALIVE_MS, `offline ${ms.toFixed(0)} ms after kill -9`);
    assert.equal(death.status!.instance, b.instance, 'its own will');
    assert.equal(death.status!.seq, b.seq);
    const table = await runCli(['status', '--broker', url(), '--data-dir', cliDir]);
    assert.match(table.stdout, /^b\s+standby\s+NO/m, 'kizuna status shows it offline');
  });

  test('a board that goes silent (SIGSTOP: a hung process, a cut cable) shows offline within 1.5 keepalives', async (t) => {
    await start('c', 'c', ports[3]!);
    await rec.until(() => rec.status('c')?.online && rec.view.healthOf('c'), 10_000, 'c online and reporting');
    const stoppedAt = rec.now();
    procs.get('c')!.kill('SIGSTOP');
    const death = await rec.until(() => rec.seen.find((s) => s.at >= stoppedAt && s.node === 'c' && s.status && !s.status.online), 5000, 'c offline');
    const ms = death.at - stoppedAt;
    // The broker drops a client 1.5 keepalives after its last packet, which came before the stop;
    // 100 ms more for timers on a loaded machine.
    t.diagnostic(`offline ${ms.toFixed(1)} ms after the board went silent`);
    assert.ok(ms <= 1.5 * KEEPALIVE_MS + 100, `offline ${ms.toFixed(0)} ms after the board went silent`);
    procs.get('c')!.kill('SIGKILL');
  });
});

describe('a mesh with credentials', () => {
  test('a board publishes its health under the access rules; kizuna status reads it as the board and as an app (--token, --ca)', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-health-creds-'));
    const board = path.join(root, 'board');
    const cliDir = path.join(root, 'laptop');
    let child: ChildProcess | undefined;
    try {
      await runCliOk(['init', '--data-dir', board]);
      const token = (await runCliOk(['token', 'app', 'ops', '--data-dir', board])).trim().split('\n').at(-1)!;
      const caFile = path.join(board, 'mesh-home', 'ca.pem');
      const [port] = await freePorts(1);
      ({ child } = await spawnAgent(['--port', String(port), '--data-dir', board, '--formation-ms', '0', '--health-interval-s', '0.5']));
      const url = `mqtts://127.0.0.1:${port}`;
      const asApp = async () => JSON.parse(await runCliOk(['status', '--broker', url, '--token', token, '--ca', caFile, '--json', '--data-dir', cliDir])) as ReturnType<MeshBoards['json']>;
      // Its first report comes right after it connects: wait for one (a refused publish would have cut its connection).
      let doc = await asApp();
      for (let i = 0; i < 50 && !doc.boards[0]?.health; i++) doc = await asApp();
      assert.equal(doc.boards.length, 1);
      const [b] = doc.boards;
      assert.deepEqual([b!.role, b!.online], ['broker', true]);
      assert.ok(isNodeHealth(b!.health), 'the board\'s report, read by an app');
      assert.equal(b!.health!.node, b!.node);
      const asBoard = await runCliOk(['status', '--broker', url, '--data-dir', board]);
      assert.match(asBoard, new RegExp(`^${b!.node}\\s+broker\\s+yes`, 'm'), 'the board\'s own credentials work too');
      const refused = await runCli(['status', '--broker', url, '--ca', caFile, '--data-dir', cliDir]);
      assert.notEqual(refused.code, 0, 'no token, no view');
    } finally {
      child?.kill('SIGKILL');
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

async function runCliOk(args: string[]): Promise<string> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`kizuna ${args.join(' ')} exited with ${r.code}: ${r.stderr}`);
  return r.stdout;
}
