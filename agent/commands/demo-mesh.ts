/**
 * The demo's mesh: N agents in this process, on loopback only, that know each other from a static
 * list of peers (never mDNS, never the machine's real interfaces). Resolves once the mesh has
 * formed: one broker that every member names, every member online in every view and known to the
 * broker's dispatcher. `stop()` closes every agent, followers first, so nobody re-elects.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Agent } from '../agent.js';
import { loadConfig } from '../config.js';

export interface DemoMesh {
  /** The mesh's name (apps give it to the client). */
  name: string;
  agents: Agent[];
  /** Every agent's address (any of them reaches the mesh). */
  urls: string[];
  broker: Agent;
  formedMs: number;
  /** The web dashboard of board-1, when asked for (loopback, any free port). */
  dashboardUrl?: string;
  stop(): Promise<void>;
}

export interface DemoMeshOptions {
  /** board-1 serves the web dashboard (agent/dashboard) on a free loopback port. */
  dashboard?: boolean;
}

const HOST = '127.0.0.1';
const MESH = 'demo';

/** Free loopback ports, for agents that must know each other's port before they start. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer().listen(0, HOST);
      await once(s, 'listening');
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function stopAll(agents: Agent[]): Promise<void> {
  const isBroker = (a: Agent) => a.mesh.role === 'broker';
  await Promise.all(agents.filter((a) => !isBroker(a)).map((a) => a.stop().catch(() => undefined)));
  await Promise.all(agents.filter(isBroker).map((a) => a.stop().catch(() => undefined)));
}

/** True when the mesh has formed, as the agents themselves see it. */
function formed(agents: Agent[], model: string): Agent | undefined {
  const brokers = agents.filter((a) => a.mesh.role === 'broker');
  if (brokers.length !== 1) return undefined;
  const broker = brokers[0]!;
  const everyone = agents.every((a) => {
    const v = a.view();
    return v.broker === broker.node && v.online.length === agents.length;
  });
  return everyone && broker.dispatcher?.roster.serving(model).length === agents.length ? broker : undefined;
}

async function untilFormed(agents: Agent[], model: string, timeoutMs: number): Promise<Agent> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const broker = formed(agents, model);
    if (broker) return broker;
    if (performance.now() > deadline) {
      const views = agents.map((a) => `${a.node}: ${a.mesh.role}, sees ${JSON.stringify(a.view())}`).join('; ');
      throw new Error(`the demo mesh did not form within ${timeoutMs} ms (${views})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function tryStart(n: number, model: string, options: DemoMeshOptions): Promise<DemoMesh> {
  const t0 = performance.now();
  // One agent needs no peers (it forms its mesh at once); several must know each other's ports.
  const ports = n === 1 ? [0] : await freePorts(n);
  const start = async (port: number, i: number): Promise<Agent> => {
    const peers = ports.filter((_, j) => j !== i).map((p) => `${HOST}:${p}`);
    const config = loadConfig({
      // Hermetic: no KIZUNA_* variable or config file changes what the demo runs.
      env: {},
      overrides: { host: HOST, port, node: `board-${i + 1}`, mesh: MESH, discovery: 'none', peers, formationMs: 500, logLevel: 'warn', ...(options.dashboard && i === 0 ? { dashboardPort: 0 } : {}) },
    });
    const agent = await Agent.create(config);
    await agent.start();
    return agent;
  };
  // board-1 first, as if it were switched on first: it finds nobody and takes the broker role;
  // the others then find it during their formation window and follow it. (Started all at once in
  // one process, they often elect two brokers for a moment, then one steps down: slower, noisier.)
  const agents: Agent[] = [];
  try {
    agents.push(await start(ports[0]!, 0));
    const rest = await Promise.allSettled(ports.slice(1).map((port, i) => start(port, i + 1)));
    agents.push(...rest.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])));
    const failed = rest.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await stopAll(agents);
    throw err;
  }
  try {
    const broker = await untilFormed(agents, model, 10_000);
    const dashboardUrl = agents[0]!.dashboard?.url;
    return { name: MESH, agents, broker, urls: agents.map((a) => a.brokerUrl), formedMs: performance.now() - t0, ...(dashboardUrl ? { dashboardUrl } : {}), stop: () => stopAll(agents) };
  } catch (err) {
    await stopAll(agents);
    throw err;
  }
}

/** Starts `n` agents on loopback and waits for their mesh; a port taken meanwhile means one more try. */
export async function startDemoMesh(n: number, model = 'digits', options: DemoMeshOptions = {}): Promise<DemoMesh> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await tryStart(n, model, options);
    } catch (err) {
      if (attempt >= 3 || !/in use/.test((err as Error).message)) throw err;
    }
  }
}
