/**
 * A real `kizuna agent` process for the flood test and the security benchmark: started on
 * 127.0.0.1 with port 0 and no discovery (alone: no mDNS), its refusals counted from its log lines
 * as they come, its memory and CPU read from /proc/<pid>. Also the mesh CA an app of it needs when
 * its broker takes MQTT over TLS only, and an app connected to it.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { credentialsDir } from '../../agent/credentials.js';
import { KizunaClient, type ClientOptions } from '../../mesh/client.js';
import { spawnGuarded } from './child.js';

const CLI = fileURLToPath(new URL('../../agent/cli.js', import.meta.url));
const MESH = 'home';

/** The agent's refusals, counted from its log lines as they come. */
export interface DenialCounts {
  /** `connect refused (client ...)`: CONNACK 5. */
  connectRefused: number;
  /** `publish refused`: a publish the access rules deny (the connection is closed). */
  publishRefused: number;
  /** `subscribe refused`: SUBACK 0x80. */
  subscribeRefused: number;
  /** `connection ... cut off: it ...` by the packet guard, in all and by reason. */
  cutOff: number;
  cutFlood: number;
  cutTooLarge: number;
  cutMalformed: number;
  /** `closed: this mesh takes MQTT over TLS only`: plain MQTT to a TLS-only broker. */
  plainRefused: number;
  /** Lines at level error (none expected). */
  errors: number;
}

export interface AgentProcess {
  proc: ChildProcess;
  pid: number;
  port: number;
  /** mqtt://, or mqtts:// when the agent takes MQTT over TLS only (it says so when it starts serving). */
  url: string;
  tls: boolean;
  node: string;
  denials: DenialCounts;
  /** The last log lines (for failure messages). */
  tail(): string;
  errorLines: string[];
  alive(): boolean;
  /** Resolves when `pred` holds over the counts (checked at every log line), or rejects after `ms`. */
  until(pred: (d: DenialCounts) => boolean, ms: number, what: string): Promise<void>;
  stop(): Promise<void>;
}

export interface AgentLimits {
  maxPacketBytes: number;
  maxPayloadBytes: number;
  publishPerSecond: number;
  publishBurst: number;
}

export async function spawnAgentProcess(o: { dataDir: string; node: string; simulateMs: number; limits?: AgentLimits; startTimeoutMs?: number }): Promise<AgentProcess> {
  const args = [CLI, 'agent', '--host', '127.0.0.1', '--port', '0', '--node', o.node, '--data-dir', o.dataDir, '--discovery', 'none', '--log-level', 'info', '--threads', '1'];
  if (o.simulateMs > 0) args.push('--simulate-ms-per-input', String(o.simulateMs));
  if (o.limits) {
    args.push('--max-packet-bytes', String(o.limits.maxPacketBytes), '--max-payload-bytes', String(o.limits.maxPayloadBytes));
    args.push('--publish-per-second', String(o.limits.publishPerSecond), '--publish-burst', String(o.limits.publishBurst));
  }
  const { proc, stop } = spawnGuarded(args);
  const denials: DenialCounts = { connectRefused: 0, publishRefused: 0, subscribeRefused: 0, cutOff: 0, cutFlood: 0, cutTooLarge: 0, cutMalformed: 0, plainRefused: 0, errors: 0 };
  const errorLines: string[] = [];
  const lines: string[] = [];
  const watchers = new Set<() => void>();
  let port = 0;
  let scheme = 'mqtt';
  let serving = false;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not serve within ${o.startTimeoutMs ?? 30_000} ms:\n${lines.join('\n')}`)), o.startTimeoutMs ?? 30_000);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!serving) reject(new Error(`the agent exited (${code ?? signal}) before serving:\n${lines.join('\n')}`));
    });
    readline.createInterface({ input: proc.stderr! }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 60) lines.shift();
      if (line.includes(' refused (client ')) {
        if (line.includes('connect refused')) denials.connectRefused++;
        else if (line.includes('publish refused')) denials.publishRefused++;
        else if (line.includes('subscribe refused')) denials.subscribeRefused++;
      } else if (/ cut off: it /.test(line)) {
        denials.cutOff++;
        if (line.includes('published faster')) denials.cutFlood++;
        else if (line.includes('sent a packet of')) denials.cutTooLarge++;
        else if (line.includes('malformed packet length')) denials.cutMalformed++;
      } else if (line.includes('takes MQTT over TLS only')) {
        denials.plainRefused++;
      } else if (/^\S+ error /.test(line)) {
        denials.errors++;
        if (errorLines.length < 20) errorLines.push(line);
      }
      const listening = /broker listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (listening) port = Number(listening[1]);
      if (!serving && /serving mesh/.test(line)) {
        serving = true;
        scheme = /serving mesh "[^"]*" on (mqtts?):\/\//.exec(line)?.[1] ?? 'mqtt';
        clearTimeout(timer);
        if (port) resolve();
        else reject(new Error(`the agent serves without a port:\n${lines.join('\n')}`));
      }
      for (const w of watchers) w();
    });
  });
  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    proc, pid: proc.pid!, port, url: `${scheme}://127.0.0.1:${port}`, tls: scheme === 'mqtts', node: o.node, denials, errorLines,
    tail: () => lines.join('\n'),
    alive: () => proc.exitCode === null && proc.signalCode === null,
    until: (pred, ms, what) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!pred(denials)) return;
          clearTimeout(timer);
          watchers.delete(check);
          resolve();
        };
        const timer = setTimeout(() => (watchers.delete(check), reject(new Error(`not within ${ms} ms: ${what}; counted ${JSON.stringify(denials)}`))), ms);
        watchers.add(check);
        check();
      }),
    stop,
  };
}

/** VmRSS and VmHWM of a process, in MB (undefined once it is gone). */
export function procMemoryMb(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** CPU time a process has used (user + system), in ms, from /proc/<pid>/stat. */
export function procCpuMs(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/**
 * Samples a process's RSS every `everyMs` until stopped: the highest seen, how many samples, and
 * the highest of each second (the trend: a plateau, or a leak).
 */
export function sampleRss(pid: number, everyMs = 100): { stop(): { peakMb: number; samples: number; perSecondMb: number[] } } {
  const start = performance.now();
  const perSecond: number[] = [];
  let samples = 0;
  const take = () => {
    const m = procMemoryMb(pid);
    if (!m) return;
    samples++;
    const s = Math.floor((performance.now() - start) / 1000);
    perSecond[s] = Math.max(perSecond[s] ?? 0, m.rss);
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      const perSecondMb = Array.from(perSecond, (x) => x ?? 0);
      return { peakMb: Math.max(0, ...perSecondMb), samples, perSecondMb };
    },
  };
}

// ---------------------------------------------------------------- its mesh's apps

/**
 * The mesh CA certificate (PEM) in a board's data directory, when its credentials include
 * certificates (then its broker takes MQTT over TLS only); undefined otherwise.
 */
export function meshCa(dataDir: string, mesh = MESH): string | undefined {
  const file = path.join(credentialsDir(dataDir, mesh), 'ca.pem');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
}

/** Removes a board's TLS certificates (if it has any), keeping its mesh key and token. */
export function withoutCertificates(dataDir: string, mesh = MESH): void {
  for (const f of ['ca.pem', 'board.pem', 'board.key']) fs.rmSync(path.join(credentialsDir(dataDir, mesh), f), { force: true });
}

/** An app of the agent's mesh: with a token when given, over TLS (checked with `ca`) when the agent takes TLS only. */
export function connectApp(agent: AgentProcess, client: string, o: { token?: string; ca?: string; timeoutMs?: number } = {}): Promise<KizunaClient> {
  if (agent.tls && !o.ca) throw new Error(`the agent takes MQTT over TLS only and no mesh CA was given for ${client}`);
  // `ca` is passed only over TLS (written so, it also compiles against a client without the option).
  const options = { url: agent.url, client, timeoutMs: o.timeoutMs ?? 10_000, ...(o.token ? { token: o.token } : {}), ...(agent.tls ? { ca: o.ca } : {}) } as ClientOptions;
  return KizunaClient.connect(options);
}
