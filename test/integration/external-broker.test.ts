/**
 * External broker mode against a real Mosquitto: no election, the agents share that broker, one of
 * them dispatches; when it dies (kill -9) another takes over and every request is still answered.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { KizunaClient } from '../../mesh/client.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { spawnAgent } from '../helpers/cli.js';
import { MeshWatch } from '../helpers/mesh-watch.js';
import { Mosquitto, mosquittoPath } from '../helpers/mosquitto.js';

const binary = mosquittoPath();
const digits = loadDigits().heldOut.slice(0, 20);
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % 20]!.pixels } });

describe('agents on an external Mosquitto broker (--broker)', { skip: binary ? false : 'mosquitto not installed: apt-get install mosquitto' }, () => {
  let broker: Mosquitto;
  const agents = new Map<string, ChildProcess>();
  let client: KizunaClient;
  let watch: MeshWatch;

  before(async () => {
    broker = await Mosquitto.start(binary!);
    for (const node of ['x', 'y']) {
      const { child } = await spawnAgent(['--broker', broker.url, '--node', node, '--keepalive-seconds', '1']);
      agents.set(node, child);
    }
    watch = await MeshWatch.connect([broker.url]);
    client = await KizunaClient.connect({ url: broker.url, client: 'ext', keepaliveSeconds: 1, resendMs: 1000, timeoutMs: 20_000 });
  });
  after(async () => {
    await client?.close().catch(() => undefined);
    await watch?.close().catch(() => undefined);
    for (const a of agents.values()) if (a.exitCode === null) a.kill('SIGKILL');
    await broker?.stop();
  });

  test('both agents join; requests through Mosquitto are answered by them', async () => {
    await watch.until((w) => Object.keys(w.roles()).join() === 'x,y', 10_000, 'x and y online');
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => client.infer('digits', tensorOf(i))));
    for (const r of answers) assert.ok(['x', 'y'].includes(r.agent));
    const unknown = await client.infer('nope', tensorOf(0)).catch((e: { code: string }) => e.code);
    assert.equal(unknown, 'KZ_ERR_UNKNOWN_MODEL', 'the dispatcher answers for models nobody serves');
  });

  test('kill -9 of the dispatching agent: the other takes over, nothing is lost', async () => {
    // x ranks first (same machine, smaller id), so x dispatches.
    const pending = Array.from({ length: 60 }, (_, i) => client.infer('digits', tensorOf(i)));
    agents.get('x')!.kill('SIGKILL');
    const after = Array.from({ length: 20 }, (_, i) => client.infer('digits', tensorOf(i)));
    const all = await Promise.all([...pending, ...after]);
    assert.equal(all.length, 80);
    await watch.until((w) => Object.keys(w.roles()).join() === 'y', 10_000, 'only y online');
    const later = await client.infer('digits', tensorOf(3));
    assert.equal(later.agent, 'y');
  });
});
