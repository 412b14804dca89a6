/**
 * `kizuna demo` (what `npm start` runs): a mesh of agents (3 by default) in this process, on
 * loopback only, with the built-in digit models; held-out MNIST digits rendered to PNG go through
 * MQTT like a camera's frames would. Prints latency and accuracy (one request at a time, and
 * `window` in flight), then the same digits as one shared job (`client.batch`) with each board's
 * share. The last line is one JSON object. With --dashboard, board-1 also serves the web dashboard
 * (loopback, a free port) and the mesh stays up after the run until Ctrl-C.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KizunaClient } from '../../mesh/client.js';
import { KizunaError } from '../../mesh/errors.js';
import type { BatchProgress } from '../../mesh/batch.js';
import { digitToPng } from '../../models/render.js';
import { r2, summarize, table } from '../stats.js';
import { startDemoMesh } from './demo-mesh.js';

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;
const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const top = (r: { answers?: unknown[] }): number => (r.answers?.[0] as { index: number }).index;

interface ModelRun {
  model: string;
  accuracy: number;
  throughput: number;
  latency: ReturnType<typeof summarize>;
}

interface SharedJob {
  accuracy: number;
  throughput: number;
  seconds: number;
  share: Record<string, number>;
  failed: number;
}

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  const n = Number(raw ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new KizunaError('KZ_ERR_CONFIG', `--${name} must be a whole number of at least 1, got ${raw}`);
  return n;
}

/** At most a few progress lines: one rewritten line on a terminal, else one line a second. */
function progressPrinter(): { onProgress: (p: BatchProgress) => void; end: () => void } {
  const tty = process.stderr.isTTY;
  let last = performance.now();
  let lastDone = -1;
  let shown = false;
  const line = (p: BatchProgress) =>
    `shared job: ${p.done}/${p.total} done, ${p.rate.toFixed(0)}/s, ` + Object.entries(p.byAgent).sort().map(([n, c]) => `${n} ${c}`).join(', ');
  return {
    onProgress: (p) => {
      const now = performance.now();
      if (p.done === lastDone || (p.done < p.total && now - last < (tty ? 100 : 1000))) return;
      [last, lastDone] = [now, p.done];
      shown = true;
      process.stderr.write(tty ? `\r${line(p)}\x1b[K` : `${line(p)}\n`);
    },
    end: () => {
      if (tty && shown) process.stderr.write('\r\x1b[K');
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { count: { type: 'string' }, window: { type: 'string' }, agents: { type: 'string' }, dashboard: { type: 'boolean' } } });
  // With --dashboard the mesh stays up after the run, for the page to be looked at, until Ctrl-C.
  let keep = values.dashboard === true;
  const count = positiveInt('count', values.count, 2000);
  const window = positiveInt('window', values.window, 16);
  const n = positiveInt('agents', values.agents, 3);
  const { loadDigits } = await import('../../models/builtin/digits-data.js');
  const digits = loadDigits().heldOut.slice(0, count);
  const pngs = await Promise.all(digits.map((d) => digitToPng(d.pixels)));
  console.log(`Kizuna demo: ${digits.length} held-out MNIST digits as PNG, through MQTT, to a mesh of ${n} agent${n > 1 ? 's' : ''} in this process, on loopback\n`);

  // Loopback only, static peers: the demo never listens on or talks to the machine's real interfaces.
  const mesh = await startDemoMesh(n, 'digits', { dashboard: keep });
  const roles = Object.fromEntries(mesh.agents.map((a) => [a.node, a.mesh.role]));
  console.log(`mesh formed in ${(mesh.formedMs / 1000).toFixed(1)} s: ${Object.entries(roles).map(([node, role]) => `${node} (${role})`).join(', ')}\n`);
  if (mesh.dashboardUrl) console.log(`dashboard: ${mesh.dashboardUrl}  (open it in a browser; the mesh stays up after the run until Ctrl-C)\n`);
  let client: KizunaClient | undefined;
  const runs: ModelRun[] = [];
  let job: SharedJob;
  try {
    client = await KizunaClient.connect({ url: mesh.urls, mesh: mesh.name, client: 'demo' });
    for (const model of ['digits', 'digits-int8']) {
      // Warm-up (JIT, first session runs on every board), then latency with one request in flight
      // at a time, then throughput with `window` in flight.
      for (const png of pngs.slice(0, 50)) await client.infer(model, png);
      const latencies: number[] = [];
      for (const png of pngs.slice(0, Math.min(300, pngs.length))) {
        const t0 = performance.now();
        await client.infer(model, png);
        latencies.push(performance.now() - t0);
      }
      let correct = 0;
      let next = 0;
      const t0 = performance.now();
      const lane = async () => {
        while (next < pngs.length) {
          const i = next++;
          if (top(await client!.infer(model, pngs[i]!)) === digits[i]!.label) correct++;
        }
      };
      await Promise.all(Array.from({ length: window }, lane));
      const seconds = (performance.now() - t0) / 1000;
      runs.push({ model, accuracy: correct / pngs.length, throughput: pngs.length / seconds, latency: summarize(latencies) });
    }

    // The shared job: every digit once, spread over the boards by the mesh, results in order.
    const progress = progressPrinter();
    const share: Record<string, number> = Object.fromEntries(mesh.agents.map((a) => [a.node, 0]));
    let correct = 0;
    let failed = 0;
    const t0 = performance.now();
    try {
      for await (const item of client.batch('digits', pngs.map((png) => () => png), { onProgress: progress.onProgress })) {
        if (!item.result) {
          failed++;
          continue;
        }
        share[item.result.agent] = (share[item.result.agent] ?? 0) + 1;
        if (top(item.result) === digits[item.index]!.label) correct++;
      }
    } finally {
      progress.end();
    }
    const seconds = (performance.now() - t0) / 1000;
    job = { accuracy: correct / pngs.length, throughput: pngs.length / seconds, seconds, share, failed };
  } catch (err) {
    keep = false;
    throw err;
  } finally {
    await client?.close();
    if (!keep) await mesh.stop();
  }

  console.log(
    table(
      ['model', 'digits', 'accuracy', 'req/s', 'p50 ms', 'p95 ms', 'p99 ms'],
      runs.map((r) => [r.model, pngs.length, pct(r.accuracy), r.throughput.toFixed(0), r2(r.latency.p50), r2(r.latency.p95), r2(r.latency.p99)]),
    ),
  );
  console.log(`\nlatency: one request at a time, PNG in, answer out, round trip through the mesh's broker; req/s: ${window} in flight.\n`);
  console.log(
    table(
      ['board', 'role', 'digits', 'share'],
      Object.entries(job.share).map(([node, c]) => [node, roles[node] ?? '?', c, `${((c / pngs.length) * 100).toFixed(1)}%`]),
    ),
  );
  console.log(
    `\nshared job (client.batch): ${pngs.length} digits in ${job.seconds.toFixed(2)} s, ${job.throughput.toFixed(0)} req/s, ` +
      `accuracy ${pct(job.accuracy)}${job.failed ? `, ${job.failed} failed` : ''}. The boards share this machine's cores.`,
  );
  const sample = path.join(os.tmpdir(), `kizuna-digit-${digits[0]!.label}.png`);
  await fs.writeFile(sample, pngs[0]!);
  console.log(`try it yourself: npx kizuna agent   and in another terminal:   npx kizuna infer digits ${sample}\n`);
  const [fp32, int8] = runs as [ModelRun, ModelRun];
  console.log(
    JSON.stringify({
      model: fp32.model,
      count: pngs.length,
      accuracy: round4(fp32.accuracy),
      throughput_per_s: Math.round(fp32.throughput),
      p50_ms: r2(fp32.latency.p50),
      p95_ms: r2(fp32.latency.p95),
      int8_accuracy: round4(int8.accuracy),
      int8_throughput_per_s: Math.round(int8.throughput),
      int8_p50_ms: r2(int8.latency.p50),
      int8_p95_ms: r2(int8.latency.p95),
      agents: n,
      share: job.share,
      batch_accuracy: round4(job.accuracy),
      batch_throughput_per_s: Math.round(job.throughput),
    }),
  );
  if (keep) {
    // stderr: stdout's last line stays the JSON.
    console.error(`the mesh is still up: ${mesh.dashboardUrl}   Ctrl-C stops it`);
    await interrupted();
    await mesh.stop();
  }
  return job.failed ? 1 : 0;
}

/** Resolves at the first SIGINT or SIGTERM. */
function interrupted(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
