/**
 * The flood scenario, shared by test/integration/flood.test.ts and the `security` benchmark: a real
 * `kizuna agent` process with mesh credentials on 127.0.0.1, a legitimate app that sends requests at
 * a steady rate (each awaited with a deadline), and the attackers of flood-attack.ts in a process of
 * their own. It measures the app's answers and latency unloaded and under attack, samples the agent's
 * RSS from /proc/<pid>/status, and counts the agent's refusals in its log lines.
 *
 * Loopback only, no mDNS (an agent on 127.0.0.1 with no peers is alone); every loop is bounded in
 * count and time; every process it starts is stopped (SIGTERM, then SIGKILL) by close().
 */
import { execFileSync, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initMesh, issueToken } from '../../agent/credentials.js';
import { summarize } from '../../agent/stats.js';
import type { KizunaClient } from '../../mesh/client.js';
import { asKizunaError } from '../../mesh/errors.js';
import { encodeTensorRequest } from '../../mesh/messages.js';
import type { Tensor } from '../../mesh/tensor.js';
import type { AttackerName, AttackPlan, AttackStats } from './flood-attack.js';
import { connectApp, meshCa, procCpuMs, procMemoryMb, sampleRss, spawnAgentProcess, withoutCertificates, type AgentLimits, type AgentProcess, type DenialCounts } from './flood-agent.js';

const ATTACK = fileURLToPath(new URL('./flood-attack.js', import.meta.url));
const MESH = 'home';

export interface Digit {
  input: Record<string, Tensor>;
  label: number;
}

/**
 * Held-out MNIST digits, read in a short-lived child process: the `mnist` package keeps ~70 MB in
 * the require cache, a heap the measuring process should not carry.
 */
export function heldOutDigits(count: number): Digit[] {
  const data = new URL('../../models/builtin/digits-data.js', import.meta.url).href;
  const script =
    `const { loadDigits } = await import(${JSON.stringify(data)});` +
    `const d = loadDigits().heldOut.slice(0, ${count});` +
    `process.stdout.write(JSON.stringify(d.map((x) => ({ label: x.label, px: Buffer.from(x.pixels.buffer, x.pixels.byteOffset, x.pixels.byteLength).toString('base64') }))));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 })) as { label: number; px: string }[];
  return out.map(({ label, px }) => {
    const buf = Buffer.from(px, 'base64');
    const data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    return { label, input: { input: { dtype: 'float32', shape: [1, 1, 28, 28], data } as Tensor } };
  });
}

export interface LegitRun {
  sent: number;
  /** Answered with the right digit. */
  correct: number;
  /** Answered, but with another digit (never expected). */
  wrong: number;
  /** Not answered: by error code (KZ_ERR_TIMEOUT when the deadline passed). */
  failed: Record<string, number>;
  /** Latency of each correct answer, ms. */
  latencies: number[];
  p50: number;
  p95: number;
  max: number;
}

/**
 * Sends `count` requests at `perSecond` on a fixed schedule (open loop: a slow answer does not
 * delay the next request), each awaited with `deadlineMs`; resolves when every one has settled.
 */
export async function legitRun(client: KizunaClient, digits: Digit[], o: { count: number; perSecond: number; deadlineMs: number }): Promise<LegitRun> {
  const run: LegitRun = { sent: 0, correct: 0, wrong: 0, failed: {}, latencies: [], p50: NaN, p95: NaN, max: NaN };
  const start = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < o.count; i++) {
    const wait = start + (i * 1000) / o.perSecond - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const d = digits[i % digits.length]!;
    const t0 = performance.now();
    run.sent++;
    pending.push(
      client.infer('digits', d.input, { timeoutMs: o.deadlineMs }).then(
        (r) => {
          const ms = performance.now() - t0;
          if ((r.answers?.[0] as { index?: number } | undefined)?.index === d.label) {
            run.correct++;
            run.latencies.push(ms);
          } else run.wrong++;
        },
        (err: unknown) => {
          const code = asKizunaError(err).code;
          run.failed[code] = (run.failed[code] ?? 0) + 1;
        },
      ),
    );
  }
  await Promise.all(pending);
  const s = summarize(run.latencies);
  Object.assign(run, { p50: s.p50, p95: s.p95, max: run.latencies.length ? Math.max(...run.latencies) : NaN });
  return run;
}

// ---------------------------------------------------------------- the attackers' process

export interface AttackProcess {
  /** Starts the attack; resolves with the attackers' counts when it is over. */
  go(): Promise<AttackStats>;
  kill(): void;
}

/** Forks flood-attack.js with `plan`; resolves once the attackers are prepared. */
export async function forkAttack(plan: AttackPlan): Promise<AttackProcess> {
  const child = fork(ATTACK, ['--flood-attack'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const message = (type: string, ms: number) =>
    new Promise<{ type: string; stats?: AttackStats; message?: string }>((resolve, reject) => {
      const timer = setTimeout(() => (kill(), reject(new Error(`the attackers sent no ${type} within ${ms} ms`))), ms);
      const onMessage = (m: { type: string; stats?: AttackStats; message?: string }) => {
        if (m.type !== type && m.type !== 'error') return;
        clearTimeout(timer);
        child.off('message', onMessage);
        if (m.type === 'error') reject(new Error(`the attackers failed: ${m.message}`));
        else resolve(m);
      };
      child.on('message', onMessage);
      child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`the attackers exited (${code}) before ${type}`))));
    });
  const ready = message('ready', 20_000);
  child.send(plan);
  await ready;
  return {
    go: async () => {
      const done = message('stats', plan.durationMs + 20_000);
      child.send({ type: 'go' });
      try {
        return (await done).stats!;
      } finally {
        process.removeListener('exit', kill);
      }
    },
    kill,
  };
}

// ---------------------------------------------------------------- the whole scenario

export interface FloodOptions {
  /** ms of compute per input the agent simulates, so floods queue (default 5). */
  simulateMs?: number;
  limits?: AgentLimits;
  /** The legitimate app's rate (default 20/s) and its deadline per request (default 10 s). */
  legitPerSecond?: number;
  deadlineMs?: number;
  /** Unloaded measure, attack, and check after it (ms; defaults 3,000 / 12,000 / 1,000). */
  baselineMs?: number;
  attackMs?: number;
  afterMs?: number;
  unauthLoops?: number;
  silentSockets?: number;
  malformedPerSecond?: number;
  /** Which attackers run (all by default). */
  only?: AttackerName[];
  /** The flooder reconnects at most this often (ms; default 1000, a stock mqtt.js client; 0: at once). */
  flooderReconnectMs?: number;
  /**
   * false: the board's credentials without its TLS certificates (the broker then takes plain MQTT,
   * as a board made before certificates existed). Default: whatever `initMesh` makes.
   */
  tls?: boolean;
}

export const FLOOD_LIMITS: AgentLimits = { maxPacketBytes: 256 * 1024, maxPayloadBytes: 64 * 1024, publishPerSecond: 500, publishBurst: 1000 };

export interface FloodResult {
  options: Required<Omit<FloodOptions, 'limits' | 'only' | 'tls'>> & { limits: AgentLimits; only?: AttackerName[] };
  unloaded: LegitRun;
  underAttack: LegitRun;
  after: LegitRun;
  attack: AttackStats;
  /** Agent RSS, MB: after the unloaded run; the highest sampled during the attack; VmHWM at the end. */
  rss: { unloadedMb: number; peakMb: number; samples: number; hwmMb: number; perSecondMb: number[] };
  /** The agent's CPU use during the attack, in % of one core. */
  agentCpuPct: number;
  /** Refusals counted in the agent's log once the attack was over (see settleDenials). */
  denials: DenialCounts;
  aliveAfter: boolean;
}

/**
 * A mesh with credentials on one board, its tokens, the agent process and the legitimate app.
 * `run()` plays the scenario once; `close()` stops everything (also after a failure).
 */
export class FloodLab {
  private constructor(
    readonly root: string,
    readonly agent: AgentProcess,
    readonly app: KizunaClient,
    readonly tokens: Record<'legit' | 'flooder' | 'paced' | 'oversize' | 'malformed' | 'acl' | 'impostor', string>,
    readonly digits: Digit[],
    readonly options: FloodResult['options'],
    /** The mesh CA, when the agent takes MQTT over TLS only. */
    readonly ca: string | undefined,
  ) {}

  static async start(o: FloodOptions = {}, digits = heldOutDigits(32)): Promise<FloodLab> {
    const options: FloodResult['options'] = {
      simulateMs: o.simulateMs ?? 5, limits: o.limits ?? FLOOD_LIMITS, legitPerSecond: o.legitPerSecond ?? 20, deadlineMs: o.deadlineMs ?? 10_000,
      baselineMs: o.baselineMs ?? 3000, attackMs: o.attackMs ?? 12_000, afterMs: o.afterMs ?? 1000,
      unauthLoops: o.unauthLoops ?? 4, silentSockets: o.silentSockets ?? 50, malformedPerSecond: o.malformedPerSecond ?? 40,
      flooderReconnectMs: o.flooderReconnectMs ?? 1000,
      ...(o.only ? { only: o.only } : {}),
    };
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-flood-'));
    const node = 'flood-a';
    let agent: AgentProcess | undefined;
    try {
      const creds = initMesh(path.join(root, 'a'), MESH, node);
      if (o.tls === false) withoutCertificates(path.join(root, 'a'));
      const tokens = Object.fromEntries(['legit', 'flooder', 'paced', 'oversize', 'malformed', 'acl', 'impostor'].map((n) => [n, issueToken(creds, 'app', n)])) as FloodLab['tokens'];
      agent = await spawnAgentProcess({ dataDir: path.join(root, 'a'), node, simulateMs: options.simulateMs, limits: options.limits });
      const ca = agent.tls ? meshCa(path.join(root, 'a')) : undefined;
      const app = await connectApp(agent, 'legit', { token: tokens.legit, ...(ca ? { ca } : {}), timeoutMs: options.deadlineMs });
      return new FloodLab(root, agent, app, tokens, digits, options, ca);
    } catch (err) {
      await agent?.stop();
      fs.rmSync(root, { recursive: true, force: true });
      throw err;
    }
  }

  private count(ms: number): number {
    return Math.max(1, Math.round((ms / 1000) * this.options.legitPerSecond));
  }

  async run(): Promise<FloodResult> {
    const { options, agent, app } = this;
    const legit = (ms: number) => legitRun(app, this.digits, { count: this.count(ms), perSecond: options.legitPerSecond, deadlineMs: options.deadlineMs });
    await legit(500); // warm-up: the first answers pay for lazy set-up
    const unloaded = await legit(options.baselineMs);
    const unloadedMb = procMemoryMb(agent.pid)?.rss ?? NaN;
    const attackers = await forkAttack({
      port: agent.port, mesh: MESH, node: agent.node, victim: 'legit',
      tokens: { flooder: this.tokens.flooder, paced: this.tokens.paced, oversize: this.tokens.oversize, malformed: this.tokens.malformed, acl: this.tokens.acl },
      request: encodeTensorRequest(this.digits[0]!.input).toString('base64'),
      limits: options.limits, durationMs: options.attackMs, ...(this.ca ? { tls: { ca: this.ca } } : {}),
      unauthLoops: options.unauthLoops, silentSockets: options.silentSockets, malformedPerSecond: options.malformedPerSecond,
      flooderReconnectMs: options.flooderReconnectMs,
      ...(options.only ? { only: options.only } : {}),
    });
    const rss = sampleRss(agent.pid, 100);
    const cpu0 = procCpuMs(agent.pid);
    const t0 = performance.now();
    let attack: AttackStats;
    let underAttack: LegitRun;
    try {
      [attack, underAttack] = await Promise.all([attackers.go(), legit(options.attackMs)]);
    } finally {
      attackers.kill();
    }
    const peak = rss.stop();
    const agentCpuPct = ((procCpuMs(agent.pid) - cpu0) / (performance.now() - t0)) * 100;
    const after = await legit(options.afterMs);
    const denials = await this.settleDenials(attack);
    return {
      options, unloaded, underAttack, after, attack, denials,
      rss: { unloadedMb, peakMb: peak.peakMb, samples: peak.samples, perSecondMb: peak.perSecondMb, hwmMb: procMemoryMb(agent.pid)?.hwm ?? NaN },
      agentCpuPct,
      aliveAfter: agent.alive(),
    };
  }

  /**
   * The agent's log lags its sockets a little: waits (on log lines, with a deadline) until it
   * names at least the refusals the attackers saw, then returns the counts as they stand.
   */
  private async settleDenials(a: AttackStats): Promise<DenialCounts> {
    await this.agent
      .until(
        (d) =>
          d.connectRefused >= a.unauth.refused + a.unauth.closedWithoutConnack &&
          d.cutFlood >= a.flooder.cutOff &&
          d.cutOff >= a.flooder.cutOff + a.oversize.cutOff &&
          d.plainRefused >= a.unauth.plainClosed &&
          d.publishRefused >= a.acl.publishClosed - a.acl.publishClosedUnlogged &&
          d.subscribeRefused >= a.acl.subscribeRefused,
        5000,
        'the agent logged every refusal the attackers saw',
      )
      .catch(() => undefined); // the caller compares the counts and says what is missing
    return { ...this.agent.denials };
  }

  async close(): Promise<void> {
    await this.app.close().catch(() => undefined);
    await this.agent.stop();
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
