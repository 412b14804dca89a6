#!/usr/bin/env node
/** `kizuna`: the command line. Each command is a small module; this file only dispatches. */
import { KizunaError, asKizunaError } from '../mesh/errors.js';

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  agent: { summary: 'run an agent: embedded broker + models + inference', load: () => import('./commands/agent.js') },
  infer: { summary: 'ask the mesh for one inference: kizuna infer MODEL FILE', load: () => import('./commands/infer.js') },
  batch: { summary: 'run a model on every image of a folder across the mesh: kizuna batch MODEL DIR', load: () => import('./commands/batch.js') },
  init: { summary: 'create a mesh\'s credentials on this board and print a join token', load: async () => ({ run: (await import('./commands/mesh-admin.js')).init }) },
  join: { summary: 'join a mesh with a token: kizuna join TOKEN', load: async () => ({ run: (await import('./commands/mesh-admin.js')).join }) },
  token: { summary: 'make a join token for a board or a token for an app: kizuna token board|app NAME', load: async () => ({ run: (await import('./commands/mesh-admin.js')).token }) },
  models: { summary: 'manage models: kizuna models sign MANIFEST (kizuna models --help)', load: () => import('./commands/models.js') },
  revoke: { summary: 'lock a board or an app out of the mesh: kizuna revoke board|app NAME', load: async () => ({ run: (await import('./commands/mesh-admin.js')).revokeCommand }) },
  status: { summary: 'every board of the mesh: role, online, address, models, load, temperature, memory, req/s, p95 (--json)', load: () => import('./commands/status.js') },
  top: { summary: 'the same as status, live in the terminal (q quits)', load: () => import('./commands/top.js') },
  demo: { summary: 'start 3 agents on loopback and classify held-out MNIST digits through the mesh, one by one and as a shared job (--dashboard: and keep it up with the web dashboard)', load: () => import('./commands/demo.js') },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: kizuna <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n'kizuna <command> --help' shows a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    console.log(usage());
    return 0;
  }
  if (name === '--version' || name === 'version') {
    const { readFileSync } = await import('node:fs');
    console.log(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`kizuna: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = asKizunaError(err);
    console.error(`kizuna: ${e.code}: ${e.message}`);
    if (!(err instanceof KizunaError)) console.error((err as Error).stack);
    process.exitCode = 1;
  },
);
