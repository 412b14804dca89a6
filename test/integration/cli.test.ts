/** The `kizuna` command as users run it: a real agent process, `kizuna infer`, signals, errors. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { CLI, runCli, spawnAgent } from '../helpers/cli.js';

describe('kizuna agent and kizuna infer', () => {
  let agent: { child: ChildProcess; port: number; stderr: () => string };
  let dir: string;
  const digit = loadDigits().heldOut[3]!;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kizuna-cli-'));
    await fs.writeFile(path.join(dir, 'digit.png'), await digitToPng(digit.pixels));
    agent = await spawnAgent(['--node', 'cli-agent']);
  });
  after(async () => {
    if (agent.child.exitCode === null) agent.child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('infer prints the answer for a person', async () => {
    const r = await runCli(['infer', 'digits', path.join(dir, 'digit.png'), '--broker', `mqtt://127.0.0.1:${agent.port}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^digits@1\.0\.0 answered by cli-agent in [\d.]+ ms/);
    assert.match(r.stdout, new RegExp(`^${digit.label} \\(\\d+\\.\\d%\\)`, 'm'));
  });

  test('infer --json prints the whole reply', async () => {
    const r = await runCli(['infer', 'digits-int8', path.join(dir, 'digit.png'), '--broker', `mqtt://127.0.0.1:${agent.port}`, '--json', '--top-k', '2']);
    assert.equal(r.code, 0, r.stderr);
    const reply = JSON.parse(r.stdout);
    assert.equal(reply.ok, true);
    assert.equal(reply.answers[0].index, digit.label);
    assert.equal(reply.answers[0].top.length, 2);
    assert.equal(reply.outputs.logits.data.length, 10);
  });

  test('infer of an unknown model exits 1 with the error code', async () => {
    const r = await runCli(['infer', 'nope', path.join(dir, 'digit.png'), '--broker', `mqtt://127.0.0.1:${agent.port}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_UNKNOWN_MODEL/);
  });

  test('a second agent on a port in use gets a clear error', async () => {
    const r = await runCli(['agent', '--host', '127.0.0.1', '--port', String(agent.port), '--node', 'second']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`KZ_ERR_CONFIG: cannot listen on 127\\.0\\.0\\.1:${agent.port}: it is in use`));
  });

  test('SIGTERM stops the agent cleanly with exit code 0', async () => {
    const exited = once(agent.child, 'exit');
    agent.child.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0, agent.stderr());
    assert.match(agent.stderr(), /agent stopped/);
  });
});

describe('kizuna command errors', () => {
  test('an invalid flag value names the flag and exits 1 without starting', async () => {
    const r = await runCli(['agent', '--port', '99999', '--host', '127.0.0.1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /KZ_ERR_CONFIG/);
    assert.match(r.stderr, /port \(from --port\)/);
  });

  test('an invalid environment value names the variable', async () => {
    const r = await runCli(['agent', '--host', '127.0.0.1'], { KIZUNA_THREADS: 'many' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /threads \(from KIZUNA_THREADS\)/);
  });

  test('an unknown command prints the usage and exits 2', async () => {
    const r = await runCli(['fly']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "fly"/);
    assert.match(r.stderr, /usage: kizuna/);
  });

  test('agent --help lists every setting with its flag and variable', async () => {
    const r = await runCli(['agent', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--max-payload-bytes\s+KIZUNA_MAX_PAYLOAD_BYTES/);
  });
});

describe('kizuna demo (what npm start runs)', () => {
  test('a mesh of three agents on loopback shares the job; the last line is one JSON object', async () => {
    const r = await runCli(['demo', '--count', '300']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const summary = JSON.parse(lines.at(-1)!);
    assert.equal(summary.count, 300);
    assert.equal(summary.agents, 3);
    for (const key of ['accuracy', 'throughput_per_s', 'p50_ms', 'p95_ms', 'int8_accuracy', 'int8_throughput_per_s', 'int8_p50_ms', 'int8_p95_ms', 'batch_throughput_per_s']) {
      assert.equal(typeof summary[key], 'number', key);
    }
    assert.ok(summary.accuracy > 0.9 && summary.int8_accuracy > 0.9, r.stdout);
    assert.deepEqual(Object.keys(summary.share).sort(), ['board-1', 'board-2', 'board-3']);
    assert.ok(Object.values<number>(summary.share).every((n) => n > 0), `every board answered some of the shared job: ${JSON.stringify(summary.share)}`);
    assert.equal(Object.values<number>(summary.share).reduce((a, b) => a + b, 0), 300);
    assert.match(r.stdout, /mesh formed in [\d.]+ s: board-1 \(broker\)/);
    assert.doesNotMatch(r.stderr, /warn|error/i, 'the agents say nothing at log level warn');
  });

  test('--dashboard keeps the mesh up with board-1\'s dashboard, which shows the three boards, until Ctrl-C', async (t) => {
    const child = spawn(process.execPath, [CLI, 'demo', '--count', '50', '--dashboard'], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => void (child.exitCode === null && child.kill('SIGKILL')));
    let stdout = '';
    child.stdout!.on('data', (d) => (stdout += d));
    const stderrLines = readline.createInterface({ input: child.stderr! });
    // The run is over (its JSON printed) and the mesh is still up: the demo says so on stderr.
    await new Promise<void>((resolve, reject) => {
      stderrLines.on('line', (line) => /the mesh is still up/.test(line) && resolve());
      child.once('exit', (code) => reject(new Error(`demo exited (${code}) before staying up:\n${stdout}`)));
    });
    const url = /dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stdout)?.[1];
    assert.ok(url, stdout);
    assert.equal(JSON.parse(stdout.trim().split('\n').at(-1)!).count, 50, 'the last line of stdout is the JSON');
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    // The event stream's first message is a snapshot of the boards.
    const events = await fetch(new URL('events', url));
    const reader = events.body!.getReader();
    let text = '';
    while (!/board-3/.test(text) || !/board-1/.test(text) || !/board-2/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    await reader.cancel();
    for (const board of ['board-1', 'board-2', 'board-3']) assert.match(text, new RegExp(board), `the dashboard's stream names ${board}`);
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    assert.deepEqual(await exited, [0, null], 'Ctrl-C stops the mesh and the demo ends cleanly');
  });
});
