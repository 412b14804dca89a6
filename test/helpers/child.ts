/** An agent process for tests and benchmarks that never outlives its parent. */
import { spawn, type ChildProcess } from 'node:child_process';

export interface GuardedChild {
  proc: ChildProcess;
  /** Settles when the process has exited. */
  exited: Promise<void>;
  /** SIGTERM (a clean stop), SIGKILL after `graceMs`; idempotent. */
  stop(): Promise<void>;
}

/**
 * Runs `node ARGS` with stderr piped. Only its arguments configure it: no KIZUNA_* variable of the
 * caller's shell leaks in. It is SIGKILLed if this process exits first.
 */
export function spawnGuarded(args: string[], graceMs = 5000): GuardedChild {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KIZUNA_')));
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  const killHard = () => proc.kill('SIGKILL');
  process.once('exit', killHard);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const hard = setTimeout(killHard, graceMs);
        await exited;
        clearTimeout(hard);
      }
      process.removeListener('exit', killHard);
    })());
  return { proc, exited, stop };
}
