/**
 * A lab of real hosts in Linux network namespaces, for multi-host tests (failover, mDNS). Root only.
 *
 * Layout: host N is namespace `<prefix><tag>hN` with eth0 = 10.77.0.(10+N)/24. Its peer `vN` sits on
 * bridge `br1` inside a private switch namespace `<prefix><tag>s0`: nothing is created in the root
 * namespace, so no traffic can reach a real interface, and a host firewall (docker's FORWARD DROP
 * with br_netfilter) or NetworkManager never sees the lab. IPv6 is off everywhere (no MLD/RS).
 * The tag starts with the owner's pid, so cleanupLeftovers() removes only labs of dead processes.
 */
import { execFile, execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { promisify } from 'node:util';

const run = promisify(execFile);
const NO_V6 = ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'];

export interface LabHost { n: number; name: string; address: string }
export type LabProcess = ChildProcess & {
  host: number;
  stdoutText(): string;
  stderrText(): string;
  /** Resolves with the first line (stdout or stderr) matching `re`; rejects with the output so far on timeout or exit. */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
};

function ipSync(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function quiet(fn: () => unknown): void {
  try { fn(); } catch { /* teardown goes on: the thing may already be gone */ }
}
function errText(e: unknown): string {
  return String((e as { stderr?: string }).stderr || (e as Error).message).trim();
}
function netnsNames(): string[] {
  return ipSync(['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
}
function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}
function newTag(): string {
  // 5 base-36 chars hold any pid (pid_max <= 2^22); 2 random chars tell labs of one process apart.
  return process.pid.toString(36).padStart(5, '0') + Math.random().toString(36).slice(2, 4).padEnd(2, '0');
}

let availability: { ok: true } | { ok: false; reason: string } | undefined;
/** Whether labs can be built here: root, iproute2, `ip netns add`, veth and bridge devices. */
export function netnsAvailable(): { ok: true } | { ok: false; reason: string } {
  if (availability) return availability;
  if (process.platform !== 'linux') return (availability = { ok: false, reason: `network namespaces need Linux (this is ${process.platform})` });
  if (process.getuid?.() !== 0) return (availability = { ok: false, reason: `network namespaces need root (uid ${process.getuid?.()})` });
  try { ipSync(['-V']); } catch { return (availability = { ok: false, reason: '`ip` (iproute2) not found on PATH' }); }
  const probe = `kz${newTag()}h0`;
  try { ipSync(['netns', 'add', probe]); } catch (e) {
    return (availability = { ok: false, reason: `\`ip netns add\` failed (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): ${errText(e)}` });
  }
  try {
    ipSync(['-n', probe, 'link', 'add', 'kzbr', 'type', 'bridge']);
    ipSync(['-n', probe, 'link', 'add', 'kzv', 'type', 'veth', 'peer', 'name', 'kzw']);
    availability = { ok: true };
  } catch (e) {
    availability = { ok: false, reason: `creating a bridge or veth pair failed (kernel modules bridge, veth): ${errText(e)}` };
  } finally { quiet(() => ipSync(['netns', 'del', probe])); }
  return availability;
}

const liveLabs = new Set<NetnsLab>();
process.on('exit', () => { for (const lab of liveLabs) lab.destroySync(); });

export class NetnsLab {
  private destroyed = false;
  private readonly procs = new Set<LabProcess>();

  private constructor(readonly tag: string, readonly prefix: string, readonly hosts: number) {}

  get switchName(): string { return `${this.prefix}${this.tag}s0`; }
  host(n: number): LabHost {
    if (!Number.isInteger(n) || n < 1 || n > this.hosts) throw new RangeError(`no host ${n} in a lab of ${this.hosts}`);
    return { n, name: `${this.prefix}${this.tag}h${n}`, address: `10.77.0.${10 + n}` };
  }

  /** Builds `hosts` namespaces on one bridge. Removes leftovers of crashed runs first. */
  static async create(hosts: number, options: { prefix?: string } = {}): Promise<NetnsLab> {
    const prefix = options.prefix ?? 'kz';
    if (!/^[a-z]{1,6}$/.test(prefix)) throw new Error(`prefix must be 1-6 lowercase letters, got ${prefix}`);
    if (!Number.isInteger(hosts) || hosts < 1 || hosts > 200) throw new RangeError(`hosts must be 1..200, got ${hosts}`);
    NetnsLab.cleanupLeftovers(prefix);
    const lab = new NetnsLab(newTag(), prefix, hosts);
    liveLabs.add(lab);
    try { await lab.build(); } catch (e) { lab.destroySync(); throw e; }
    return lab;
  }

  private async build(): Promise<void> {
    const sw = this.switchName;
    const nsSysctl = (ns: string, ...kv: string[]) => run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', ...kv]);
    await run('ip', ['netns', 'add', sw]);
    await nsSysctl(sw, ...NO_V6); // before any device exists: they inherit "default"
    for (const br of ['br1', 'br2']) {
      // STP off and no forward delay: ports forward at once; no snooping: multicast always floods.
      await run('ip', ['-n', sw, 'link', 'add', br, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0']);
      await run('ip', ['-n', sw, 'link', 'set', br, 'up']);
    }
    for (let n = 1; n <= this.hosts; n++) {
      const { name, address } = this.host(n);
      await run('ip', ['netns', 'add', name]);
      await nsSysctl(name, ...NO_V6);
      await run('ip', ['-n', sw, 'link', 'add', `v${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name]);
      await run('ip', ['-n', sw, 'link', 'set', `v${n}`, 'master', 'br1', 'up']);
      await run('ip', ['-n', name, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
      await run('ip', ['-n', name, 'link', 'set', 'eth0', 'up']);
      // Without it multicast has no route (no default route here) and mDNS fails silently.
      await run('ip', ['-n', name, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
    }
  }

  /** Runs `command` inside host n's namespace (use process.execPath for node). Killed at destroy(). */
  spawn(n: number, command: string, args: string[] = [], options: SpawnOptions = {}): LabProcess {
    if (this.destroyed) throw new Error('lab destroyed');
    const child = spawnChild('ip', ['netns', 'exec', this.host(n).name, command, ...args], { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    const text = { stdout: '', stderr: '' };
    const lines: string[] = [];
    const events = new EventEmitter();
    for (const stream of ['stdout', 'stderr'] as const) {
      let partial = '';
      child[stream]!.setEncoding('utf8');
      child[stream]!.on('data', (d: string) => {
        text[stream] += d;
        const parts = (partial + d).split('\n');
        partial = parts.pop() ?? '';
        for (const line of parts) { lines.push(line); events.emit('line', line); }
      });
      child[stream]!.on('end', () => { if (partial) { lines.push(partial); events.emit('line', partial); } });
    }
    let closed = false;
    child.once('close', () => { closed = true; events.emit('close'); this.procs.delete(proc); });
    const proc = Object.assign(child, {
      host: n,
      stdoutText: () => text.stdout,
      stderrText: () => text.stderr,
      waitForOutput: (re: RegExp, timeoutMs: number) => new Promise<RegExpExecArray>((resolve, reject) => {
        const one = new RegExp(re.source, re.flags.replace('g', '')); // no lastIndex state
        const found = (line: string) => { const m = one.exec(line); if (m) { done(); resolve(m); } };
        const fail = (why: string) => { done(); reject(new Error(`${why} waiting for ${re} in host ${n}: ${command} ${args.join(' ')}\n--- stdout\n${text.stdout}\n--- stderr\n${text.stderr}`)); };
        const onClose = () => fail(`exited (${child.exitCode ?? child.signalCode})`);
        const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);
        const done = () => { clearTimeout(timer); events.off('line', found); events.off('close', onClose); };
        events.on('line', found);
        events.on('close', onClose);
        for (const line of lines) { if (one.exec(line)) return found(line); }
        if (closed) onClose();
      }),
    });
    this.procs.add(proc);
    return proc;
  }

  /** Sends `signal` to every live process spawned in host n. */
  kill(n: number, signal: NodeJS.Signals = 'SIGTERM'): void {
    for (const p of this.procs) if (p.host === n) p.kill(signal);
  }

  /** Host n loses its link (peer down): packets to and from it vanish, nobody gets a RST. */
  async cut(n: number): Promise<void> { await run('ip', ['-n', this.switchName, 'link', 'set', `v${this.host(n).n}`, 'down']); }
  async restore(n: number): Promise<void> { await run('ip', ['-n', this.switchName, 'link', 'set', `v${this.host(n).n}`, 'up']); }

  /** Hosts of groupB move to a second bridge: A and B cannot reach each other. Others stay with A. */
  async partition(groupA: number[], groupB: number[]): Promise<void> {
    const overlap = groupA.filter((n) => groupB.includes(n));
    if (overlap.length) throw new Error(`hosts ${overlap.join(', ')} are in both groups`);
    for (const n of groupA) await this.attach(n, 'br1');
    for (const n of groupB) await this.attach(n, 'br2');
  }
  async heal(): Promise<void> {
    for (let n = 1; n <= this.hosts; n++) await this.attach(n, 'br1');
  }
  private async attach(n: number, bridge: string): Promise<void> {
    await run('ip', ['-n', this.switchName, 'link', 'set', `v${this.host(n).n}`, 'master', bridge]);
  }

  /** SIGKILLs every spawned process, waits (bounded) for them, then removes all namespaces. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    const exits = [...this.procs].map((p) => once(p, 'close'));
    for (const p of this.procs) quiet(() => p.kill('SIGKILL'));
    for (const ns of this.namespaces()) killInside(ns); // grandchildren holding our pipes open
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.destroySync();
  }

  /** The synchronous teardown, also run on process 'exit'. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    liveLabs.delete(this);
    for (const p of this.procs) quiet(() => p.kill('SIGKILL'));
    const existing = netnsNames();
    removeNamespaces(this.namespaces().filter((ns) => existing.includes(ns)));
  }

  private namespaces(): string[] {
    return [this.switchName, ...Array.from({ length: this.hosts }, (_, i) => this.host(i + 1).name)];
  }

  /** Removes the namespaces of labs whose owner process is gone (a crash, a SIGKILL). Returns them. */
  static cleanupLeftovers(prefix = 'kz'): string[] {
    const own = new Set([...liveLabs].map((lab) => lab.tag));
    const pattern = new RegExp(`^${prefix}([0-9a-z]{5})([0-9a-z]{2})[hs]\\d+$`);
    const stale = netnsNames().filter((ns) => {
      const m = pattern.exec(ns);
      if (!m) return false;
      const pid = parseInt(m[1]!, 36);
      return !own.has(m[1]! + m[2]!) && (pid === process.pid || !pidAlive(pid));
    });
    removeNamespaces(stale);
    return stale;
  }
}

/** Kills whatever runs inside (children of our children too), then deletes: the devices go with them. */
function removeNamespaces(names: string[]): void {
  for (const ns of names) {
    killInside(ns);
    // Deleting the veths first frees their peers even if a process still holds a namespace open.
    quiet(() => { for (const dev of ipSync(['-n', ns, '-o', 'link', 'show', 'type', 'veth']).matchAll(/^\d+: ([^:@]+)/gm)) ipSync(['-n', ns, 'link', 'del', dev[1]!]); });
    quiet(() => ipSync(['netns', 'del', ns]));
  }
}

function killInside(ns: string): void {
  quiet(() => {
    for (const pid of ipSync(['netns', 'pids', ns]).split('\n').filter(Boolean)) quiet(() => process.kill(Number(pid), 'SIGKILL'));
  });
}
