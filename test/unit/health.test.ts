/**
 * The health report's pure parts: the schema and codec, the Pi's throttling decoder, the kernel
 * parsers (/proc/stat, /proc/meminfo, thermal zones), percentiles and rates over an injected
 * clock, the worker tap in both listener orders, the reporter over a fake sysfs; and the status
 * fencing that keeps a stale will from marking a live board offline.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodeNodeHealth, healthProblems, isNodeHealth, parseNodeHealth, type NodeHealth } from '../../mesh/health.js';
import { supersedes, type NodeStatus } from '../../mesh/status.js';
import { parseNodeHealthTopic, topics } from '../../mesh/topics.js';
import type { Bus } from '../../mesh/bus.js';
import type { MessageHandler } from '../../mesh/mqtt.js';
import { cpuLoad, decodeThrottled, parseMeminfo, parseMilliCelsius, parseProcStat, parseThrottled } from '../../agent/health/probes.js';
import { InferenceMeter, LATENCY_SAMPLES, latencyPercentiles, periodTotals, ratePerSecond } from '../../agent/health/inference.js';
import { WorkerTap } from '../../agent/health/tap.js';
import { SystemProbe } from '../../agent/health/system.js';
import { HealthReporter, type HealthSource } from '../../agent/health.js';
import { createLogger } from '../../agent/log.js';

// ---------------------------------------------------------------- schema

function sampleHealth(): NodeHealth {
  return {
    v: 1, node: 'pi-a', instance: 'abc123', seq: 3, at: 1_795_900_000_000, interval_s: 10, period_s: 10.002,
    cpu: { total_pct: 31.4, cores_pct: [40.2, 22.6], load_avg: [1.2, 0.9, 0.7] },
    memory: { total_bytes: 8e9, available_bytes: 6e9, used_bytes: 2e9, agent_rss_bytes: 1.5e8 },
    temperature_c: 58.4,
    throttle: decodeThrottled(0x50005, 'sysfs'),
    disk: { path: '/home/pi/.kizuna', total_bytes: 3e10, free_bytes: 2e10 },
    uptime: { process_s: 12.5, host_s: 86_400 },
    inference: {
      requests: 240, rate_per_s: 24, errors: 1, errors_by_code: { KZ_ERR_IMAGE_CORRUPT: 1 },
      total_requests: 1000, total_errors: 4, total_errors_by_code: { KZ_ERR_IMAGE_CORRUPT: 4 },
      in_flight: 2, queue_depth: 1, concurrency: 1,
      models: [{ name: 'digits', requests: 240, rate_per_s: 24, p50_ms: 1.2, p95_ms: 3.4, errors: 1, total_requests: 1000, total_errors: 4 }],
      loaded: [{ name: 'digits', version: '1.0.0', resident: true }],
    },
    reporter_cpu_ms: 0.4,
  };
}

test('schema: a full report passes, encodes and parses back equal; optional figures may be absent', () => {
  const h = sampleHealth();
  assert.deepEqual(healthProblems(h), []);
  assert.deepEqual(parseNodeHealth(encodeNodeHealth(h)), h);
  const { temperature_c: _t, throttle: _th, disk: _d, ...bare } = h;
  assert.ok(isNodeHealth(bare), 'a board without thermal zone, firmware or statfs');
  assert.ok(isNodeHealth({ ...h, inference: { ...h.inference, models: [{ ...h.inference.models[0]!, p50_ms: null, p95_ms: null }] } }), 'null percentiles: no request in the period');
  assert.ok(isNodeHealth({ ...h, gpu: { busy: 3 } }), 'fields of a newer version are let through');
});

test('schema: wrong types, missing fields, out-of-range numbers, deep nesting and junk are refused', () => {
  const h = sampleHealth();
  const bad: [string, unknown][] = [
    ['v 2', { ...h, v: 2 }],
    ['no node', { ...h, node: undefined }],
    ['no inference', { ...h, inference: undefined }],
    ['load over 100%', { ...h, cpu: { ...h.cpu, total_pct: 140 } }],
    ['negative core', { ...h, cpu: { ...h.cpu, cores_pct: [-1] } }],
    ['fractional bytes', { ...h, memory: { ...h.memory, total_bytes: 1.5 } }],
    ['string rate', { ...h, inference: { ...h.inference, rate_per_s: '24' } }],
    ['negative percentile', { ...h, inference: { ...h.inference, models: [{ ...h.inference.models[0]!, p95_ms: -1 }] } }],
    ['unknown throttle source', { ...h, throttle: { ...h.throttle!, source: 'guess' } }],
    ['deep nesting', { ...h, extra: JSON.parse('['.repeat(40) + ']'.repeat(40)) }],
  ];
  for (const [why, value] of bad) {
    assert.equal(isNodeHealth(value), false, why);
    assert.equal(parseNodeHealth(Buffer.from(JSON.stringify(value))), undefined, why);
  }
  for (const junk of ['', 'not json', '[]', 'null', '{"v":1}']) assert.equal(parseNodeHealth(Buffer.from(junk)), undefined, junk);
  assert.equal(parseNodeHealth(Buffer.alloc((1 << 20) + 1, 0x20)), undefined, 'over 1 MiB');
});

test('topic: node/<node>/health, parsed back; a status topic is not a health topic', () => {
  assert.equal(topics.nodeHealth('home', 'pi-a'), 'kizuna/v1/home/node/pi-a/health');
  assert.equal(topics.allNodeHealth('home'), 'kizuna/v1/home/node/+/health');
  assert.equal(parseNodeHealthTopic('kizuna/v1/home/node/pi-a/health'), 'pi-a');
  assert.equal(parseNodeHealthTopic(topics.nodeStatus('home', 'pi-a')), undefined);
  assert.equal(parseNodeHealthTopic('kizuna/v1/home/node/pi a/health'), undefined);
});

// ---------------------------------------------------------------- throttling

test('throttling decoder: each documented bit, now and since boot', () => {
  const none = decodeThrottled(0, 'sysfs');
  assert.equal(none.now, false);
  for (const k of ['under_voltage', 'freq_capped', 'throttled', 'soft_temp_limit', 'under_voltage_ever', 'freq_capped_ever', 'throttled_ever', 'soft_temp_limit_ever'] as const) assert.equal(none[k], false, k);
  // 0x50005: under-voltage and throttled now, both also since boot (a Pi 4 on a weak supply).
  const weak = decodeThrottled(0x50005, 'vcgencmd');
  assert.deepEqual(
    { ...weak },
    { raw: 0x50005, source: 'vcgencmd', now: true, under_voltage: true, freq_capped: false, throttled: true, soft_temp_limit: false, under_voltage_ever: true, freq_capped_ever: false, throttled_ever: true, soft_temp_limit_ever: false },
  );
  // Only the sticky bits: it happened since boot, not now: not throttled now.
  const past = decodeThrottled(0xf0000, 'sysfs');
  assert.equal(past.now, false);
  assert.ok(past.under_voltage_ever && past.freq_capped_ever && past.throttled_ever && past.soft_temp_limit_ever);
  for (const [bit, key] of [[0, 'under_voltage'], [1, 'freq_capped'], [2, 'throttled'], [3, 'soft_temp_limit']] as const) {
    const d = decodeThrottled(1 << bit, 'sysfs');
    assert.ok(d[key] && d.now, `bit ${bit} is ${key}, and now`);
  }
  assert.equal(decodeThrottled(0x80008, 'sysfs').soft_temp_limit, true);
  assert.equal(decodeThrottled(0xfff0, 'sysfs').now, false, 'undocumented bits 4-15 say nothing');
});

test('throttling text: the sysfs file is bare hex, vcgencmd prints throttled=0x...; anything else is unknown', () => {
  assert.equal(parseThrottled('50005\n'), 0x50005);
  assert.equal(parseThrottled('0\n'), 0);
  assert.equal(parseThrottled('throttled=0x50005\n'), 0x50005);
  assert.equal(parseThrottled('throttled=0x0'), 0);
  assert.equal(parseThrottled('e0000'), 0xe0000);
  for (const junk of ['', 'error', 'throttled=', '0x', 'throttled=0x1ffffffff', '5 5']) assert.equal(parseThrottled(junk), undefined, junk);
});

// ---------------------------------------------------------------- kernel figures

const STAT_1 = `cpu  300 0 100 600 0 0 0 0 0 0
cpu0 100 0 50 350 0 0 0 0 0 0
cpu1 200 0 50 250 0 0 0 0 0 0
intr 12345
ctxt 999
`;
const STAT_2 = `cpu  500 0 200 700 10 0 0 0 0 0
cpu0 100 0 60 430 10 0 0 0 0 0
cpu1 400 0 140 270 0 0 0 0 0 0
`;

test('/proc/stat: per-core busy and total ticks (iowait is idle); load between two readings', () => {
  assert.deepEqual(parseProcStat(STAT_1), [{ busy: 150, total: 500 }, { busy: 250, total: 500 }]);
  const load = cpuLoad(parseProcStat(STAT_1), parseProcStat(STAT_2));
  // cpu0: 10 busy of 100; cpu1: 290 busy of 310; together 300 of 410.
  assert.deepEqual(load, { cores_pct: [10, 93.5], total_pct: 73.2 });
  assert.deepEqual(cpuLoad(parseProcStat(STAT_1), parseProcStat(STAT_1)), { cores_pct: [0, 0], total_pct: 0 }, 'no time passed: 0, not NaN');
  // A core went offline between the readings: only the cores in both count.
  assert.deepEqual(cpuLoad(parseProcStat(STAT_1), parseProcStat(STAT_2).slice(0, 1)).cores_pct, [10]);
  // Counters that went backwards (a wrapped or reset counter) never give a negative load.
  assert.deepEqual(cpuLoad(parseProcStat(STAT_2), parseProcStat(STAT_1)).total_pct, 0);
});

test('/proc/meminfo and thermal zones', () => {
  assert.deepEqual(parseMeminfo('MemTotal:        8000 kB\nMemFree:   100 kB\nMemAvailable:    6000 kB\n'), { total: 8000 * 1024, available: 6000 * 1024 });
  assert.equal(parseMeminfo('MemTotal: 8000 kB\nMemFree: 100 kB\n'), undefined, 'a kernel without MemAvailable');
  assert.equal(parseMilliCelsius('58432\n'), 58.4);
  assert.equal(parseMilliCelsius('-5000'), -5);
  assert.equal(parseMilliCelsius('N/A'), undefined);
  assert.equal(parseMilliCelsius(''), undefined);
});

// ---------------------------------------------------------------- inference figures

test('percentiles: nearest rank over the samples, null for none; the ring keeps the latest 4,096', () => {
  assert.deepEqual(latencyPercentiles([]), { p50_ms: null, p95_ms: null });
  assert.deepEqual(latencyPercentiles([7]), { p50_ms: 7, p95_ms: 7 });
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
  assert.deepEqual(latencyPercentiles(hundred), { p50_ms: 50, p95_ms: 95 });
  const m = new InferenceMeter();
  for (let i = 0; i < LATENCY_SAMPLES; i++) m.record('slow', { inputs: 1, latencyMs: 1000 });
  for (let i = 0; i < LATENCY_SAMPLES; i++) m.record('slow', { inputs: 1, latencyMs: 2 });
  const [slow] = m.take(1, []);
  assert.equal(slow!.requests, 2 * LATENCY_SAMPLES);
  assert.equal(slow!.p95_ms, 2, 'only the latest 4,096 latencies remain');
});

test('rates: answers over an injected period; a period ends at each take, totals go on', () => {
  assert.equal(ratePerSecond(30, 10), 3);
  assert.equal(ratePerSecond(1, 3), 0.333);
  assert.equal(ratePerSecond(5, 0), 0, 'an empty period: 0, not Infinity');
  const m = new InferenceMeter();
  for (let i = 1; i <= 20; i++) m.record('digits', { inputs: 1, latencyMs: i, ...(i === 20 ? { error: true } : {}) });
  m.record('digits', { inputs: 64 }); // a job's shard: inputs count, no latency
  const first = m.take(2, ['digits', 'digits-int8']);
  assert.deepEqual(first, [
    { name: 'digits', requests: 84, rate_per_s: 42, p50_ms: 10, p95_ms: 19, errors: 1, total_requests: 84, total_errors: 1 },
    { name: 'digits-int8', requests: 0, rate_per_s: 0, p50_ms: null, p95_ms: null, errors: 0, total_requests: 0, total_errors: 0 },
  ]);
  m.record('digits', { inputs: 1, latencyMs: 4 });
  const [second] = m.take(0.5, ['digits']);
  assert.deepEqual(second, { name: 'digits', requests: 1, rate_per_s: 2, p50_ms: 4, p95_ms: 4, errors: 0, total_requests: 85, total_errors: 1 });
  assert.deepEqual(m.take(1, []), [], 'a model no longer served and without traffic is left out');
});

test('node-wide totals from the worker counters: answers plus errors, per period and in total', () => {
  const a = { answered: 10, errors: { KZ_ERR_BAD_SHAPE: 1 } };
  const b = { answered: 25, errors: { KZ_ERR_BAD_SHAPE: 3, KZ_ERR_OVERLOADED: 2 } };
  assert.deepEqual(periodTotals(a, b, 5), {
    requests: 19, rate_per_s: 3.8, errors: 4, errors_by_code: { KZ_ERR_BAD_SHAPE: 2, KZ_ERR_OVERLOADED: 2 },
    total_requests: 30, total_errors: 5, total_errors_by_code: { KZ_ERR_BAD_SHAPE: 3, KZ_ERR_OVERLOADED: 2 },
  });
  assert.deepEqual(periodTotals(b, b, 5).errors_by_code, {}, 'no error in the period: an empty object');
});

// ---------------------------------------------------------------- the worker tap

class FakeBus implements Bus {
  private readonly handlers = new Set<MessageHandler>();
  async subscribe(): Promise<void> {}
  async unsubscribe(): Promise<void> {}
  async publish(): Promise<void> {}
  onMessage(h: MessageHandler): () => void {
    this.handlers.add(h);
    return () => this.handlers.delete(h);
  }
  deliver(topic: string): void {
    for (const h of this.handlers) h(topic, Buffer.alloc(0), false);
  }
}

/** A worker stand-in: on a task it emits 'accepted' (or a refusal's 'replied') at once, as agent/worker.ts does. */
function fakeWorker(bus: FakeBus, refuse = false) {
  const w = new EventEmitter();
  bus.onMessage((topic) => {
    const parts = topic.split('/');
    if (parts[4] !== 'pi-a') return;
    const key = parts[3] === 'task' ? `${parts[6]}/${parts[7]}` : `${parts[6]}/${parts[7]}/${parts[8]}/digest`;
    if (refuse) w.emit('replied', key, 'KZ_ERR_SHUTTING_DOWN');
    else w.emit('accepted', key);
  });
  return w;
}

for (const order of ['the tap listens first (as the agent wires it)', 'the worker listens first'] as const) {
  test(`worker tap, ${order}: model from the topic, latency from accepted to replied, shards by inputs, refusals as errors`, () => {
    const clock = { t: 1000 };
    const meter = new InferenceMeter();
    const bus = new FakeBus();
    const tap = new WorkerTap(meter, { mesh: 'home', node: () => 'pi-a', now: () => clock.t });
    let worker: EventEmitter;
    if (order === 'the worker listens first') {
      worker = fakeWorker(bus);
      tap.attach(bus, worker);
    } else {
      worker = new EventEmitter();
      tap.attach(bus, worker);
      const w = fakeWorker(bus);
      w.on('accepted', (k) => worker.emit('accepted', k));
    }
    bus.deliver(topics.task('home', 'pi-a', { model: 'digits', client: 'cam', id: '1' }));
    bus.deliver(topics.task('home', 'pi-a', { model: 'digits-int8', client: 'cam', id: '2' }));
    bus.deliver(topics.shard('home', 'pi-a', { model: 'digits', client: 'cam', job: 'j', start: 0, end: 16 }));
    bus.deliver(topics.task('home', 'pi-b', { model: 'digits', client: 'cam', id: '3' })); // another board's: ignored
    assert.equal(tap.size, 3);
    clock.t += 12;
    worker.emit('replied', 'cam/1');
    clock.t += 3;
    worker.emit('replied', 'cam/2', 'KZ_ERR_BAD_SHAPE');
    worker.emit('replied', 'cam/j/0-16/digest');
    assert.equal(tap.size, 0);
    const [digits, int8] = meter.take(1, []);
    assert.deepEqual(digits, { name: 'digits', requests: 17, rate_per_s: 17, p50_ms: 12, p95_ms: 12, errors: 0, total_requests: 17, total_errors: 0 });
    assert.deepEqual(int8, { name: 'digits-int8', requests: 1, rate_per_s: 1, p50_ms: 15, p95_ms: 15, errors: 1, total_requests: 1, total_errors: 1 });
    tap.detach();
  });
}

test('worker tap: a request refused before it is accepted (draining) counts as an error of its model, in either order', () => {
  for (const tapFirst of [true, false]) {
    const meter = new InferenceMeter();
    const bus = new FakeBus();
    const tap = new WorkerTap(meter, { mesh: 'home', node: () => 'pi-a', now: () => 0 });
    const worker = new EventEmitter();
    if (tapFirst) tap.attach(bus, worker);
    const w = fakeWorker(bus, true);
    w.on('replied', (k, code) => worker.emit('replied', k, code));
    if (!tapFirst) tap.attach(bus, worker);
    bus.deliver(topics.task('home', 'pi-a', { model: 'digits', client: 'cam', id: '9' }));
    const [m] = meter.take(1, []);
    assert.equal(m?.errors, 1, `tap first: ${tapFirst}`);
    assert.equal(m?.p50_ms, null);
  }
});

// ---------------------------------------------------------------- the reporter, on a fake board

function fakeBoard(throttled?: string): { dir: string; probe: SystemProbe } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-health-'));
  fs.writeFileSync(path.join(dir, 'stat'), STAT_1);
  fs.writeFileSync(path.join(dir, 'meminfo'), 'MemTotal: 4000000 kB\nMemAvailable: 3000000 kB\n');
  for (const [zone, milli] of [['thermal_zone0', '48200'], ['thermal_zone1', '61750']] as const) {
    fs.mkdirSync(path.join(dir, 'thermal', zone), { recursive: true });
    fs.writeFileSync(path.join(dir, 'thermal', zone, 'temp'), `${milli}\n`);
  }
  if (throttled !== undefined) fs.writeFileSync(path.join(dir, 'get_throttled'), throttled);
  const probe = new SystemProbe({
    procStat: path.join(dir, 'stat'), meminfo: path.join(dir, 'meminfo'), thermal: path.join(dir, 'thermal'),
    throttled: path.join(dir, 'get_throttled'), vcgencmd: null,
  });
  return { dir, probe };
}

function reporterOn(probe: SystemProbe, clock: { wall: number; mono: number }, counters = { answered: 0, errors: {} as Record<string, number> }) {
  const published: { topic: string; payload: Buffer }[] = [];
  const source: HealthSource = {
    node: () => 'pi-a', instance: 'i1', counters: () => counters, inFlight: () => 3, concurrency: 1,
    loaded: () => [{ name: 'digits', version: '1.0.0', resident: true }], dataDir: os.tmpdir(),
  };
  const reporter = new HealthReporter({
    mesh: 'home', intervalS: 10, source, log: createLogger('silent'), system: probe,
    clock: { wall: () => clock.wall, mono: () => clock.mono },
    publish: async (topic, payload) => void published.push({ topic, payload }),
  });
  return { reporter, published, counters };
}

test('reporter on a fake board: kernel figures, the hottest zone, throttling from sysfs, rates over the injected clock', async () => {
  const { dir, probe } = fakeBoard('50005\n');
  const clock = { wall: 1_795_900_000_000, mono: 5_000 };
  const { reporter, published, counters } = reporterOn(probe, clock);
  const changes: boolean[] = [];
  reporter.on('throttled', (now: boolean) => changes.push(now));
  fs.writeFileSync(path.join(dir, 'stat'), STAT_2);
  clock.mono += 4_000;
  clock.wall += 4_000;
  for (let i = 0; i < 8; i++) reporter.meter.record('digits', { inputs: 1, latencyMs: 5 });
  counters.answered = 7;
  counters.errors = { KZ_ERR_BAD_SHAPE: 1 };
  await reporter.reportNow();
  assert.equal(published.length, 1);
  assert.equal(published[0]!.topic, 'kizuna/v1/home/node/pi-a/health');
  const h = parseNodeHealth(published[0]!.payload)!;
  assert.ok(h, 'the payload is a valid report');
  assert.equal(h.period_s, 4);
  assert.equal(h.at, clock.wall);
  assert.deepEqual(h.cpu.cores_pct, [10, 93.5]);
  assert.equal(h.memory.total_bytes, 4_000_000 * 1024);
  assert.equal(h.memory.used_bytes, 1_000_000 * 1024);
  assert.equal(h.temperature_c, 61.8, 'the hottest thermal zone');
  assert.equal(h.throttle?.source, 'sysfs');
  assert.equal(h.throttle?.under_voltage, true);
  assert.equal(reporter.throttledNow, true);
  assert.deepEqual(changes, [true], 'the change is announced (the status should say it)');
  assert.deepEqual([h.inference.requests, h.inference.rate_per_s, h.inference.errors], [8, 2, 1]);
  assert.deepEqual([h.inference.in_flight, h.inference.queue_depth], [3, 2]);
  assert.deepEqual(h.inference.models[0], { name: 'digits', requests: 8, rate_per_s: 2, p50_ms: 5, p95_ms: 5, errors: 0, total_requests: 8, total_errors: 0 });
  assert.ok(h.reporter_cpu_ms >= 0);
  // The next period: no traffic, the board cooled down and the supply recovered (sticky bits stay).
  fs.writeFileSync(path.join(dir, 'get_throttled'), '50000\n');
  clock.mono += 10_000;
  await reporter.reportNow();
  const h2 = parseNodeHealth(published[1]!.payload)!;
  assert.deepEqual([h2.seq, h2.period_s, h2.inference.requests, h2.inference.rate_per_s, h2.inference.total_requests], [2, 10, 0, 0, 8]);
  assert.equal(h2.inference.models[0]!.p95_ms, null);
  assert.equal(h2.throttle?.now, false);
  assert.equal(h2.throttle?.under_voltage_ever, true);
  assert.deepEqual(changes, [true, false]);
  await reporter.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('reporter on a board without firmware or thermal zones: those figures are absent, not zero', async () => {
  const { dir, probe: _ } = fakeBoard();
  const probe = new SystemProbe({ procStat: path.join(dir, 'stat'), meminfo: path.join(dir, 'nothing'), thermal: path.join(dir, 'none'), throttled: path.join(dir, 'none'), vcgencmd: null });
  const { reporter } = reporterOn(probe, { wall: 0, mono: 0 });
  const h = reporter.build();
  assert.ok(isNodeHealth(h), healthProblems(h).join('; '));
  assert.equal('temperature_c' in h, false);
  assert.equal('throttle' in h, false);
  assert.equal(reporter.throttledNow, false);
  assert.ok(h.memory.total_bytes > 0, 'memory from os.totalmem() without /proc/meminfo');
  await reporter.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('vcgencmd when the sysfs file is absent: run in the background, its answer in the next report; a missing command is not run again', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kz-vcgencmd-'));
  const script = path.join(dir, 'vcgencmd');
  const calls = path.join(dir, 'calls');
  fs.writeFileSync(script, `#!/bin/sh\necho x >> ${calls}\necho "throttled=0x80008"\n`, { mode: 0o755 });
  const probe = new SystemProbe({ throttled: path.join(dir, 'none'), vcgencmd: script });
  assert.equal(probe.throttle(), undefined, 'the first reading is not there yet');
  await waitFor(() => probe.throttle()?.source === 'vcgencmd');
  const t = probe.throttle()!;
  assert.deepEqual([t.soft_temp_limit, t.soft_temp_limit_ever, t.now], [true, true, true]);
  const missing = new SystemProbe({ throttled: path.join(dir, 'none'), vcgencmd: path.join(dir, 'no-such-command') });
  assert.equal(missing.throttle(), undefined);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(missing.throttle(), undefined, 'not a Pi: absent');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Polls a cheap condition that a child process makes true (bounded). */
async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---------------------------------------------------------------- birth and death fencing

const status = (over: Partial<NodeStatus>): NodeStatus => ({ v: 1, node: 'pi-a', instance: 'old', started: 1000, seq: 1, online: true, ...over });

test('fencing: a will never marks a live board offline when it is stale (older connection, older process)', () => {
  const birth = status({ seq: 3 });
  assert.equal(supersedes(birth, status({ seq: 3, online: false })), true, 'the will of this very connection: dead');
  assert.equal(supersedes(birth, status({ seq: 2, online: false })), false, 'the will of an older connection: ignored');
  const restarted = status({ instance: 'new', started: 5000, seq: 1 });
  assert.equal(supersedes(birth, restarted), true, 'a new process\'s birth replaces the old one');
  assert.equal(supersedes(restarted, status({ seq: 3, online: false })), false, 'the old process\'s will, arriving late: ignored');
  assert.equal(supersedes(restarted, status({ instance: 'new', started: 5000, seq: 1, online: false })), true, 'the new process dies: offline');
  // A Pi without a real-time clock restarts with its clock behind: its birth still counts.
  assert.equal(supersedes(birth, status({ instance: 'rtc', started: 10, seq: 1 })), true);
});

// ---------------------------------------------------------------- the status view (kizuna status, top)

test('status view: boards from statuses and reports, online first by role; an older report never replaces a newer one', async () => {
  const { MeshBoards, ago, renderTable } = await import('../../agent/commands/status.js');
  const { renderFrame } = await import('../../agent/commands/top.js');
  const view = new MeshBoards();
  const put = (topic: string, value: unknown) => view.accept(topic, Buffer.from(JSON.stringify(value)));
  put(topics.nodeStatus('home', 'zeta'), status({ node: 'zeta', role: 'broker', addresses: ['10.0.0.9'], port: 1883, models: [] }));
  put(topics.nodeStatus('home', 'alpha'), status({ node: 'alpha', role: 'agent', instance: 'a1' }));
  put(topics.nodeStatus('home', 'beta'), status({ node: 'beta', role: 'standby', instance: 'b1', online: false }));
  const h = { ...sampleHealth(), node: 'zeta', instance: 'old', seq: 5, at: 10_000 };
  assert.equal(put(topics.nodeHealth('home', 'zeta'), h), true);
  assert.equal(put(topics.nodeHealth('home', 'zeta'), { ...h, seq: 4, at: 9000 }), false, 'a late report of the same process');
  assert.equal(put(topics.nodeHealth('home', 'zeta'), { ...h, node: 'other' }), false, 'a report under another board\'s topic');
  assert.equal(put(topics.nodeHealth('home', 'zeta'), { v: 1 }), false, 'not a report');
  const rows = view.rows(12_500);
  assert.deepEqual(rows.map((r) => [r.node, r.role, r.online]), [['zeta', 'broker', true], ['alpha', 'agent', true], ['beta', 'standby', false]]);
  assert.deepEqual(
    { load: rows[0]!.load_pct, p95: rows[0]!.p95_ms, rate: rows[0]!.rate_per_s, mem: rows[0]!.memory_used_pct, ago: rows[0]!.last_seen_ago_ms, thr: rows[0]!.throttled, address: rows[0]!.address },
    { load: 31.4, p95: 3.4, rate: 24, mem: 25, ago: 2500, thr: true, address: '10.0.0.9:1883' },
  );
  assert.equal(rows[1]!.load_pct, null, 'no report yet');
  const text = renderTable(rows);
  assert.match(text, /^zeta\s+broker\s+yes\s+10\.0\.0\.9:1883\s+-\s+31\.4\s+58\.4C THR\s+25\.0\s+150\s+24\.0\s+3\.40\s+2\.5s ago$/m);
  assert.match(text, /^beta\s+standby\s+NO\s/m);
  assert.match(renderFrame('home', rows, 0), /^kizuna top - mesh home - 3 boards, 2 online - 24\.0 req\/s - 00:00:00 UTC/);
  assert.equal(renderTable([]).startsWith('no boards'), true);
  assert.deepEqual([ago(400), ago(12_400), ago(600_000), ago(3 * 86_400_000)], ['0.4s', '12s', '10m', '3d']);
  const json = view.json('home', 12_500);
  assert.equal(json.boards[0]!.health?.seq, 5);
  assert.equal(json.boards[1]!.health, null);
});
