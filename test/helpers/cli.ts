/** Runs the compiled `kizuna` command as a real process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { repoRoot } from './shared.js';

export const CLI = path.join(repoRoot, 'dist', 'agent', 'cli.js');

export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stdout, stderr };
}

/** Runs `kizuna ARGS`, asserts it exited 0 (with its stderr in the message), returns its stdout. */
export async function cliOk(args: string[]): Promise<string> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`kizuna ${args.join(' ')} exited with ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The last line of a command's output (where init and token print what they made). */
export const lastLine = (out: string): string => out.trim().split('\n').at(-1)!;

/** Starts `kizuna agent` and resolves once it serves, with the port its listener took (0 with --broker). */
export async function spawnAgent(args: string[]): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'agent', '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const port = await new Promise<number>((resolve, reject) => {
    let found = 0;
    child.stderr!.on('data', (d) => {
      stderr += d;
      found ||= Number(/broker listening on 127\.0\.0\.1:(\d+)/.exec(stderr)?.[1] ?? 0);
      if (stderr.includes('serving mesh')) resolve(found);
    });
    child.once('exit', (code) => reject(new Error(`agent exited with ${code} before serving:\n${stderr}`)));
  });
  return { child, port, stderr: () => stderr };
}
