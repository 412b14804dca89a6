/**
 * Home Assistant discovery with real agents and a real subscriber standing in for Home Assistant
 * (mqtt.js, subscribed to `<prefix>/#` and the state topics the configs name): every config is
 * JSON with HA's keys, unique ids are unique, each state topic carries a retained message the
 * config's template renders to a real figure (the test's Jinja subset, test/helpers/jinja.ts);
 * availability follows the board's status (kill -9: its will makes it offline); Home Assistant's
 * birth (`online` on `<prefix>/status`) makes the board publish its configs again. Also: a faked
 * Pi (thermal zone, firmware flags) announces temperature and throttling; a mesh with credentials
 * lets the board announce and Home Assistant (an app token) read and send its birth; Mosquitto.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KizunaClient } from '../../mesh/client.js';
import { parseNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { Transport, type TransportOptions } from '../../mesh/mqtt.js';
import { topics } from '../../mesh/topics.js';
import { SystemProbe } from '../../agent/health/system.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { Waiters } from '../helpers/waiters.js';
import { startAgent } from '../helpers/agent.js';
import { runCli, spawnAgent } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';
import { renderTemplate } from '../helpers/jinja.js';
import { Mosquitto, mosquittoPath } from '../helpers/mosquitto.js';

const digits = loadDigits().heldOut.slice(0, 16);
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % digits.length]!.pixels } });

interface Msg {
  at: number;
  topic: string;
  payload: string;
  retained: boolean;
}

/** A stand-in for Home Assistant: its discovery subscription, then each config's state and availability topics. */
class FakeHomeAssistant {
  readonly seen: Msg[] = [];
  private readonly latest = new Map<string, Msg>();
  private readonly waiters = new Waiters();
  private constructor(private readonly transport: Transport, readonly prefix: string) {}

  static async connect(o: TransportOptions, prefix: string, states: string[]): Promise<FakeHomeAssistant> {
    const transport = await Transport.connect({ keepaliveSeconds: 2, backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 }, ...o });
    const ha = new FakeHomeAssistant(transport, prefix);
    transport.onMessage((topic, payload, retained) => {
      const m = { at: performance.now(), topic, payload: payload.toString('utf8'), retained };
      ha.seen.push(m);
      ha.latest.set(topic, m);
      ha.waiters.changed();
    });
    await transport.subscribe([`${prefix}/#`, ...states], 1);
    return ha;
  }

  /** The latest config of each entity (cleared ones left out). */
  configs(): Map<string, Record<string, any>> {
    const out = new Map<string, Record<string, any>>();
    for (const [topic, m] of this.latest) if (topic.startsWith(`${this.prefix}/`) && topic.endsWith('/config') && m.payload) out.set(topic, JSON.parse(m.payload) as Record<string, any>);
    return out;
  }

  payload(topic: string): string | undefined {
    return this.latest.get(topic)?.payload;
  }

  health(topic: string): NodeHealth | undefined {
    const p = this.latest.get(topic)?.payload;
    return p ? parseNodeHealth(Buffer.from(p)) : undefined;
  }

  /** Resolves with the first value `probe` returns (checked at every message), or rejects after `ms`. */
  until<T>(probe: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return this.waiters.until(probe, ms, what);
  }

  /** Home Assistant's birth message, as it sends it when it (re)starts. */
  birth(): Promise<void> {
    return this.transport.publish(`${this.prefix}/status`, 'online', { qos: 1 });
  }

  close(): Promise<void> {
    return this.transport.close(true);
  }
}

/** The entity keys a board announces, from what its report has. */
function expectedKeys(h: NodeHealth): string[] {
  return ['cpu', ...(h.temperature_c !== undefined ? ['temperature'] : []), 'memory', 'rate', 'p95', ...(h.throttle ? ['throttled'] : []), 'role'];
}

const render = (c: Record<string, any>, ha: FakeHomeAssistant) => renderTemplate(c.value_template as string, ha.payload(c.state_topic as string)!);
const availability = (c: Record<string, any>, ha: FakeHomeAssistant) => renderTemplate(c.availability[0].value_template as string, ha.payload(c.availability[0].topic as string)!);

/**
 * Every config as Home Assistant needs it, against the board's real report and status; resolves
 * with the configs by key.
 */
async function checkConfigs(ha: FakeHomeAssistant, mesh: string, node: string): Promise<Map<string, Record<string, any>>> {
  const healthTopic = topics.nodeHealth(mesh, node);
  const statusTopic = topics.nodeStatus(mesh, node);
  const report = await ha.until(() => ha.health(healthTopic), 10_000, `${node}'s health report`);
  const keys = expectedKeys(report);
  const configs = await ha.until(() => ha.configs().size >= keys.length && ha.configs(), 10_000, `${keys.length} configs`);
  assert.equal(configs.size, keys.length, [...configs.keys()].join(', '));
  const byKey = new Map<string, Record<string, any>>();
  const unique = new Set<string>();
  for (const [topic, c] of configs) {
    for (const k of ['name', 'unique_id', 'state_topic', 'value_template', 'availability', 'device', 'origin']) assert.ok(c[k] !== undefined, `${topic}: ${k}`);
    const [prefix, component, objectId, last] = topic.split('/');
    assert.deepEqual([prefix, last, objectId], [ha.prefix, 'config', c.unique_id]);
    assert.ok(component === 'sensor' || component === 'binary_sensor', component);
    unique.add(c.unique_id as string);
    const key = (c.unique_id as string).split('_').at(-1)!;
    byKey.set(key, c);
    assert.deepEqual(Object.keys(c.device).sort(), ['identifiers', 'manufacturer', 'model', 'name', 'sw_version']);
    assert.equal(c.device.name, node);
    const a = c.availability[0];
    assert.deepEqual([a.topic, a.payload_available, a.payload_not_available], [statusTopic, 'online', 'offline']);
    assert.ok([healthTopic, statusTopic].includes(c.state_topic), c.state_topic);
    assert.ok(ha.payload(c.state_topic) !== undefined, `a message on ${c.state_topic}`);
  }
  assert.equal(unique.size, configs.size, 'unique ids are unique');
  assert.deepEqual([...byKey.keys()].sort(), [...keys].sort());
  const fresh = await ha.until(() => ha.payload(statusTopic) && availability(byKey.get('cpu')!, ha) === 'online', 10_000, 'online');
  assert.ok(fresh);
  for (const [key, c] of byKey) {
    const value = render(c, ha);
    if (key === 'role') assert.ok(['broker', 'standby', 'agent', 'joining'].includes(value), value);
    else if (key === 'throttled') assert.ok(['ON', 'OFF'].includes(value), value);
    else if (key === 'p95') assert.ok(value === 'None' || Number(value) >= 0, value);
    else assert.ok(value !== '' && Number.isFinite(Number(value)), `${key}: ${JSON.stringify(value)}`);
    assert.equal(availability(c, ha), 'online');
  }
  return byKey;
}

describe('an agent process with --home-assistant, on its own mesh', () => {
  test('configs with HA\'s keys whose templates render the real report; requests show in rate and p95; HA\'s birth republishes; retained for a late HA; kill -9 makes it unavailable', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-'));
    let child: ChildProcess | undefined;
    const open: { close(): Promise<void> }[] = [];
    try {
      const started = await spawnAgent(['--node', 'ha-a', '--data-dir', dir, '--home-assistant', '--health-interval-s', '0.5', '--formation-ms', '0']);
      child = started.child;
      const url = `mqtt://127.0.0.1:${started.port}`;
      const states = [topics.nodeStatus('home', 'ha-a'), topics.nodeHealth('home', 'ha-a')];
      const ha = await FakeHomeAssistant.connect({ url }, 'homeassistant', states);
      open.push(ha);
      const byKey = await checkConfigs(ha, 'home', 'ha-a');
      assert.equal(render(byKey.get('role')!, ha), 'broker');
      assert.equal(byKey.get('cpu')!.expire_after, 2, 'three missed reports of 0.5 s');

      // Requests: the next reports' rate and p95 are figures, not None.
      const client = await KizunaClient.connect({ url, client: 'ha-test', timeoutMs: 20_000 });
      open.push(client);
      for (let i = 0; i < 12; i++) await client.infer('digits', tensorOf(i));
      const healthTopic = topics.nodeHealth('home', 'ha-a');
      await ha.until(() => (ha.health(healthTopic)?.inference.requests ?? 0) > 0, 10_000, 'a report with requests');
      assert.ok(Number(render(byKey.get('rate')!, ha)) > 0);
      const p95 = Number(render(byKey.get('p95')!, ha));
      assert.ok(p95 > 0 && p95 < 5000, String(p95));
      assert.equal(p95, Math.max(...ha.health(healthTopic)!.inference.models.map((m) => m.p95_ms ?? -1)));

      // Home Assistant (re)starts: its birth makes the board publish every config again.
      const t0 = performance.now();
      await ha.birth();
      const again = await ha.until(() => {
        const after = ha.seen.filter((m) => m.at > t0 && m.topic.endsWith('/config'));
        return new Set(after.map((m) => m.topic)).size === byKey.size && after;
      }, 10_000, 'every config again after the birth');
      for (const m of again) assert.deepEqual(JSON.parse(m.payload), ha.configs().get(m.topic));

      // A Home Assistant that connects later finds them retained.
      const late = await FakeHomeAssistant.connect({ url }, 'homeassistant', states);
      open.push(late);
      const retained = await late.until(() => late.seen.filter((m) => m.topic.endsWith('/config')).length >= byKey.size && late.seen, 10_000, 'the retained configs');
      assert.ok(retained.filter((m) => m.topic.endsWith('/config')).every((m) => m.retained));
      // Death is the next test's: this board hosts the broker, which dies with it (no will).
    } finally {
      for (const o of open.reverse()) await o.close().catch(() => undefined);
      child?.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('kill -9 of a board: its will marks every entity unavailable, its configs stay', async () => {
    const dirs = [fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-hub-')), fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-victim-'))];
    const children: ChildProcess[] = [];
    let ha: FakeHomeAssistant | undefined;
    try {
      const ports = await freePorts(2);
      const peer = (p: number) => ['--peers', `127.0.0.1:${p}`];
      children.push((await spawnAgent(['--port', String(ports[0]), '--node', 'hub', '--data-dir', dirs[0]!, '--formation-ms', '300', ...peer(ports[1]!)])).child);
      children.push((await spawnAgent(['--port', String(ports[1]), '--node', 'victim', '--data-dir', dirs[1]!, '--formation-ms', '300', '--home-assistant', '--health-interval-s', '0.5', '--eligible', 'false', ...peer(ports[0]!)])).child);
      const statusTopic = topics.nodeStatus('home', 'victim');
      ha = await FakeHomeAssistant.connect({ url: `mqtt://127.0.0.1:${ports[0]}` }, 'homeassistant', [statusTopic, topics.nodeHealth('home', 'victim')]);
      const byKey = await checkConfigs(ha, 'home', 'victim');
      assert.equal(render(byKey.get('role')!, ha), 'agent');
      children[1]!.kill('SIGKILL');
      await ha.until(() => availability(byKey.get('cpu')!, ha!) === 'offline', 10_000, 'victim unavailable');
      for (const c of byKey.values()) assert.equal(availability(c, ha), 'offline');
      assert.equal(ha.configs().size, byKey.size, 'the device stays in Home Assistant, unavailable');
    } finally {
      await ha?.close().catch(() => undefined);
      for (const c of children) c.kill('SIGKILL');
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    }
  });
});

test('a Raspberry Pi (thermal zone and firmware flags faked): temperature and throttling too, under another prefix', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-pi-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'thermal', 'thermal_zone0'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'thermal', 'thermal_zone0', 'temp'), '48500\n');
  const firmware = path.join(dir, 'get_throttled');
  fs.writeFileSync(firmware, '0\n');
  const system = new SystemProbe({ thermal: path.join(dir, 'thermal'), throttled: firmware, vcgencmd: null });
  const agent = await startAgent({ node: 'pi-ha', dataDir: dir, healthIntervalS: 0.2, homeAssistant: true, homeAssistantPrefix: 'ha' }, { system });
  t.after(() => agent.stop());
  const ha = await FakeHomeAssistant.connect({ url: agent.brokerUrl }, 'ha', [topics.nodeStatus('home', 'pi-ha'), topics.nodeHealth('home', 'pi-ha')]);
  t.after(() => ha.close());
  const byKey = await checkConfigs(ha, 'home', 'pi-ha');
  assert.equal(byKey.size, 7);
  assert.equal(render(byKey.get('temperature')!, ha), '48.5');
  assert.equal(render(byKey.get('throttled')!, ha), 'OFF');
  fs.writeFileSync(firmware, '0x50005\n');
  await ha.until(() => render(byKey.get('throttled')!, ha) === 'ON', 10_000, 'throttled ON');
});

test('an agent with homeAssistant and no health reports is refused at start', async () => {
  await assert.rejects(startAgent({ node: 'ha-none', homeAssistant: true, healthIntervalS: 0 }), /homeAssistant needs health reports/);
});

describe('a mesh with credentials', () => {
  test('the board announces under the access rules; Home Assistant, with an app token, reads the configs and states and sends its birth', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-creds-'));
    let child: ChildProcess | undefined;
    let ha: FakeHomeAssistant | undefined;
    try {
      const init = await runCli(['init', '--data-dir', root]);
      assert.equal(init.code, 0, init.stderr);
      const token = (await runCli(['token', 'app', 'home-assistant', '--data-dir', root])).stdout.trim().split('\n').at(-1)!;
      const ca = fs.readFileSync(path.join(root, 'mesh-home', 'ca.pem'), 'utf8');
      const [port] = await freePorts(1);
      const started = await spawnAgent(['--port', String(port), '--data-dir', root, '--formation-ms', '0', '--home-assistant', '--health-interval-s', '0.5']);
      child = started.child;
      const node = /agent (\S+) serving mesh/.exec(started.stderr())![1]!;
      ha = await FakeHomeAssistant.connect(
        { url: `mqtts://127.0.0.1:${port}`, username: 'home-assistant', password: token, tls: { ca, mesh: 'home' } },
        'homeassistant',
        [topics.nodeStatus('home', node), topics.nodeHealth('home', node)],
      );
      const byKey = await checkConfigs(ha, 'home', node);
      const t0 = performance.now();
      await ha.birth();
      await ha.until(() => new Set(ha!.seen.filter((m) => m.at > t0 && m.topic.endsWith('/config')).map((m) => m.topic)).size === byKey.size, 10_000, 'every config again');
      assert.doesNotMatch(started.stderr(), /refused/, 'no publish or subscription refused');
    } finally {
      await ha?.close().catch(() => undefined);
      child?.kill('SIGKILL');
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

const mosquitto = mosquittoPath();

test('on an external Mosquitto (where Home Assistant usually is): the same configs, the birth, the will', { skip: mosquitto ? false : 'mosquitto not installed: apt-get install mosquitto' }, async (t) => {
  const broker = await Mosquitto.start(mosquitto!);
  t.after(() => broker.stop());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-ha-mosq-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { child } = await spawnAgent(['--broker', broker.url, '--node', 'mq-a', '--data-dir', dir, '--home-assistant', '--health-interval-s', '0.5', '--keepalive-seconds', '1']);
  t.after(() => void child.kill('SIGKILL'));
  const ha = await FakeHomeAssistant.connect({ url: broker.url }, 'homeassistant', [topics.nodeStatus('home', 'mq-a'), topics.nodeHealth('home', 'mq-a')]);
  t.after(() => ha.close());
  const byKey = await checkConfigs(ha, 'home', 'mq-a');
  const t0 = performance.now();
  await ha.birth();
  await ha.until(() => new Set(ha.seen.filter((m) => m.at > t0 && m.topic.endsWith('/config')).map((m) => m.topic)).size === byKey.size, 10_000, 'every config again');
  child.kill('SIGKILL');
  await ha.until(() => availability(byKey.get('cpu')!, ha) === 'offline', 10_000, 'unavailable after kill -9');
});
