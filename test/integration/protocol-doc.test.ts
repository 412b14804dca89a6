/**
 * docs/PROTOCOL.md is executable: every fenced block whose info string is `sh test` runs here, in
 * document order, with Debian's mosquitto-clients against a real agent on loopback. The only
 * change made to a block is `-p 1883` -> the agent's port. A block that only subscribes
 * (mosquitto_sub) runs in the background, and the next block starts once the agent's broker has
 * that subscription (its `$SYS/<id>/new/subscribes` event): no sleeping. After a block that
 * publishes, the background subscribers must exit by themselves (`-C` reached; `-W` bounds them).
 * Then the replies are checked for what a user relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Agent } from '../../agent/agent.js';
import { decodeReply } from '../../mesh/messages.js';
import { Transport } from '../../mesh/mqtt.js';
import { loadDigits } from '../../models/builtin/digits-data.js';
import { digitToPng } from '../../models/render.js';
import { startAgent } from '../helpers/agent.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DOC = path.join(ROOT, 'docs', 'PROTOCOL.md');
const SUBSCRIBED_WITHIN_MS = 10_000;
const BLOCK_WITHIN_MS = 45_000; // every mosquitto_sub of the doc gives up after -W 30

/** The bodies of the fenced blocks whose info string is exactly `sh test`, in order. */
function shTestBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  let current: string[] | undefined;
  for (const line of markdown.split('\n')) {
    if (current === undefined) {
      if (line.trim() === '```sh test') current = [];
    } else if (line.trim() === '```') {
      blocks.push(current.join('\n'));
      current = undefined;
    } else {
      current.push(line);
    }
  }
  assert.equal(current, undefined, 'an `sh test` block of docs/PROTOCOL.md is not closed');
  return blocks;
}

/** Every mosquitto command must name localhost and port 1883, so none can reach another broker. */
function checkLoopback(block: string): void {
  const commands = block.replace(/\\\n/g, ' ').split('\n').filter((l) => /\bmosquitto_(pub|sub)\b/.test(l));
  for (const c of commands) {
    assert.match(c, /-h localhost\b/, `an example must use -h localhost: ${c}`);
    assert.match(c, /-p 1883\b/, `an example must use -p 1883: ${c}`);
  }
}

const isSubscriber = (block: string) => /\bmosquitto_sub\b/.test(block) && !/\bmosquitto_pub\b/.test(block);

interface Run {
  block: string;
  child: ChildProcess;
  stdout: Buffer[];
  stderr: string[];
  exit: Promise<number | null>;
}

/** Runs a block with `sh -e` in its own process group (so a stuck run can be ended as a whole). */
function runBlock(block: string, port: number, cwd: string): Run {
  const script = block.replace(/-p 1883\b/g, `-p ${port}`);
  const child = spawn('sh', ['-e', '-c', script], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const run: Run = { block, child, stdout: [], stderr: [], exit: Promise.resolve(null) };
  child.stdout!.on('data', (c: Buffer) => run.stdout.push(c));
  child.stderr!.on('data', (c: Buffer) => run.stderr.push(c.toString()));
  run.exit = new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  return run;
}

function endRun(run: Run): void {
  if (run.child.exitCode === null && run.child.signalCode === null && run.child.pid !== undefined) {
    try {
      process.kill(-run.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function finished(run: Run, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  const code = await Promise.race([run.exit, timeout]).finally(() => clearTimeout(timer));
  if (code === 'timeout') {
    endRun(run);
    assert.fail(`block did not finish within ${ms} ms:\n${run.block}\nstderr: ${run.stderr.join('')}`);
  }
  assert.equal(code, 0, `block exited with ${code}:\n${run.block}\nstderr: ${run.stderr.join('')}`);
}

/** Reports each new subscription the broker accepts from any client but this one. */
class SubscriptionWatch {
  private waiters: (() => void)[] = [];

  private constructor(private readonly transport: Transport) {}

  static async start(url: string): Promise<SubscriptionWatch> {
    const clientId = 'protocol-doc-watch';
    const transport = await Transport.connect({ url, clientId });
    const watch = new SubscriptionWatch(transport);
    transport.onMessage((_topic, payload) => {
      const event = JSON.parse(payload.toString()) as { clientId?: string };
      if (event.clientId !== clientId) for (const w of watch.waiters.splice(0)) w();
    });
    await transport.subscribe('$SYS/+/new/subscribes', 1);
    return watch;
  }

  /** Resolves at the next subscription; call it before starting the subscriber. */
  next(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

async function subscribed(run: Run, seen: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    seen.then(() => 'subscribed' as const),
    run.exit.then((code) => `exited with ${code}`),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`not subscribed within ${SUBSCRIBED_WITHIN_MS} ms`), SUBSCRIBED_WITHIN_MS))),
  ]).finally(() => clearTimeout(timer));
  assert.equal(outcome, 'subscribed', `subscriber block ${outcome}:\n${run.block}\nstderr: ${run.stderr.join('')}`);
}

function installed(command: string): boolean {
  return (spawnSync(command, ['--help'], { stdio: 'ignore' }).error as NodeJS.ErrnoException | undefined)?.code !== 'ENOENT';
}

/** `mosquitto_sub -v` prints "topic payload" per message. */
function messagesOf(runs: Run[]): { topic: string; payload: string }[] {
  return runs
    .flatMap((r) => Buffer.concat(r.stdout).toString('utf8').split('\n'))
    .filter((line) => line !== '')
    .map((line) => {
      const space = line.indexOf(' ');
      return { topic: line.slice(0, space), payload: line.slice(space + 1) };
    });
}

interface Answer {
  label: string;
  index: number;
  score: number;
  top: { label: string; index: number; score: number }[];
}

interface JsonReply {
  v: number;
  id: string;
  ok: boolean;
  agent: string;
  model?: string;
  outputs?: Record<string, { dtype: string; shape: number[]; data?: number[] }>;
  answers?: Answer[];
  error?: { code: string; message: string };
}

test('every `sh test` block of docs/PROTOCOL.md works with mosquitto-clients', { timeout: 300_000 }, async (t) => {
  if (!installed('mosquitto_pub') || !installed('mosquitto_sub')) {
    t.skip('mosquitto-clients not installed: apt-get install mosquitto-clients');
    return;
  }
  const blocks = shTestBlocks(fs.readFileSync(DOC, 'utf8'));
  assert.ok(blocks.length > 0, 'docs/PROTOCOL.md has no `sh test` block');
  blocks.forEach(checkLoopback);

  // The examples' digit.png: a held-out digit (never trained on) of the fixed, seeded split.
  const digit = loadDigits().heldOut[0]!;
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-protocol-doc-'));
  t.after(() => fs.rmSync(cwd, { recursive: true, force: true }));
  fs.writeFileSync(path.join(cwd, 'digit.png'), await digitToPng(digit.pixels));

  let agent: Agent | undefined;
  let watch: SubscriptionWatch | undefined;
  const subscribers: Run[] = [];
  const all: Run[] = [];
  try {
    agent = await startAgent({ node: 'doc', mesh: 'home' });
    const port = Number(new URL(agent.brokerUrl).port);
    watch = await SubscriptionWatch.start(agent.brokerUrl);
    const pending: Run[] = [];
    for (const block of blocks) {
      if (isSubscriber(block)) {
        const seen = watch.next();
        const run = runBlock(block, port, cwd);
        all.push(run);
        await subscribed(run, seen);
        pending.push(run);
        subscribers.push(run);
      } else {
        const run = runBlock(block, port, cwd);
        all.push(run);
        await finished(run, BLOCK_WITHIN_MS);
        for (const sub of pending.splice(0)) await finished(sub, BLOCK_WITHIN_MS);
      }
    }
    for (const sub of pending.splice(0)) await finished(sub, BLOCK_WITHIN_MS);
  } finally {
    all.forEach(endRun);
    await watch?.close();
    await agent?.stop();
  }

  const messages = messagesOf(subscribers);
  const replies = (id: string): { raw: string; reply: JsonReply }[] =>
    messages.filter((m) => m.topic === `kizuna/v1/home/res/me/${id}`).map((m) => ({ raw: m.payload, reply: JSON.parse(m.payload) as JsonReply }));
  const only = (id: string): JsonReply => {
    const found = replies(id);
    assert.equal(found.length, 1, `one reply to ${id}, got ${found.length}`);
    return found[0]!.reply;
  };

  await t.test('the node status shows the agent online with the digits model', () => {
    const status = messages.find((m) => m.topic === 'kizuna/v1/home/node/doc/status');
    assert.ok(status, 'no retained status of node doc');
    const s = JSON.parse(status.payload) as { online: boolean; models: { name: string }[] };
    assert.equal(s.online, true);
    assert.ok(s.models.some((m) => m.name === 'digits'));
  });

  await t.test('a PNG published with -f gets the right label', () => {
    const [first] = replies('png-1');
    assert.ok(first, 'no reply to png-1');
    const r = first.reply;
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.equal(r.model, 'digits');
    assert.equal(r.agent, 'doc');
    assert.equal(r.answers?.[0]?.label, String(digit.label));
    assert.deepEqual(r.outputs?.logits?.shape, [1, 10]);
  });

  await t.test('a base64 image with top_k and raw_outputs', () => {
    const r = only('png-2');
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.outputs, {});
    assert.equal(r.answers?.[0]?.label, String(digit.label));
    assert.equal(r.answers?.[0]?.top.length, 1);
  });

  await t.test('a job of two images: accepted, then both results in order, complete', () => {
    const stream = messages.filter((m) => m.topic === 'kizuna/v1/home/jobres/me/job-1').map((m) => JSON.parse(m.payload) as {
      ok: boolean; from: number; complete: boolean; progress: { done: number; total: number };
      results: { index: number; ok: boolean; agent: string; answers?: Answer[] }[];
    });
    assert.equal(stream.length, 2, 'two messages on the job result topic');
    assert.deepEqual([stream[0]!.ok, stream[0]!.results.length, stream[0]!.complete, stream[0]!.progress.total], [true, 0, false, 2]);
    const last = stream[1]!;
    assert.equal(last.complete, true);
    assert.equal(last.from, 0);
    assert.deepEqual(last.results.map((r) => r.index), [0, 1]);
    for (const r of last.results) {
      assert.equal(r.ok, true);
      assert.equal(r.agent, 'doc');
      assert.equal(r.answers?.[0]?.label, String(digit.label));
    }
  });

  await t.test('a JSON tensor request gets a result', () => {
    const r = only('tensor-1');
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.outputs?.logits?.shape, [1, 10]);
    assert.equal(r.outputs?.logits?.data?.length, 10);
    assert.equal(r.answers?.[0]?.top.length, 2);
  });

  await t.test('the KZB1 frame built with printf carries the same tensor', () => {
    const r = only('frame-1');
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.outputs?.logits?.data, only('tensor-1').outputs?.logits?.data);
  });

  await t.test('wrong model names get their KZ_ERR_ codes', () => {
    const unknown = only('typo-1');
    assert.equal(unknown.ok, false);
    assert.equal(unknown.error?.code, 'KZ_ERR_UNKNOWN_MODEL');
    assert.equal(unknown.model, 'digitz');
    const badName = only('typo-2');
    assert.equal(badName.ok, false);
    assert.equal(badName.error?.code, 'KZ_ERR_BAD_NAME');
  });

  await t.test('a retry with the same id gets the same reply, byte for byte', () => {
    const both = replies('png-1');
    assert.equal(both.length, 2, 'the retry of png-1 got no reply');
    assert.equal(both[1]!.raw, both[0]!.raw);
  });

  await t.test('a binary reply saved with -N is a KZB1 frame', () => {
    const bytes = fs.readFileSync(path.join(cwd, 'reply.kzb1'));
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'KZB1');
    const r = decodeReply(bytes);
    assert.equal(r.ok, true);
    assert.equal((r.ok && (r.answers?.[0] as Answer | undefined))?.label, String(digit.label));
  });
});
