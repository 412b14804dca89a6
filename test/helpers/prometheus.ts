/**
 * Reading a Prometheus text exposition as Prometheus would: the npm package
 * parse-prometheus-text-format (a port of prom2json and of the Python client's parser) for the
 * families, plus the checks it leaves out: valid names, every value a float Go's ParseFloat
 * reads, one HELP and one TYPE per family before its samples, counters named `_total`,
 * histograms' buckets cumulative with `+Inf` equal to the count.
 *
 * The package folds a histogram's series into one when they have labels (it keeps the buckets of
 * the last series and drops _sum and _count): histograms are read again with their TYPE as
 * untyped, so the package still parses every line, and their series are grouped here by their
 * labels less `le`.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

export interface PromMetric {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  quantiles?: Record<string, string>;
  count?: string;
  sum?: string;
}

export interface PromFamily {
  name: string;
  help: string;
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
  metrics: PromMetric[];
}

export const parsePrometheusText = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => PromFamily[];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const FLOAT = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;

/** Parses `text` and checks it as strictly as Prometheus's own parser does. */
export function parseExposition(text: string): PromFamily[] {
  assert.ok(text.endsWith('\n'), 'ends with a newline');
  const meta = new Map<string, { help: number; type: number }>();
  let current = '';
  for (const line of text.split('\n').slice(0, -1)) {
    const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (m) {
      const [, kind, name, rest] = m as unknown as [string, 'HELP' | 'TYPE', string, string];
      assert.match(name, NAME);
      const seen = meta.get(name) ?? { help: 0, type: 0 };
      if (kind === 'HELP') seen.help++;
      else {
        seen.type++;
        assert.match(rest, /^(counter|gauge|histogram|summary|untyped)$/, line);
        if (rest === 'counter') assert.match(name, /_total$/, `counter ${name}`);
      }
      meta.set(name, seen);
      current = name;
      continue;
    }
    assert.ok(!line.startsWith('#'), `only HELP and TYPE comments: ${line}`);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    assert.ok(sample, `a sample line: ${line}`);
    const [, name, , value] = sample;
    assert.ok(name === current || ['_bucket', '_sum', '_count'].some((s) => name === current + s), `${name} under the TYPE of ${current}`);
    assert.match(value!, FLOAT, line);
  }
  for (const [name, seen] of meta) assert.deepEqual(seen, { help: 1, type: 1 }, `${name}: one HELP and one TYPE`);
  const families = parsePrometheusText(text);
  assert.equal(new Set(families.map((f) => f.name)).size, families.length, 'each family once');
  const histograms = families.filter((f) => f.type === 'HISTOGRAM');
  if (histograms.length) {
    const untyped = parsePrometheusText(text.replace(/^# TYPE (\S+) histogram$/gm, '# TYPE $1 untyped'));
    for (const h of histograms) h.metrics = histogramSeries(untyped, h.name);
  }
  for (const f of families.filter((x) => x.type === 'HISTOGRAM')) {
    for (const m of f.metrics) {
      const buckets = Object.entries(m.buckets ?? {}).map(([le, n]) => [goFloat(le), Number(n)] as const).sort((a, b) => a[0] - b[0]);
      assert.equal(buckets.at(-1)?.[0], Infinity, `${f.name} has a +Inf bucket`);
      buckets.forEach(([, n], i) => assert.ok(i === 0 || n >= buckets[i - 1]![1], `${f.name}: cumulative buckets`));
      assert.equal(buckets.at(-1)![1], Number(m.count), `${f.name}: +Inf equals the count`);
    }
  }
  return families;
}

/** A histogram's series from its `_bucket`, `_sum` and `_count` lines, by their labels less `le`. */
function histogramSeries(untyped: PromFamily[], name: string): PromMetric[] {
  const series = new Map<string, PromMetric>();
  const of = (labels: Record<string, string> = {}) => {
    const { le: _le, ...rest } = labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let m = series.get(key);
    if (!m) series.set(key, (m = { ...(Object.keys(rest).length ? { labels: rest } : {}), buckets: {} }));
    return m;
  };
  // Untyped, each run of lines of one name is a family of its own: a name comes back once per series.
  const lines = (n: string) => untyped.filter((f) => f.name === n).flatMap((f) => f.metrics);
  for (const m of lines(`${name}_bucket`)) {
    assert.ok(m.labels?.le !== undefined, `${name}_bucket without le`);
    of(m.labels).buckets![m.labels.le] = m.value!;
  }
  for (const m of lines(`${name}_sum`)) of(m.labels).sum = m.value!;
  for (const m of lines(`${name}_count`)) of(m.labels).count = m.value!;
  return [...series.values()];
}

export function family(families: PromFamily[], name: string): PromFamily {
  const f = families.find((x) => x.name === name);
  assert.ok(f, `family ${name}`);
  return f;
}

/** The one metric of `name` whose labels include `labels`. */
export function metric(families: PromFamily[], name: string, labels: Record<string, string> = {}): PromMetric {
  const found = family(families, name).metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} series`);
  return found[0]!;
}

/** A value as Go's ParseFloat reads it (`+Inf`, `-Inf`, `NaN` too). */
export function goFloat(text: string | undefined): number {
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

export function value(families: PromFamily[], name: string, labels: Record<string, string> = {}): number {
  return goFloat(metric(families, name, labels).value);
}
