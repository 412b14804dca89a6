/**
 * The Prometheus endpoint of real agent processes (`--metrics-port 0`, the chosen port read from
 * the log): GET /metrics in the text format 0.0.4, parsed by a real Prometheus text parser
 * (test/helpers/prometheus.ts): the families, their types and labels, counters and the latency
 * histogram rising with requests and errors, the mesh as each board sees it; HEAD, 404 and 405.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KizunaClient } from '../../mesh/client.js';
import { KizunaError } from '../../mesh/errors.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { spawnAgent } from '../helpers/cli.js';
import { freePorts } from '../helpers/ports.js';
import { family, metric, parseExposition, value, type PromFamily } from '../helpers/prometheus.js';

const digits = loadDigits().heldOut.slice(0, 16);
const tensorOf = (i: number) => ({ input: { dtype: 'float32' as const, shape: [1, 1, 28, 28], data: digits[i % digits.length]!.pixels } });

async function scrape(url: string): Promise<{ families: PromFamily[]; contentType: string | null; text: string }> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  const text = await res.text();
  return { families: parseExposition(text), contentType: res.headers.get('content-type'), text };
}

/** Scrapes until `probe` holds (the figures are read at each scrape), bounded. */
async function scrapeUntil(url: string, probe: (f: PromFamily[]) => boolean, what: string, ms = 10_000): Promise<PromFamily[]> {
  const deadline = performance.now() + ms;
  for (;;) {
    const { families } = await scrape(url);
    if (probe(families)) return families;
    if (performance.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('two agent processes with --metrics-port 0', () => {
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  const urls: Record<string, string> = {};
  let meshUrl: string;

  before(async () => {
    const ports = await freePorts(2);
    for (const [i, node] of ['m-a', 'm-b'].entries()) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kz-metrics-${node}-`));
      dirs.push(dir);
      const peer = `127.0.0.1:${ports[1 - i]}`;
      const started = await spawnAgent(['--port', String(ports[i]), '--node', node, '--data-dir', dir, '--peers', peer, '--formation-ms', '300', '--metrics-port', '0', '--health-interval-s', '0.5', ...(i ? ['--eligible', 'false'] : [])]);
      children.push(started.child);
      // The port it chose, from its log (as a dashboard's).
      urls[node] = /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(started.stderr())![1]!;
    }
    meshUrl = `mqtt://127.0.0.1:${ports[0]}`;
  });
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('the families, their types and labels; every sample names the board', async () => {
    const { families, contentType } = await scrape(urls['m-a']!);
    assert.equal(contentType, 'text/plain; version=0.0.4; charset=utf-8');
    const types: Record<string, PromFamily['type']> = {
      kizuna_info: 'GAUGE', kizuna_inference_requests_total: 'COUNTER', kizuna_inference_errors_total: 'COUNTER', kizuna_inference_latency_seconds: 'HISTOGRAM',
      kizuna_requests_received_total: 'COUNTER', kizuna_results_total: 'COUNTER', kizuna_in_flight: 'GAUGE', kizuna_queue_depth: 'GAUGE', kizuna_concurrency: 'GAUGE',
      kizuna_model_resident: 'GAUGE', kizuna_mesh_role: 'GAUGE', kizuna_mesh_term: 'GAUGE', kizuna_mesh_boards_online: 'GAUGE', kizuna_mesh_boards: 'GAUGE',
      process_resident_memory_bytes: 'GAUGE', process_cpu_seconds_total: 'COUNTER', process_start_time_seconds: 'GAUGE', process_uptime_seconds: 'GAUGE',
    };
    for (const [name, type] of Object.entries(types)) {
      const f = family(families, name);
      assert.equal(f.type, type, name);
      assert.ok(f.help.length > 10, `${name} has help`);
    }
    for (const f of families) for (const m of f.metrics) assert.deepEqual([m.labels?.mesh, m.labels?.node], ['home', 'm-a'], f.name);
    for (const model of ['digits', 'digits-int8']) {
      assert.ok(value(families, 'kizuna_inference_requests_total', { model }) >= 0);
      assert.equal(value(families, 'kizuna_model_resident', { model, version: '1.0.0' }), 1);
      assert.equal(Object.keys(metric(families, 'kizuna_inference_latency_seconds', { model }).buckets!).length, 14);
    }
    assert.ok(value(families, 'process_resident_memory_bytes') > 10e6);
    assert.ok(Math.abs(value(families, 'process_start_time_seconds') - Date.now() / 1000) < 600);
    assert.equal(value(families, 'kizuna_concurrency'), 1);
  });

  test('the mesh as each board sees it: roles, term, boards online', async () => {
    const a = await scrapeUntil(urls['m-a']!, (f) => value(f, 'kizuna_mesh_boards_online') === 2, 'two boards online at m-a');
    const b = await scrapeUntil(urls['m-b']!, (f) => value(f, 'kizuna_mesh_boards_online') === 2 && value(f, 'kizuna_mesh_role', { role: 'agent' }) === 1, 'm-b an agent seeing two boards');
    assert.equal(value(a, 'kizuna_mesh_role', { role: 'broker' }), 1);
    assert.deepEqual(['standby', 'agent', 'joining'].map((role) => value(a, 'kizuna_mesh_role', { role })), [0, 0, 0]);
    assert.equal(value(a, 'kizuna_mesh_term'), value(b, 'kizuna_mesh_term'));
    assert.ok(value(a, 'kizuna_mesh_term') >= 1);
    assert.notEqual(metric(a, 'kizuna_info').labels!.instance, metric(b, 'kizuna_info').labels!.instance);
  });

  test('counters and the latency histogram rise with requests and errors; board figures once a report is out', async () => {
    const url = urls['m-a']!;
    const before = (await scrape(url)).families;
    const beforeB = (await scrape(urls['m-b']!)).families;
    const client = await KizunaClient.connect({ url: meshUrl, client: 'metrics-test', timeoutMs: 20_000 });
    const answeredBy = { 'm-a': 0, 'm-b': 0 } as Record<string, number>;
    try {
      for (let i = 0; i < 20; i++) answeredBy[(await client.infer('digits', tensorOf(i))).agent]!++;
      const bad = await client.infer('digits', { input: { dtype: 'float32', shape: [1, 10], data: new Float32Array(10) } }).catch((e: unknown) => e);
      assert.ok(bad instanceof KizunaError && bad.code === 'KZ_ERR_BAD_SHAPE');
    } finally {
      await client.close();
    }
    // Each board counts what it answered: the two together make 21 (the refusal is one of them).
    const rose = (f: PromFamily[], b: PromFamily[]) => value(f, 'kizuna_inference_requests_total', { model: 'digits' }) - value(b, 'kizuna_inference_requests_total', { model: 'digits' });
    const scraped: Record<string, PromFamily[]> = {};
    scraped['m-b'] = await scrapeUntil(urls['m-b']!, (f) => rose(f, beforeB) >= answeredBy['m-b']!, `m-b's ${answeredBy['m-b']} answers`);
    scraped['m-a'] = await scrapeUntil(url, (f) => rose(f, before) + rose(scraped['m-b']!, beforeB) >= 21, '21 answers in all');
    scraped['m-b'] = (await scrape(urls['m-b']!)).families;
    assert.equal(rose(scraped['m-a']!, before) + rose(scraped['m-b']!, beforeB), 21, '20 results and one refusal, counted once, by the board that answered');
    // A family with no series yet (no error at all on that board) is left out of the exposition.
    const refusedAt = ['m-a', 'm-b'].find((n) => scraped[n]!.find((f) => f.name === 'kizuna_errors_total')?.metrics.some((m) => m.labels?.code === 'KZ_ERR_BAD_SHAPE'))!;
    assert.ok(refusedAt, 'one board counts the KZ_ERR_BAD_SHAPE');
    assert.equal(value(scraped[refusedAt]!, 'kizuna_errors_total', { code: 'KZ_ERR_BAD_SHAPE' }), 1);
    assert.equal(value(scraped[refusedAt]!, 'kizuna_inference_errors_total', { model: 'digits' }), 1);

    const busiest = answeredBy['m-a']! >= answeredBy['m-b']! ? 'm-a' : 'm-b';
    const h = metric(scraped[busiest]!, 'kizuna_inference_latency_seconds', { model: 'digits' });
    const b0 = metric(busiest === 'm-a' ? before : beforeB, 'kizuna_inference_latency_seconds', { model: 'digits' });
    assert.ok(Number(h.count) - Number(b0.count) >= answeredBy[busiest]!, 'one latency per single request');
    assert.ok(Number(h.sum) > Number(b0.sum) && Number(h.sum) / Number(h.count) < 5, `mean ${Number(h.sum) / Number(h.count)} s`);
    assert.ok(value(scraped[busiest]!, 'kizuna_results_total') >= answeredBy[busiest]!);
    assert.ok(value(scraped[busiest]!, 'process_cpu_seconds_total') >= value(busiest === 'm-a' ? before : beforeB, 'process_cpu_seconds_total'));

    // The board figures come from its latest health report (every 0.5 s here).
    const withReport = await scrapeUntil(url, (f) => f.some((x) => x.name === 'kizuna_board_cpu_busy_percent'), 'a health report');
    assert.ok(value(withReport, 'kizuna_board_memory_total_bytes') >= value(withReport, 'kizuna_board_memory_available_bytes'));
    assert.ok(Math.abs(value(withReport, 'kizuna_health_report_timestamp_seconds') - Date.now() / 1000) < 60);
  });

  test('HEAD gives the headers; other paths 404, other methods 405', async () => {
    const url = urls['m-a']!;
    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal((await head.text()).length, 0);
    assert.equal((await fetch(url.replace('/metrics', '/'))).status, 404);
    assert.equal((await fetch(`${url}x`)).status, 404);
    const post = await fetch(url, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal((await fetch(`${url}?name[]=x`)).status, 200, 'a query string is ignored');
  });
});
