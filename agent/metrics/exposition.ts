/**
 * Prometheus text exposition format 0.0.4: metric families as `# HELP`, `# TYPE` and sample lines.
 * Pure; names and label names are checked (a bad one is a bug here, so it throws), label values
 * and help texts escaped as the format says (`\\`, `"` and newline in label values; `\\` and
 * newline in help), and values written as Go's ParseFloat reads them (`NaN`, `+Inf`, `-Inf`).
 */

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  /** Appended to the family's name: `_bucket`, `_sum`, `_count` (histograms and summaries). */
  suffix?: '' | '_bucket' | '_sum' | '_count';
  labels?: Labels;
  value: number;
}

export interface Family {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A sample value as the format writes it. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (!entries.length) return '';
  for (const [k] of entries) if (!LABEL_NAME.test(k) || k.startsWith('__')) throw new Error(`bad label name ${JSON.stringify(k)}`);
  return `{${entries.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

/**
 * The exposition of `families` (those without samples left out), each sample with `common`
 * labels first (a board's `mesh` and `node`, say). Ends with a newline.
 */
export function writeExposition(families: readonly Family[], common: Labels = {}): string {
  const names = new Set<string>();
  const out: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw new Error(`bad metric name ${JSON.stringify(f.name)}`);
    if (names.has(f.name)) throw new Error(`metric family ${f.name} twice`);
    names.add(f.name);
    if (!f.samples.length) continue;
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      if (s.suffix && f.type !== 'histogram' && f.type !== 'summary') throw new Error(`${f.name}: ${s.suffix} in a ${f.type}`);
      if (s.suffix === '_bucket' && s.labels?.le === undefined) throw new Error(`${f.name}_bucket without le`);
      out.push(`${f.name}${s.suffix ?? ''}${labelText({ ...common, ...s.labels })} ${formatValue(s.value)}`);
    }
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/** One series of a histogram: cumulative counts at each upper bound (ascending), sum and count. */
export interface HistogramSeries {
  labels: Labels;
  /** [upper bound, observations <= it]; +Inf is added (the count). */
  buckets: readonly (readonly [number, number])[];
  sum: number;
  count: number;
}

/** A histogram family from its series. */
export function histogram(name: string, help: string, series: readonly HistogramSeries[]): Family {
  const samples: Sample[] = [];
  for (const s of series) {
    let last = 0;
    for (const [le, n] of s.buckets) {
      if (n < last || n > s.count) throw new Error(`${name}: buckets must be cumulative`);
      last = n;
      samples.push({ suffix: '_bucket', labels: { ...s.labels, le: formatValue(le) }, value: n });
    }
    samples.push({ suffix: '_bucket', labels: { ...s.labels, le: '+Inf' }, value: s.count });
    samples.push({ suffix: '_sum', labels: s.labels, value: s.sum });
    samples.push({ suffix: '_count', labels: s.labels, value: s.count });
  }
  return { name, help, type: 'histogram', samples };
}
