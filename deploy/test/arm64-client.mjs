// The app side of npm run test:arm64: runs on the host's Node, with the (pure JavaScript) client
// of the arm64 bundle, against the agent that runs as arm64 code under qemu-user.
//   node arm64-client.mjs APP_DIR PNG PORT STARTED_AT_MS COUNT
// Prints one JSON line: time to the first answer, round trips and the agent's own timings.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [appDir, pngFile, portArg, startedArg, countArg] = process.argv.slice(2);
const port = Number(portArg);
const started = Number(startedArg);
const count = Number(countArg ?? 20);
const { KizunaClient } = await import(pathToFileURL(path.join(appDir, 'dist/mesh/client.js')).href);
const png = fs.readFileSync(pngFile);
const deadline = started + 180_000;

const canConnect = () => new Promise((resolve) => {
  const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
  s.on('error', () => resolve(false));
});
while (!(await canConnect())) {
  if (Date.now() > deadline) throw new Error('the agent never listened');
  await new Promise((r) => setTimeout(r, 100));
}
const listeningMs = Date.now() - started;

// The first answer: the agent has formed its (one-board) mesh and loaded the model.
const client = await KizunaClient.connect({ url: `mqtt://127.0.0.1:${port}`, mesh: 'home', timeoutMs: 60_000 });
let first;
for (;;) {
  try {
    first = await client.infer('digits', png);
    break;
  } catch (err) {
    if (Date.now() > deadline) throw err;
    await new Promise((r) => setTimeout(r, 200));
  }
}
const firstAnswerMs = Date.now() - started;
const label = (r) => r.answers?.[0]?.label;
const rows = [];
for (let i = 0; i < count; i++) {
  const t0 = performance.now();
  const r = await client.infer('digits', png);
  rows.push({ rtt: performance.now() - t0, infer: r.timings.infer_ms, pre: r.timings.pre_ms, total: r.timings.total_ms, label: label(r), agent: r.agent });
}
await client.close();
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return +s[Math.floor(s.length / 2)].toFixed(2); };
const p95 = (xs) => { const s = [...xs].sort((a, b) => a - b); return +s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)].toFixed(2); };
console.log(JSON.stringify({
  listening_ms: listeningMs,
  first_answer_ms: firstAnswerMs,
  first_label: label(first),
  first_infer_ms: +first.timings.infer_ms.toFixed(2),
  count,
  labels_ok: rows.every((r) => r.label === '7'),
  rtt_p50_ms: med(rows.map((r) => r.rtt)),
  rtt_p95_ms: p95(rows.map((r) => r.rtt)),
  agent_infer_p50_ms: med(rows.map((r) => r.infer)),
  agent_pre_p50_ms: med(rows.map((r) => r.pre)),
  agent_total_p50_ms: med(rows.map((r) => r.total)),
  agent: rows[0]?.agent,
}));
