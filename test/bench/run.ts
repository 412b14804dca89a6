/**
 * The benchmark runner: `node dist/test/bench/run.js NAME [args...]` (what `npm run bench -- NAME` runs).
 *
 * A benchmark is a module `test/bench/NAME.ts` that exports
 *   run(args: string[]): Promise<Record<string, unknown>>
 * It prints its readable table(s) to stdout, releases everything it started (sockets, timers,
 * child processes), and returns its figures; the runner prints them as the LAST line of stdout,
 * exactly one JSON object, so scripts can read `tail -n 1`. Logs go to stderr.
 * Helpers shared by benchmarks live in a subfolder (they are not listed as benchmarks).
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type Benchmark = { run(args: string[]): Promise<Record<string, unknown>> };

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** After a benchmark returns, anything still keeping the process alive is a leak: say so, then exit. */
const LINGER_MS = 5000;

function available(): string[] {
  return readdirSync(HERE)
    .filter((f) => f.endsWith('.js') && f !== 'run.js')
    .map((f) => f.slice(0, -3))
    .sort();
}

function usage(): string {
  const names = available();
  return `usage: npm run bench -- NAME [args]   (node dist/test/bench/run.js NAME [args])\n\nbenchmarks:\n${names.map((n) => `  ${n}`).join('\n') || '  (none built)'}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  // `node --test dist/test/` runs every file under a test/ folder as a test, this one included
  // (and without a name): there it has nothing to do, and must not fail the suite.
  if (!name && process.env.NODE_TEST_CONTEXT) return 0;
  if (!name || !/^[a-z0-9][a-z0-9-]*$/.test(name) || !available().includes(name)) {
    if (name) console.error(`bench: unknown benchmark "${name}"\n`);
    console.error(usage());
    return 2;
  }
  const mod = (await import(`./${name}.js`)) as Partial<Benchmark>;
  if (typeof mod.run !== 'function') {
    console.error(`bench: ${name}.js exports no run() function`);
    return 2;
  }
  const figures = await mod.run(args);
  console.log(JSON.stringify({ bench: name, ...figures }));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => {
      console.error(`bench: something is still running ${LINGER_MS} ms after the benchmark returned (a leaked handle); exiting`);
      process.exit(code);
    }, LINGER_MS).unref();
  },
  (err: unknown) => {
    console.error(`bench: failed: ${(err as Error)?.stack ?? String(err)}`);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), LINGER_MS).unref();
  },
);
