/**
 * How an agent describes itself to the mesh: its advert (mDNS TXT, hello answers) and its retained
 * status (the advert plus liveness fencing, credits and models). Pure functions of the agent's state.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { NodeStatus } from '../mesh/status.js';
import { PROTOCOL_VERSION } from '../mesh/topics.js';
import type { LoadedModel } from '../models/store.js';
import type { Advert, Role } from './advert.js';
import type { Config } from './config.js';

export interface SelfState {
  config: Config & { host: string };
  node: string;
  instance: string;
  started: number;
  role: Role;
  term: number;
  seq: number;
  draining: boolean;
  port: number;
  models: readonly LoadedModel[];
  /** Placement: the session budget (0: none), bytes in use and the models in memory (absent: all warm). */
  memory?: { budgetBytes: number; usedBytes: number; warm: ReadonlySet<string> };
  /** Throttled or under-powered now (the health reporter reads the Pi's firmware): ranks it lower. */
  throttled?: boolean;
  /** Model files being fetched from the mesh (agent/distribution.ts). */
  transfers?: readonly { name: string; sha256: string; done: number; total: number }[];
}

export function advertOf(s: SelfState): Advert {
  return {
    v: PROTOCOL_VERSION,
    mesh: s.config.mesh,
    node: s.node,
    instance: s.instance,
    role: s.role,
    term: s.term,
    port: s.port,
    addresses: hostAddresses(s.config),
    eligible: s.config.eligible,
    ramMiB: Math.round(os.totalmem() / 1024 / 1024),
    cores: os.availableParallelism(),
    throttled: s.throttled ?? false,
  };
}

export function statusOf(s: SelfState): NodeStatus {
  const { instance: _i, v: _v, mesh: _m, ...advert } = advertOf(s);
  return {
    v: 1,
    ...advert,
    instance: s.instance,
    started: s.started,
    seq: s.seq,
    online: true,
    ...(s.draining ? { draining: true } : {}),
    // Credits: one running per inference slot and one ready behind it, so the next request is
    // prepared while the current one runs, and no board holds more than it can start soon.
    slots: Math.max(2, s.config.concurrency * 2),
    models: s.models.map(({ manifest: m }) => ({
      name: m.name,
      version: m.version,
      sha256: m.sha256,
      inputs: m.inputs,
      outputs: m.outputs,
      ...(m.preprocess ? { image: { width: m.preprocess.width, height: m.preprocess.height, channels: m.preprocess.channels } } : {}),
      warm: s.memory ? s.memory.warm.has(m.name) : true,
    })),
    ...(s.memory ? { modelMemory: { budgetMiB: mib(s.memory.budgetBytes), usedMiB: mib(s.memory.usedBytes) } } : {}),
    ...(s.transfers?.length ? { transfers: s.transfers.slice(0, 64).map((t) => ({ ...t })) } : {}),
  };
}

const mib = (bytes: number): number => Math.ceil(bytes / (1024 * 1024));

/** Where other boards can reach this one: the listen address, the mDNS interface, or every IPv4. */
export function hostAddresses(config: Pick<Config, 'mdnsInterface'> & { host: string }): string[] {
  const { host, mdnsInterface } = config;
  if (host !== '0.0.0.0' && host !== '::') return [host];
  if (mdnsInterface) return [mdnsInterface];
  const found = Object.values(os.networkInterfaces())
    .flat()
    .filter((i) => i && !i.internal && i.family === 'IPv4')
    .map((i) => i!.address);
  return found.length ? found : ['127.0.0.1'];
}

/**
 * The memory this board's processes may use: its RAM, or less in a container with a memory
 * limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes).
 */
export function boardMemoryBytes(): number {
  const total = os.totalmem();
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const limit = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isSafeInteger(limit) && limit > 0 && limit < total) return limit;
    } catch {
      // not in a cgroup with a limit
    }
  }
  return total;
}
