/**
 * The Prometheus exposition writer (agent/metrics/exposition.ts): values (NaN, infinities,
 * exponents), escaping of label values and help texts, HELP and TYPE lines, histograms; read
 * back by a real Prometheus text parser. And an agent's families from made-up figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeHelp, escapeLabelValue, formatValue, histogram, writeExposition, type Family } from '../../agent/metrics/exposition.js';
import { agentFamilies, MESH_ROLES, type AgentFigures } from '../../agent/metrics/families.js';
import { InferenceMeter, LATENCY_BUCKETS_MS } from '../../agent/health/inference.js';
import { family, goFloat, metric, parseExposition, value } from '../helpers/prometheus.js';

test('values as Go\'s ParseFloat reads them: NaN, +Inf, -Inf, integers, fractions, exponents', () => {
  assert.equal(formatValue(NaN), 'NaN');
  assert.equal(formatValue(Infinity), '+Inf');
  assert.equal(formatValue(-Infinity), '-Inf');
  assert.equal(formatValue(0), '0');
  assert.equal(formatValue(-0), '0');
  assert.equal(formatValue(42), '42');
  assert.equal(formatValue(-1.5), '-1.5');
  assert.equal(formatValue(1e-7), '1e-7');
  assert.equal(formatValue(2.5e21), '2.5e+21');
  assert.equal(formatValue(Number.MAX_SAFE_INTEGER + 2), '9007199254740992');
  const text = writeExposition([{ name: 'v', help: 'values', type: 'gauge', samples: [NaN, Infinity, -Infinity, 1e-7, 2.5e21, 0.1 + 0.2].map((x, i) => ({ labels: { i: String(i) }, value: x })) }]);
  const parsed = parseExposition(text);
  assert.deepEqual(family(parsed, 'v').metrics.map((m) => goFloat(m.value)), [NaN, Infinity, -Infinity, 1e-7, 2.5e21, 0.30000000000000004]);
});

test('escaping: label values (backslash, quote, newline) and help (backslash, newline), read back unchanged', () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assert.equal(escapeHelp('a\\b"c\nd'), 'a\\\\b"c\\nd');
  const nasty = ['C:\\DIR\\FILE.TXT', 'say "hi"', 'two\nlines', 'ünïcödé ✓', '}{,=', ' ', ''];
  const text = writeExposition([{ name: 'nasty_total', help: 'back\\slash and\nnewline "quoted"', type: 'counter', samples: nasty.map((v, i) => ({ labels: { v, i: String(i) }, value: i })) }], { node: 'pi"a' });
  assert.match(text, /^# HELP nasty_total back\\\\slash and\\nnewline "quoted"\n# TYPE nasty_total counter\n/);
  const parsed = parseExposition(text);
  const f = family(parsed, 'nasty_total');
  assert.equal(f.help, 'back\\slash and\nnewline "quoted"');
  assert.equal(f.type, 'COUNTER');
  assert.deepEqual(f.metrics.map((m) => m.labels!.v), nasty);
  assert.ok(f.metrics.every((m) => m.labels!.node === 'pi"a'), 'common labels on every sample');
  assert.match(text.split('\n')[2]!, /^nasty_total\{node="pi\\"a",v=/, 'common labels first');
});

test('HELP and TYPE once per family, before its samples; families without samples left out; bad names refused', () => {
  const text = writeExposition([
    { name: 'a_total', help: 'A.', type: 'counter', samples: [{ value: 1 }, { labels: { code: 'X' }, value: 2 }] },
    { name: 'empty', help: 'nothing yet', type: 'gauge', samples: [] },
    { name: 'b', help: 'B.', type: 'gauge', samples: [{ value: 3 }] },
  ]);
  assert.equal(text, '# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total{code="X"} 2\n# HELP b B.\n# TYPE b gauge\nb 3\n');
  assert.equal(writeExposition([]), '');
  const bad = (f: Partial<Family>) => () => writeExposition([{ name: 'x', help: '', type: 'gauge', samples: [{ value: 1 }], ...f }]);
  assert.throws(bad({ name: '1x' }), /bad metric name/);
  assert.throws(bad({ name: 'a-b' }), /bad metric name/);
  assert.throws(bad({ samples: [{ labels: { 'a-b': 'x' }, value: 1 }] }), /bad label name/);
  assert.throws(bad({ samples: [{ labels: { __name__: 'x' }, value: 1 }] }), /bad label name/);
  assert.throws(bad({ samples: [{ suffix: '_sum', value: 1 }] }), /_sum in a gauge/);
  assert.throws(() => writeExposition([{ name: 'x', help: '', type: 'gauge', samples: [] }, { name: 'x', help: '', type: 'gauge', samples: [] }]), /twice/);
});

test('histograms: cumulative buckets, +Inf equal to the count, _sum and _count', () => {
  const f = histogram('lat_seconds', 'Latency.', [
    { labels: { model: 'a' }, buckets: [[0.001, 1], [0.01, 3], [0.1, 3]], sum: 0.05, count: 4 },
    { labels: { model: 'b' }, buckets: [[0.001, 0], [0.01, 0], [0.1, 0]], sum: 0, count: 0 },
  ]);
  const parsed = parseExposition(writeExposition([f]));
  const a = metric(parsed, 'lat_seconds', { model: 'a' });
  assert.deepEqual(a.buckets, { '0.001': '1', '0.01': '3', '0.1': '3', '+Inf': '4' });
  assert.deepEqual([a.sum, a.count], ['0.05', '4']);
  assert.equal(family(parsed, 'lat_seconds').type, 'HISTOGRAM');
  assert.throws(() => histogram('h', '', [{ labels: {}, buckets: [[1, 2], [2, 1]], sum: 0, count: 2 }]), /cumulative/);
});

function figures(over: Partial<AgentFigures> = {}): AgentFigures {
  const meter = new InferenceMeter();
  for (const ms of [0.5, 3, 3, 40, 20_000]) meter.record('digits', { inputs: 1, latencyMs: ms });
  meter.record('digits', { inputs: 1, latencyMs: 7, error: true });
  meter.record('digits', { inputs: 8 }); // a shard of a job: no latency
  return {
    instance: 'abc', version: '0.1.0', models: meter.totalsByModel(),
    worker: { received: 14, answered: 12, errors: { KZ_ERR_BAD_SHAPE: 1, KZ_ERR_OVERLOADED: 2 }, duplicates: 1, shards: 1 },
    inFlight: 3, concurrency: 1,
    served: [{ name: 'digits', version: '1.0.0', resident: true }, { name: 'big', version: '2.0.0', resident: false }],
    role: 'standby', term: 4, boardsOnline: 2, boardsKnown: 3,
    process: { rssBytes: 1e8, heapUsedBytes: 2e7, cpuSeconds: 1.25, startTimeSeconds: 1795900000.5, uptimeSeconds: 60 },
    ...over,
  };
}

test('an agent\'s families: per model from the meter (served models too, at zero), errors by code, mesh role one-hot, no board figures before a report', () => {
  const parsed = parseExposition(writeExposition(agentFamilies(figures()), { mesh: 'home', node: 'pi-a' }));
  assert.equal(value(parsed, 'kizuna_inference_requests_total', { model: 'digits' }), 14);
  assert.equal(value(parsed, 'kizuna_inference_requests_total', { model: 'big' }), 0);
  assert.equal(value(parsed, 'kizuna_inference_errors_total', { model: 'digits' }), 1);
  const lat = metric(parsed, 'kizuna_inference_latency_seconds', { model: 'digits' });
  assert.equal(Number(lat.count), 6);
  assert.ok(Math.abs(Number(lat.sum) - 20.0535) < 1e-9, lat.sum);
  assert.equal(Object.keys(lat.buckets!).length, LATENCY_BUCKETS_MS.length + 1);
  assert.deepEqual([lat.buckets!['0.001'], lat.buckets!['0.005'], lat.buckets!['0.01'], lat.buckets!['0.05'], lat.buckets!['10'], lat.buckets!['+Inf']], ['1', '3', '4', '5', '5', '6']);
  assert.equal(value(parsed, 'kizuna_errors_total', { code: 'KZ_ERR_OVERLOADED' }), 2);
  assert.equal(value(parsed, 'kizuna_queue_depth'), 2);
  assert.deepEqual(MESH_ROLES.map((role) => value(parsed, 'kizuna_mesh_role', { role })), [0, 1, 0, 0]);
  assert.deepEqual([value(parsed, 'kizuna_model_resident', { model: 'digits' }), value(parsed, 'kizuna_model_resident', { model: 'big', version: '2.0.0' })], [1, 0]);
  assert.equal(value(parsed, 'process_start_time_seconds'), 1795900000.5);
  assert.ok(parsed.every((f) => f.metrics.every((m) => m.labels?.mesh === 'home' && m.labels?.node === 'pi-a')));
  assert.ok(!parsed.some((f) => f.name.startsWith('kizuna_board_')), 'no report yet');
  for (const f of parsed) assert.equal(f.type, f.name.endsWith('_total') ? 'COUNTER' : f.name.endsWith('_seconds') && f.name.includes('latency') ? 'HISTOGRAM' : 'GAUGE', f.name);
});
