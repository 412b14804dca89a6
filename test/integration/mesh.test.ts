/**
 * Three real agent processes on loopback that find each other by static peers: the mesh forms,
 * survives kill -9 of its broker (and of the standby right after) with every request answered,
 * and a returning board does not take the broker back. (Real mDNS runs in test/netns/.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { spawnAgent } from '../helpers/cli.js';
import { MeshWatch } from '../helpers/mesh-watch.js';
import { freePorts } from '../helpers/ports.js';


const digits = loadDigits().heldOut.slice(0, 50);
/** The model's own answer for each digit (it gets about 2% of them wrong, everywhere alike). */
const expected: number[] = [];
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % 50]!.pixels } });

/** Sends `total` requests, `lanes` at a time; calls `at(n)` after the n-th answer. Every one must be answered right. */
async function traffic(client: KizunaClient, total: number, lanes: number, at: (done: number) => void): Promise<Record<string, number>> {
  const byAgent: Record<string, number> = {};
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < total) {
        const i = next++;
        const r = await client.infer('digits', tensorOf(i));
        assert.equal((r.answers![0] as { index: number }).index, expected[i % 50]);
        byAgent[r.agent] = (byAgent[r.agent] ?? 0) + 1;
        at(++done);
      }
    }),
  );
  return byAgent;
}

describe('a mesh of three agents (static peers, loopback)', () => {
  const names = ['a', 'b', 'c'];
  let ports: number[];
  const procs = new Map<string, ChildProcess>();
  let watch: MeshWatch;
  let client: KizunaClient;

  const start = async (i: number) => {
    const peers = ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`).join(',');
    const { child } = await spawnAgent(['--port', String(ports[i]), '--node', names[i]!, '--peers', peers, '--formation-ms', '600', '--rejoin-grace-ms', '1500']);
    procs.set(names[i]!, child);
  };

  before(async () => {
    ports = await freePorts(3);
    await Promise.all([0, 1, 2].map(start));
    const urls = ports.map((p) => `mqtt://127.0.0.1:${p}`).reverse();
    watch = await MeshWatch.connect(urls);
    client = await KizunaClient.connect({ url: urls, client: 'mesh-test', keepaliveSeconds: 1, timeoutMs: 20_000, resendMs: 1000 });
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    await watch?.close().catch(() => undefined);
    for (const p of procs.values()) if (p.exitCode === null) p.kill('SIGKILL');
  });

  /** The node that has `role` now. */
  const holder = (role: string) => Object.entries(watch.roles()).find(([, r]) => r === role)?.[0];

  test('forms one mesh: one broker, and the best-ranked of the others is standby', async () => {
    await watch.until((w) => Object.values(w.roles()).sort().join() === 'agent,broker,standby', 10_000, 'one broker, one standby, one agent');
    // Same machine, same rank inputs: the node id decides, so the standby is the first other name.
    // (The broker is usually a, but a board that starts alone first keeps the role: no pre-emption.)
    assert.equal(holder('standby'), names.filter((n) => n !== holder('broker'))[0]);
    for (let i = 0; i < 50; i++) {
      const r = await client.infer('digits', tensorOf(i));
      expected.push((r.answers![0] as { index: number }).index);
    }
    assert.ok(expected.filter((e, i) => e === digits[i]!.label).length >= 45, 'the model is right on most digits');
  });

  let killed = '';
  let successor = '';

  test('kill -9 of the broker: every request sent throughout gets its one right answer', async () => {
    killed = holder('broker')!;
    successor = holder('standby')!;
    // The client and the watcher reach the mesh through a board that survives.
    const byAgent = await traffic(client, 240, 4, (done) => done === 60 && procs.get(killed)!.kill('SIGKILL'));
    assert.ok(Object.keys(byAgent).some((n) => n !== killed), 'the surviving agents served after the kill');
    await watch.until((w) => w.roles()[successor] === 'broker' && !(killed in w.roles()) && Object.keys(w.roles()).length === 2, 10_000, `${successor} broker, ${killed} gone`);
    assert.equal(watch.roster.get(killed)?.online, false, 'the dead broker is offline in the view, not a ghost');
  });

  test('a returning board follows the incumbent instead of taking the broker back', async () => {
    await start(names.indexOf(killed));
    await watch.until((w) => w.roles()[killed] !== undefined, 10_000, `${killed} back online`);
    assert.equal(watch.roles()[successor], 'broker');
    const byAgent = await traffic(client, 40, 4, () => undefined);
    assert.equal(Object.values(byAgent).reduce((x, y) => x + y, 0), 40);
  });

  test('the standby killed right after the broker: the last board takes over, nothing lost', async () => {
    await watch.until((w) => Object.values(w.roles()).sort().join() === 'agent,broker,standby', 10_000, 'three members again');
    const [broker, standby] = [holder('broker')!, holder('standby')!];
    const survivor = names.find((n) => n !== broker && n !== standby)!;
    const byAgent = await traffic(client, 160, 4, (done) => {
      if (done !== 40) return;
      procs.get(broker)!.kill('SIGKILL');
      setTimeout(() => procs.get(standby)!.kill('SIGKILL'), 50);
    });
    assert.ok((byAgent[survivor] ?? 0) > 0);
    await watch.until((w) => JSON.stringify(w.roles()) === JSON.stringify({ [survivor]: 'broker' }), 10_000, `${survivor} alone as broker`);
  });
});
