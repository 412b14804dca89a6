/**
 * The deploy checks of issue 8 as part of `npm test` (each script under deploy/test/ also runs
 * alone: `npm run test:deploy`, `npm run test:arm64`):
 *  - the unit files, scripts, cloud-init user-data and compose file checked statically;
 *  - install.sh in a fresh debootstrapped Debian 12 root, first boot under systemd-nspawn;
 *  - the linux-arm64 bundle as real arm64 code under qemu-user, a Pi 4's CPU;
 *  - the Containerfile built with buildah and compose's 3 agents run from the image.
 * They need root and Debian tools that .ci/run installs; elsewhere each skips, naming what is
 * missing (they never install anything from here). Together they take 4-5 minutes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { repoRoot } from '../helpers/shared.js';

interface Check {
  name: string;
  script: string;
  /** Commands that must be on PATH (or absolute paths that must exist). */
  tools: string[];
  /** Python modules the script imports. */
  python?: string[];
  minutes: number;
}

const CHECKS: Check[] = [
  { name: 'static: shellcheck, systemd-analyze verify on both units, cloud-init schema, compose config', script: 'deploy/test/static.sh', tools: ['shellcheck', 'systemd-analyze', 'docker-compose'], python: ['yaml', 'jsonschema', 'jinja2', 'configobj', 'jsonpatch'], minutes: 3 },
  { name: 'install.sh in a debootstrapped Debian 12 root: install, upgrade in place, first boot, the hardened service, uninstall', script: 'deploy/test/install-chroot.sh', tools: ['debootstrap', 'bc', 'systemd-nspawn'], minutes: 10 },
  { name: 'the linux-arm64 bundle under qemu-user as a Pi 4 CPU serves an inference through MQTT', script: 'deploy/test/arm64.sh', tools: ['qemu-aarch64-static', 'debootstrap'], minutes: 10 },
  { name: 'the Containerfile built with buildah; compose.yaml\'s 3 agents from the image form one mesh', script: 'deploy/test/container.sh', tools: ['buildah', 'systemd-nspawn'], python: ['yaml'], minutes: 10 },
];

const has = (tool: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const hasPython = (module: string): boolean => {
  try {
    execFileSync('/usr/bin/python3', ['-c', `import ${module}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** Why `check` cannot run here, or undefined. */
function missing(check: Check): string | undefined {
  if (process.platform !== 'linux') return `deploy checks need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return `deploy checks need root (chroot, mounts, systemd-nspawn); uid ${process.getuid?.()}`;
  const lacking = [...check.tools.filter((t) => !has(t)), ...(check.python ?? []).filter((m) => !hasPython(m)).map((m) => `python3-${m}`)];
  return lacking.length ? `missing ${lacking.join(', ')} (.ci/run installs them)` : undefined;
}

/** Runs a script from the repository root; resolves with its exit code and the tail of its output. */
function runScript(script: string, timeoutMs: number): Promise<{ code: number | null; tail: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const keep = (d: Buffer) => {
      lines.push(...d.toString().split('\n').filter(Boolean));
      if (lines.length > 80) lines.splice(0, lines.length - 80);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, tail: lines.join('\n') });
    });
  });
}

for (const check of CHECKS) {
  test(`deploy: ${check.name}`, { timeout: check.minutes * 60_000 + 10_000 }, async (t) => {
    const why = missing(check);
    if (why) return t.skip(why);
    const started = Date.now();
    const { code, tail } = await runScript(check.script, check.minutes * 60_000);
    assert.equal(code, 0, `${check.script} failed (exit ${code}); its last lines:\n${tail}`);
    t.diagnostic(`${check.script}: ${((Date.now() - started) / 1000).toFixed(0)} s; ${tail.split('\n').filter((l) => /passed|took|"total_s"/.test(l)).join(' | ')}`);
  });
}
