/** `kizuna infer MODEL FILE`: one inference through the mesh, printed for a person or as JSON. */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { appLogin, LOGIN_HELP, LOGIN_OPTIONS } from './app-login.js';
import { answerLines } from './answers.js';
import { KizunaClient, type InferResult } from '../../mesh/client.js';
import { sniffImage } from '../../mesh/image.js';

const HELP = `usage: kizuna infer MODEL FILE [options]

FILE is an image (JPEG, PNG, WebP...) sent as raw bytes, a request in JSON (.json) or KZB1
(see docs/PROTOCOL.md), or - for standard input.

  --broker URL     any agent of the mesh, or its broker (default mqtt://127.0.0.1:1883, or $KIZUNA_URL)
  --mesh NAME      mesh name (default home, or $KIZUNA_MESH)
  --top-k N        classes to return (images are then sent as base64 JSON)
  --timeout MS     give up after MS milliseconds (default 30000)
  --json           print the whole reply as JSON
${LOGIN_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      broker: { type: 'string' },
      mesh: { type: 'string' },
      'top-k': { type: 'string' },
      timeout: { type: 'string' },
      json: { type: 'boolean' },
      ...LOGIN_OPTIONS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [model, file] = positionals;
  if (values.help || !model || !file) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  const bytes = file === '-' ? await readStdin() : await fs.readFile(file);
  const topK = values['top-k'] === undefined ? undefined : Number(values['top-k']);
  const client = await KizunaClient.connect({
    url: values.broker ?? process.env.KIZUNA_URL ?? 'mqtt://127.0.0.1:1883',
    mesh: values.mesh ?? process.env.KIZUNA_MESH ?? 'home',
    timeoutMs: Number(values.timeout ?? 30_000),
    ...appLogin(values),
  });
  try {
    const result =
      sniffImage(bytes) && topK !== undefined
        ? await client.infer(model, bytes, { topK })
        : await client.send(model, bytes);
    console.log(values.json ? JSON.stringify(printable(result)) : describe(result));
    return 0;
  } finally {
    await client.close();
  }
}

function printable(r: InferResult) {
  const outputs = Object.fromEntries(Object.entries(r.outputs).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: Array.from(t.data as ArrayLike<number>, Number) }]));
  return { ...r, outputs };
}

function describe(r: InferResult): string {
  const head = `${r.model}@${r.version} answered by ${r.agent} in ${r.timings.total_ms.toFixed(2)} ms (queue ${r.timings.queue_ms.toFixed(2)}, pre ${r.timings.pre_ms.toFixed(2)}, inference ${r.timings.infer_ms.toFixed(2)}, post ${r.timings.post_ms.toFixed(2)})`;
  const answers = r.answers ?? [];
  const lines = answerLines(answers);
  if (!answers.length) {
    for (const [name, t] of Object.entries(r.outputs)) lines.push(`${name}: ${t.dtype}${JSON.stringify(t.shape)}`);
  }
  return [head, ...lines].join('\n');
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
