/**
 * The network-namespace lab itself: real TCP between hosts, cuts, partitions, real mDNS multicast,
 * and no leftovers. Needs root (CI is root); skips elsewhere, naming what is missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { NetnsLab, netnsAvailable } from '../helpers/netns.js';
import { repoRoot } from '../helpers/shared.js';

const node = process.execPath;
const fixture = (name: string) => path.join(repoRoot, 'dist', 'test', 'netns', 'fixtures', name);
// One line per connection; bounded lifetime in case the lab's owner dies without cleanup.
const SERVER = `require('net').createServer((s) => s.end('hi\\n')).listen(0, process.argv[1], function () {
  console.log('listening', this.address().port); }); setTimeout(() => process.exit(0), 60000);`;
const CLIENT = `const [h, p, t] = process.argv.slice(1); const s = require('net').connect(+p, h);
  setTimeout(() => { console.log('fail timeout'); process.exit(0); }, +t);
  s.on('data', () => { console.log('ok'); process.exit(0); });
  s.on('error', (e) => { console.log('fail', e.code); process.exit(0); });`;

/** 'ok', or 'fail <why>' when host `from` cannot reach address:port within timeoutMs. */
async function connect(lab: NetnsLab, from: number, address: string, port: number, timeoutMs: number): Promise<string> {
  const client = lab.spawn(from, node, ['-e', CLIENT, address, String(port), String(timeoutMs)]);
  return (await client.waitForOutput(/^(ok|fail.*)$/, timeoutMs + 5000))[1]!;
}

function leftovers(tag: string): string[] {
  const all = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }) + execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
  return all.split('\n').filter((line) => line.includes(tag));
}

test('netns lab: 3 hosts, TCP, cut, partition, mDNS, clean teardown', async (t) => {
  const available = netnsAvailable();
  if (!available.ok) return t.skip(available.reason);
  const lab = await NetnsLab.create(3);
  t.after(() => lab.destroy());
  const h1 = lab.host(1).address;
  assert.equal(h1, '10.77.0.11');
  const server = lab.spawn(1, node, ['-e', SERVER, h1]);
  const port = Number((await server.waitForOutput(/^listening (\d+)$/, 5000))[1]);

  await t.test('a TCP server in host 1 is reached from hosts 2 and 3', async () => {
    assert.equal(await connect(lab, 2, h1, port, 3000), 'ok');
    assert.equal(await connect(lab, 3, h1, port, 3000), 'ok');
  });

  await t.test('cut(1) silences host 1 (no RST), restore(1) brings it back', async () => {
    await lab.cut(1);
    assert.match(await connect(lab, 2, h1, port, 1000), /^fail (timeout|EHOSTUNREACH)$/);
    await lab.restore(1);
    assert.equal(await connect(lab, 2, h1, port, 3000), 'ok');
  });

  await t.test('partition([1], [2, 3]) blocks 2->1 but not 2->3; heal() restores', async () => {
    const peer = lab.spawn(3, node, ['-e', SERVER, lab.host(3).address]);
    const port3 = Number((await peer.waitForOutput(/^listening (\d+)$/, 5000))[1]);
    await lab.partition([1], [2, 3]);
    assert.match(await connect(lab, 2, h1, port, 1000), /^fail (timeout|EHOSTUNREACH)$/);
    assert.equal(await connect(lab, 2, lab.host(3).address, port3, 3000), 'ok');
    await lab.heal();
    assert.equal(await connect(lab, 2, h1, port, 3000), 'ok');
  });

  await t.test('real mDNS multicast: host 2 browses what host 1 publishes, with its TXT', async () => {
    const browser = lab.spawn(2, node, [fixture('mdns-browse.js')]); // route recipe: default interface
    await browser.waitForOutput(/^browsing$/, 5000);
    const publisher = lab.spawn(1, node, [fixture('mdns-publish.js'), 'kz-h1', '7000', h1]);
    const publishedAt = Number((await publisher.waitForOutput(/^publishing ([\d.]+)$/, 5000))[1]);
    const seen = await browser.waitForOutput(/^up ([\d.]+) (.*)$/, 5000);
    const service = JSON.parse(seen[2]!);
    assert.equal(service.name, 'kz-h1');
    assert.equal(service.port, 7000);
    assert.deepEqual(service.txt, { role: 'worker', node: 'kz-h1' });
    assert.ok(service.addresses.includes(h1), `addresses ${service.addresses}`);
    assert.equal(service.referer, h1);
    t.diagnostic(`mDNS publish() in host 1 -> 'up' in host 2: ${(Number(seen[1]) - publishedAt).toFixed(0)} ms`);
  });

  await t.test('destroy() kills the processes and leaves no namespace or link behind', async () => {
    await lab.destroy();
    await lab.destroy(); // idempotent
    assert.ok(server.exitCode !== null || server.signalCode !== null, 'server still running');
    assert.deepEqual(leftovers(lab.tag), []);
  });
});

test('netns lab: 5 hosts created and destroyed (timings)', async (t) => {
  const available = netnsAvailable();
  if (!available.ok) return t.skip(available.reason);
  let start = performance.now();
  const lab = await NetnsLab.create(5);
  const created = performance.now() - start;
  t.after(() => lab.destroy());
  assert.equal(lab.host(5).address, '10.77.0.15');
  start = performance.now();
  await lab.destroy();
  t.diagnostic(`5 hosts: create ${created.toFixed(0)} ms, destroy ${(performance.now() - start).toFixed(0)} ms`);
  assert.deepEqual(leftovers(lab.tag), []);
});

test('netns lab: cleanupLeftovers() removes the lab of a process that died by SIGKILL', async (t) => {
  const available = netnsAvailable();
  if (!available.ok) return t.skip(available.reason);
  const harness = path.join(repoRoot, 'dist', 'test', 'helpers', 'netns.js');
  const crash = `import(${JSON.stringify(harness)}).then(async ({ NetnsLab }) => {
    const lab = await NetnsLab.create(2); console.log('tag', lab.tag); process.kill(process.pid, 'SIGKILL'); });`;
  const owner = spawn(node, ['-e', crash], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => owner.kill('SIGKILL'));
  let out = '';
  owner.stdout.on('data', (d) => (out += d));
  await once(owner, 'close');
  const tag = /^tag (\w+)$/m.exec(out)?.[1];
  assert.ok(tag, `no tag in ${out}`);
  assert.equal(leftovers(tag).length, 3, 'the crashed lab should still be there');
  const removed = NetnsLab.cleanupLeftovers();
  assert.ok(removed.length >= 3, `removed ${removed}`);
  assert.deepEqual(leftovers(tag), []);
});
