/**
 * Home Assistant discovery, without a broker: the configs a board publishes (HA's required keys,
 * unique ids, topics), their templates rendered against health reports and statuses (by the
 * test's Jinja subset, itself checked against Python's Jinja2 where installed), and when the
 * announcer publishes (first report, a change of figures, Home Assistant's birth, retraction).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { isNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { topics } from '../../mesh/topics.js';
import { AVAILABILITY_TEMPLATE, discoveryMessages, ENTITIES, expireAfter, type DiscoveryInput } from '../../agent/home-assistant/discovery.js';
import { deviceId, haSafe, uniqueId } from '../../agent/home-assistant/ids.js';
import { HomeAssistantDiscovery, type DiscoveryMqtt } from '../../agent/home-assistant.js';
import { createLogger } from '../../agent/log.js';
import { renderTemplate } from '../helpers/jinja.js';

/** A report as a busy Pi sends it (the example of docs/OPERATIONS.md). */
function piReport(over: Partial<NodeHealth> = {}): NodeHealth {
  const h: NodeHealth = {
    v: 1, node: 'pi-a-3f1c', instance: '3f9a0c1d2e4b', seq: 42, at: 1795900420000, interval_s: 10, period_s: 10.001,
    cpu: { total_pct: 31.4, cores_pct: [40.2, 22.1, 35, 28.3], load_avg: [1.21, 0.98, 0.7] },
    memory: { total_bytes: 8245166080, available_bytes: 6912573440, used_bytes: 1332592640, agent_rss_bytes: 148701184 },
    temperature_c: 58.4,
    throttle: { raw: 327680, source: 'sysfs', now: false, under_voltage: false, freq_capped: false, throttled: false, soft_temp_limit: false, under_voltage_ever: true, freq_capped_ever: false, throttled_ever: true, soft_temp_limit_ever: false },
    uptime: { process_s: 4200.5, host_s: 86400.2 },
    inference: {
      requests: 240, rate_per_s: 24, errors: 1, errors_by_code: { KZ_ERR_IMAGE_CORRUPT: 1 }, total_requests: 10210, total_errors: 7, total_errors_by_code: { KZ_ERR_IMAGE_CORRUPT: 5 },
      in_flight: 2, queue_depth: 1, concurrency: 1,
      models: [
        { name: 'mobilenetv2-int8', requests: 240, rate_per_s: 24, p50_ms: 38.2, p95_ms: 61.9, errors: 1, total_requests: 10150, total_errors: 5 },
        { name: 'digits', requests: 0, rate_per_s: 0, p50_ms: null, p95_ms: null, errors: 0, total_requests: 60, total_errors: 2 },
      ],
      loaded: [{ name: 'digits', version: '1.0.0', resident: false }],
    },
    reporter_cpu_ms: 0.41,
    ...over,
  };
  assert.ok(isNodeHealth(h));
  return h;
}

/** An x86 machine: no thermal zone, no Pi firmware; nothing answered in the period. */
function plainReport(): NodeHealth {
  const { temperature_c: _t, throttle: _th, ...rest } = piReport();
  const h = { ...rest, inference: { ...rest.inference, requests: 0, rate_per_s: 0, models: rest.inference.models.map((m) => ({ ...m, requests: 0, rate_per_s: 0, p50_ms: null, p95_ms: null })) } };
  assert.ok(isNodeHealth(h));
  return h;
}

const input = (health: NodeHealth, over: Partial<DiscoveryInput> = {}): DiscoveryInput => ({
  mesh: 'home', node: 'pi-a-3f1c', prefix: 'homeassistant', intervalS: 10, device: { model: 'Raspberry Pi 4 Model B Rev 1.4', swVersion: '0.1.0' }, health, ...over,
});

const status = (online: boolean, role = 'broker') => JSON.stringify({ v: 1, node: 'pi-a-3f1c', online, role, term: 3 });

test('every config has what Home Assistant requires: topic, unique id, state topic, availability, device', () => {
  const msgs = discoveryMessages(input(piReport()));
  assert.deepEqual(msgs.map((m) => m.key), ['cpu', 'temperature', 'memory', 'rate', 'p95', 'throttled', 'role']);
  const ids = new Set<string>();
  for (const m of msgs) {
    const c = m.config as Record<string, any>;
    assert.equal(m.topic, `homeassistant/${m.component}/kizuna_home_pi-a-3f1c_${m.key}/config`);
    assert.equal(c.unique_id, `kizuna_home_pi-a-3f1c_${m.key}`);
    ids.add(c.unique_id);
    for (const k of ['name', 'unique_id', 'state_topic', 'value_template', 'availability', 'device']) assert.ok(c[k] !== undefined, `${m.key}: ${k}`);
    assert.equal(c.state_topic, m.key === 'role' ? topics.nodeStatus('home', 'pi-a-3f1c') : topics.nodeHealth('home', 'pi-a-3f1c'));
    assert.equal(c.expire_after, m.key === 'role' ? undefined : 30, 'three missed reports');
    assert.deepEqual(c.availability, [{ topic: topics.nodeStatus('home', 'pi-a-3f1c'), value_template: AVAILABILITY_TEMPLATE, payload_available: 'online', payload_not_available: 'offline' }]);
    assert.deepEqual(c.device, { identifiers: ['kizuna_home_pi-a-3f1c'], name: 'pi-a-3f1c', model: 'Raspberry Pi 4 Model B Rev 1.4', manufacturer: 'Kizuna', sw_version: '0.1.0' });
    if (m.component === 'sensor' && m.key !== 'role') assert.equal(c.state_class, 'measurement');
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(c)));
  }
  assert.equal(ids.size, msgs.length);
  const by = (k: string) => msgs.find((m) => m.key === k)!.config as Record<string, unknown>;
  assert.deepEqual([by('temperature').device_class, by('temperature').unit_of_measurement], ['temperature', '°C']);
  assert.deepEqual([by('p95').device_class, by('p95').unit_of_measurement], ['duration', 'ms']);
  assert.deepEqual([by('cpu').unit_of_measurement, by('memory').unit_of_measurement, by('rate').unit_of_measurement], ['%', '%', 'req/s']);
  assert.deepEqual(by('role').options, ['broker', 'standby', 'agent', 'joining']);
  assert.equal(by('throttled').device_class, 'problem');
});

test('the templates render the report\'s figures; availability follows the status\'s online', () => {
  const msgs = discoveryMessages(input(piReport()));
  const render = (k: string, payload: string) => renderTemplate((msgs.find((m) => m.key === k)!.config as { value_template: string }).value_template, payload);
  const pi = JSON.stringify(piReport());
  assert.equal(render('cpu', pi), '31.4');
  assert.equal(render('temperature', pi), '58.4');
  assert.equal(render('memory', pi), '16.2', '1332592640 / 8245166080');
  assert.equal(render('rate', pi), '24');
  assert.equal(render('p95', pi), '61.9', 'the slowest model that answered');
  assert.equal(render('throttled', pi), 'OFF');
  assert.equal(render('throttled', JSON.stringify(piReport({ throttle: { ...piReport().throttle!, now: true, throttled: true } }))), 'ON');
  assert.equal(render('role', status(true, 'standby')), 'standby');
  // Nothing answered in the period: None, which Home Assistant shows as unknown.
  assert.equal(render('p95', JSON.stringify(plainReport())), 'None');
  assert.equal(renderTemplate(AVAILABILITY_TEMPLATE, status(true)), 'online');
  assert.equal(renderTemplate(AVAILABILITY_TEMPLATE, status(false)), 'offline');
});

test('a board announces only what it can measure: no thermal zone, no temperature; no Pi firmware, no throttling', () => {
  const keys = discoveryMessages(input(plainReport())).map((m) => m.key);
  assert.deepEqual(keys, ['cpu', 'memory', 'rate', 'p95', 'role']);
  assert.equal(ENTITIES.length, 7);
});

test('ids: another prefix, mesh and odd node ids; expire_after', () => {
  const msgs = discoveryMessages(input(piReport(), { prefix: 'ha', mesh: 'lab_2', node: 'pi.kitchen:1' }));
  assert.equal(msgs[0]!.topic, 'ha/sensor/kizuna_lab__2_pi_dkitchen_c1_cpu/config');
  assert.equal(uniqueId('lab_2', 'pi.kitchen:1', 'cpu'), 'kizuna_lab__2_pi_dkitchen_c1_cpu');
  assert.equal(deviceId('home', 'pi_a'), 'kizuna_home_pi__a');
  assert.notEqual(haSafe('pi.a'), haSafe('pi_a'));
  assert.throws(() => uniqueId('home', 'a', 'no_underscores'));
  assert.deepEqual([expireAfter(10), expireAfter(0.5), expireAfter(0.2), expireAfter(3600)], [30, 2, 1, 10800]);
});

/** Python's Jinja2 (Home Assistant's template engine), when installed. */
function jinja2(cases: { template: string; payload: string }[]): string[] | undefined {
  const script = [
    'import json, sys',
    'from jinja2.sandbox import ImmutableSandboxedEnvironment',
    'env = ImmutableSandboxedEnvironment()',
    'out = []',
    'for c in json.load(sys.stdin):',
    '    try:',
    '        vj = json.loads(c["payload"])',
    '    except ValueError:',
    '        vj = None',
    '    try:',
    '        out.append(env.from_string(c["template"]).render(value=c["payload"], value_json=vj))',
    '    except Exception as e:',
    '        out.append("error: " + str(e))',
    'print(json.dumps(out))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(cases), encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return undefined;
  return JSON.parse(r.stdout) as string[];
}

const hasJinja2 = spawnSync('python3', ['-c', 'import jinja2'], { timeout: 20_000 }).status === 0;

test('the test\'s Jinja subset renders every template as Python\'s Jinja2 does', { skip: hasJinja2 ? false : 'python3 with jinja2 not installed (apt-get install python3-jinja2)' }, () => {
  const reports = [piReport(), plainReport(), piReport({ cpu: { total_pct: 100, cores_pct: [100], load_avg: [4, 3, 2] }, temperature_c: -5 })];
  const payloads = [...reports.map((h) => JSON.stringify(h)), status(true, 'agent'), status(false, 'joining')];
  const templates = [...new Set([...discoveryMessages(input(piReport())).map((m) => (m.config as { value_template: string }).value_template), AVAILABILITY_TEMPLATE])];
  // Extra expressions of the subset, so the evaluator is checked beyond today's templates.
  templates.push(
    '{{ value_json.memory.used_bytes / 3 }}',
    '{{ (7 / 2) | round }}',
    "{{ value_json.inference.models | map(attribute='p50_ms') | select('number') | min | default('none') }}",
    "{{ value_json.inference.models | map(attribute='nope') | reject('number') | max | default(1) }}",
    '{{ value_json.nope | default(0) }}',
    '{{ -value_json.cpu.total_pct * 2 }}',
    '{{ value_json.inference.models[0].name }}',
  );
  const cases = templates.flatMap((template) => payloads.map((payload) => ({ template, payload })));
  const theirs = jinja2(cases)!;
  assert.ok(theirs, 'python3 ran');
  cases.forEach((c, i) => {
    let ours: string;
    try {
      ours = renderTemplate(c.template, c.payload);
    } catch (err) {
      // Jinja2 fails the same templates: an undefined used, as on a status payload.
      ours = `error: ${(err as Error).message}`;
    }
    const their = theirs[i]!;
    const same = ours === their || (ours.startsWith('error: ') && their.startsWith('error: ')) || (ours !== '' && their !== '' && Number.isFinite(Number(ours)) && Math.abs(Number(ours) - Number(their)) < 1e-9);
    assert.ok(same, `${c.template} on ${c.payload.slice(0, 60)}: ours ${JSON.stringify(ours)}, Jinja2 ${JSON.stringify(their)}`);
  });
});

/** A fake MQTT connection: what was published, and a way to deliver a message. */
class FakeMqtt implements DiscoveryMqtt {
  readonly published: { topic: string; payload: string; retain: boolean }[] = [];
  readonly subscribed: string[] = [];
  private handler?: (topic: string, payload: Buffer) => void;
  async publish(topic: string, payload: string, o: { retain?: boolean }): Promise<void> {
    this.published.push({ topic, payload, retain: o.retain === true });
  }
  async subscribe(topic: string): Promise<void> {
    this.subscribed.push(topic);
  }
  async unsubscribe(): Promise<void> {}
  onMessage(handler: (topic: string, payload: Buffer) => void): () => void {
    this.handler = handler;
    return () => (this.handler = undefined);
  }
  deliver(topic: string, payload: string): void {
    this.handler?.(topic, Buffer.from(payload));
  }
}

test('the announcer: at the first report, when the figures change (retracting what is gone), on Home Assistant\'s birth, after a reconnection; never after stop', async () => {
  const mqtt = new FakeMqtt();
  const reports = new EventEmitter();
  const ha = new HomeAssistantDiscovery({ mesh: 'home', node: 'pi-a-3f1c', prefix: 'homeassistant', intervalS: 10, mqtt, reports, device: { model: 'test', swVersion: '0' }, log: createLogger('silent') });
  const announced: string[] = [];
  ha.on('announced', (e: { reason: string }) => announced.push(e.reason));
  const settled = () => new Promise((r) => setImmediate(r));
  await ha.start();
  assert.deepEqual(mqtt.subscribed, ['homeassistant/status']);
  mqtt.deliver('homeassistant/status', 'online');
  await settled();
  assert.equal(mqtt.published.length, 0, 'nothing to announce before the first report');

  reports.emit('report', plainReport());
  await settled();
  assert.equal(mqtt.published.length, 5);
  assert.ok(mqtt.published.every((p) => p.retain && JSON.parse(p.payload).unique_id));
  reports.emit('report', plainReport());
  await settled();
  assert.equal(mqtt.published.length, 5, 'the same figures: nothing again');

  // A thermal zone appears (a driver loaded): the new entity, and the rest again.
  reports.emit('report', { ...plainReport(), temperature_c: 40 });
  await settled();
  assert.equal(mqtt.published.length, 11);
  // It goes: its config is cleared (an empty retained message removes the entity).
  reports.emit('report', plainReport());
  await settled();
  const cleared = mqtt.published.slice(11).filter((p) => p.payload === '');
  assert.deepEqual(cleared.map((p) => [p.topic, p.retain]), [['homeassistant/sensor/kizuna_home_pi-a-3f1c_temperature/config', true]]);

  const before = mqtt.published.length;
  mqtt.deliver('homeassistant/status', 'offline');
  mqtt.deliver('homeassistant/other', 'online');
  await settled();
  assert.equal(mqtt.published.length, before, 'only the birth counts');
  mqtt.deliver('homeassistant/status', 'online');
  await settled();
  assert.equal(mqtt.published.length, before + 5);
  ha.reconnected();
  await settled();
  assert.equal(mqtt.published.length, before + 10);
  assert.deepEqual(announced, ['first-report', 'figures-changed', 'figures-changed', 'home-assistant-online', 'reconnected']);

  await ha.stop();
  mqtt.deliver('homeassistant/status', 'online');
  reports.emit('report', piReport());
  ha.reconnected();
  await settled();
  assert.equal(mqtt.published.length, before + 10);
});
