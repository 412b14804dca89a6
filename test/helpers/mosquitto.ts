/** A real Mosquitto broker (Debian's) on loopback, started and stopped by a test. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { freePorts } from './ports.js';

export function mosquittoPath(): string | undefined {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto']) {
    try {
      execFileSync(p, ['-h'], { stdio: 'ignore' });
    } catch (err) {
      // `mosquitto -h` exits 3 after printing its usage: it exists.
      if ((err as { status?: number }).status !== undefined) return p;
      continue;
    }
    return p;
  }
  return undefined;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export class Mosquitto {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(binary: string): Promise<Mosquitto> {
    const [port] = await freePorts(1);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-mosquitto-'));
    const conf = path.join(dir, 'mosquitto.conf');
    await fs.writeFile(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\n`);
    const child = spawn(binary, ['-c', conf], { stdio: 'ignore' });
    // Mosquitto buffers its log when it is not on a terminal: readiness is its port accepting.
    const deadline = Date.now() + 10_000;
    while (!(await accepts(port!))) {
      if (child.exitCode !== null) throw new Error(`mosquitto exited with ${child.exitCode}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`mosquitto did not listen on ${port} within 10 s`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return new Mosquitto(child, port!, dir);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      await once(this.child, 'exit');
    }
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}
