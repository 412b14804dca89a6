/**
 * `kizuna demo` (what `npm start` runs): an agent on loopback with its embedded broker and the
 * built-in digit models; held-out MNIST digits rendered to PNG go through MQTT like a camera's
 * frames would. Prints accuracy, throughput and latency; the last line is one JSON object.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Agent } from '../agent.js';
import { loadConfig } from '../config.js';
import { KizunaClient } from '../../mesh/client.js';
import { digitToPng } from '../../models/render.js';
import { r2, summarize, table } from '../stats.js';

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;

interface ModelRun {
  model: string;
  accuracy: number;
  throughput: number;
  latency: ReturnType<typeof summarize>;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { count: { type: 'string' }, window: { type: 'string' } } });
  const count = Number(values.count ?? 2000);
  const window = Number(values.window ?? 16);
  const { loadDigits } = await import('../../models/builtin/digits-data.js');
  const digits = loadDigits().heldOut.slice(0, count);
  const pngs = await Promise.all(digits.map((d) => digitToPng(d.pixels)));
  console.log(`Kizuna demo: ${digits.length} held-out MNIST digits as PNG, through MQTT, to one agent on loopback\n`);

  // Loopback only: the demo never listens on or talks to the machine's real interfaces.
  const agent = await Agent.create(loadConfig({ overrides: { host: '127.0.0.1', port: 0, node: 'demo', logLevel: 'warn' } }));
  await agent.start();
  const client = await KizunaClient.connect({ url: agent.brokerUrl, client: 'demo' });
  const runs: ModelRun[] = [];
  try {
    for (const model of ['digits', 'digits-int8']) {
      // Warm-up (JIT, first session runs), then latency with one request in flight at a time,
      // then throughput with `window` in flight.
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
          const r = await client.infer(model, pngs[i]!);
          if ((r.answers?.[0] as { index: number }).index === digits[i]!.label) correct++;
        }
      };
      await Promise.all(Array.from({ length: window }, lane));
      const seconds = (performance.now() - t0) / 1000;
      runs.push({ model, accuracy: correct / pngs.length, throughput: pngs.length / seconds, latency: summarize(latencies) });
    }
  } finally {
    await client.close();
    await agent.stop();
  }
  console.log(
    table(
      ['model', 'digits', 'accuracy', 'req/s', 'p50 ms', 'p95 ms', 'p99 ms'],
      runs.map((r) => [r.model, pngs.length, `${(r.accuracy * 100).toFixed(2)}%`, r.throughput.toFixed(0), r2(r.latency.p50), r2(r.latency.p95), r2(r.latency.p99)]),
    ),
  );
  console.log(`\nlatency: one request at a time, PNG in, answer out, round trip through the broker; req/s: ${window} in flight.`);
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
    }),
  );
  return 0;
}
