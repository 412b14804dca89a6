/** `kizuna agent`: runs until SIGINT/SIGTERM, then drains and stops cleanly. */
import { parseArgs } from 'node:util';
import { ConfigSchema, describeConfig, kebab, loadConfig } from '../config.js';
import { Agent } from '../agent.js';

export async function run(argv: string[]): Promise<number> {
  const options = Object.fromEntries(Object.keys(ConfigSchema.properties).map((k) => [kebab(k), { type: 'string' as const }]));
  const { values } = parseArgs({ args: withBooleans(argv), options: { ...options, config: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    console.log(`usage: kizuna agent [options]\n\nEach option can also come from the environment or a JSON config file (--config FILE, $KIZUNA_CONFIG)\nwith the camelCase key; flags win over the environment, which wins over the file.\n\n${describeConfig()}`);
    return 0;
  }
  const flags = Object.fromEntries(Object.entries(values).map(([k, v]) => [k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()), v as string | undefined]));
  const agent = await Agent.create(loadConfig({ flags }));
  await agent.start();
  let exitCode = 0;
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      process.stderr.write(`\n${signal}: draining accepted requests, then stopping (again to force)\n`);
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      resolve();
    };
    process.once('SIGINT', () => onSignal('SIGINT'));
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    // The agent stopped by itself (this board was revoked): say why and exit 1.
    void agent.ended.then((err) => {
      process.stderr.write(`kizuna: ${err.code}: ${err.message}\n`);
      exitCode = 1;
      resolve();
    });
  });
  await agent.stop();
  return exitCode;
}

/** A yes/no option may stand alone (`--insecure`) as well as take a value (`--eligible false`). */
function withBooleans(argv: string[]): string[] {
  const booleans = new Set(Object.entries(ConfigSchema.properties).filter(([, v]) => (v as { type?: string }).type === 'boolean').map(([k]) => `--${kebab(k)}`));
  const out: string[] = [];
  argv.forEach((arg, i) => {
    out.push(arg);
    const next = argv[i + 1];
    if (booleans.has(arg) && (next === undefined || next.startsWith('--'))) out.push('true');
  });
  return out;
}
