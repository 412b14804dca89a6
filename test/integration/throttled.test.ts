/**
 * A board that its firmware reports throttled or under-powered says so in its status and its
 * advert (the election then ranks it after the others), and says so again when that ends. A real
 * agent, with the Pi's get_throttled file faked in a temp folder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SystemProbe } from '../../agent/health/system.js';
import { startAgent } from '../helpers/agent.js';

test('throttling read from the firmware reaches the status and the advert, both ways', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-throttled-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const firmware = path.join(dir, 'get_throttled');
  fs.writeFileSync(firmware, '0\n');
  const system = new SystemProbe({ throttled: firmware, vcgencmd: null });
  const agent = await startAgent({ node: 'pi-hot', dataDir: dir, healthIntervalS: 0.2 }, { system });
  t.after(() => agent.stop());
  const own = () => agent.roster.all().find((s) => s.node === 'pi-hot');
  assert.equal(own()?.throttled, false);

  fs.writeFileSync(firmware, '0x50005\n'); // under-voltage and throttled now (and ever)
  assert.deepEqual(await once(agent.healthReporter!, 'throttled'), [true]);
  assert.equal(own()?.throttled, true);
  assert.equal(agent.advert().throttled, true);

  fs.writeFileSync(firmware, '0x50000\n'); // only "has happened since boot": not now
  assert.deepEqual(await once(agent.healthReporter!, 'throttled'), [false]);
  assert.equal(own()?.throttled, false);
  assert.equal(agent.advert().throttled, false);
});
