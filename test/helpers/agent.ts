/** Starts real agents on loopback (port 0) for tests, with a real aedes broker and real sockets. */
import { Agent, type AgentDeps } from '../../agent/agent.js';
import { loadConfig, type Config } from '../../agent/config.js';
import { KizunaClient } from '../../mesh/client.js';

export async function startAgent(overrides: Partial<Config> = {}, deps: AgentDeps = {}): Promise<Agent> {
  const config = loadConfig({ env: {}, overrides: { host: '127.0.0.1', port: 0, node: 'test-agent', logLevel: 'warn', ...overrides } });
  const agent = await Agent.create(config, deps);
  await agent.start();
  return agent;
}

export async function connectClient(agent: Agent, client = 'tester'): Promise<KizunaClient> {
  return KizunaClient.connect({ url: agent.brokerUrl, mesh: agent.config.mesh, client, timeoutMs: 20_000 });
}

/** Resolves when the agent's worker has accepted `count` more requests. */
export async function accepted(agent: Agent, count: number): Promise<void> {
  const worker = agent.work!;
  await new Promise<void>((resolve) => {
    let seen = 0;
    const onAccepted = () => {
      if (++seen < count) return;
      worker.off('accepted', onAccepted);
      resolve();
    };
    worker.on('accepted', onAccepted);
  });
}
