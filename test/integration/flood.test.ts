/**
 * A mesh with credentials under attack, with real processes on 127.0.0.1: one `kizuna agent`
 * (simulating 5 ms per input, so floods queue), a legitimate app sending 20 requests a second (each
 * awaited with a deadline), and the attackers of test/helpers/flood-attack.ts in a process of
 * their own, all at once: clients without a valid token connecting again and again, an app
 * flooding valid requests past its publish allowance and one just under it, oversized and
 * malformed packets, malformed payloads, and access-rule violations. (Over TLS when the build's
 * credentials include certificates; the attackers then also try plain MQTT.)
 *
 * The bound on the legitimate app's p95 latency, 3 x its unloaded p95 + 500 ms, both measured here:
 * the fair queue keeps the app one request of each other client behind (~5 ms each), but every
 * new connection of the flooder may publish a full --publish-burst (1,000 here) before it is cut
 * off, and the broker's one event loop takes ~0.1 ms for each (parse, rules, dispatcher, an
 * OVERLOADED reply): ~100-150 ms during which an unlucky request waits, more when the attackers
 * (on this machine's same two cores) take the CPU. The 500 ms covers that several times over.
 *
 * The tests after it hold what the flood found (and what was fixed): a flooder that reconnects
 * after every cut-off stays within one allowance, an app cannot take a board's MQTT client id,
 * sockets that never send a byte are closed, and a cut-off over TLS is reported once.
 *
 * Flags: KZ_FLOOD_VERBOSE=1 prints every figure of the run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initMesh, issueToken } from '../../agent/credentials.js';
import { startAgent } from '../helpers/agent.js';
import { meshCa, spawnAgentProcess } from '../helpers/flood-agent.js';
import { FloodLab, heldOutDigits, legitRun, type FloodResult } from '../helpers/flood-lab.js';
import { RawConn, publishPacket } from '../helpers/flood-wire.js';

const digits = heldOutDigits(32);
const RSS_HEADROOM_MB = 150;
const P95_FACTOR = 3;
const P95_SLACK_MS = 500;

const brief = (l: FloodResult['unloaded']) => `${l.correct}/${l.sent} correct, p50 ${l.p50.toFixed(1)} ms, p95 ${l.p95.toFixed(1)} ms, max ${l.max.toFixed(1)} ms, failed ${JSON.stringify(l.failed)}`;

test('under a combined flood every legitimate request is answered in time, memory stays bounded, attackers are refused', { timeout: 90_000 }, async (t) => {
  const lab = await FloodLab.start({ baselineMs: 3000, attackMs: 8000, afterMs: 1000 }, digits);
  t.after(() => lab.close());
  const r = await lab.run();
  const { attack: a, denials: d } = r;
  t.diagnostic(`agent over ${lab.agent.tls ? 'TLS' : 'plain MQTT'}; unloaded: ${brief(r.unloaded)}`);
  t.diagnostic(`under attack (${a.packetsPerSecond} packets/s attempted): ${brief(r.underAttack)}; after: ${brief(r.after)}`);
  t.diagnostic(`agent RSS ${r.rss.unloadedMb.toFixed(0)} MB unloaded, ${r.rss.peakMb.toFixed(0)} MB at most in ${r.rss.samples} samples (VmHWM ${r.rss.hwmMb.toFixed(0)}); CPU ${r.agentCpuPct.toFixed(0)}% of a core`);
  t.diagnostic(`agent log: ${JSON.stringify(d)}`);
  if (process.env.KZ_FLOOD_VERBOSE) t.diagnostic(JSON.stringify(a));

  // The legitimate app: every request answered with the right digit, in time.
  assert.equal(r.unloaded.correct, r.unloaded.sent, `unloaded: ${brief(r.unloaded)}`);
  assert.equal(r.underAttack.correct, r.underAttack.sent, `under attack: ${brief(r.underAttack)}`);
  const bound = P95_FACTOR * r.unloaded.p95 + P95_SLACK_MS;
  assert.ok(r.underAttack.p95 < bound, `p95 under attack ${r.underAttack.p95.toFixed(1)} ms, bound ${bound.toFixed(1)} ms (${P95_FACTOR} x unloaded p95 + ${P95_SLACK_MS})`);

  // The agent: bounded memory, alive and serving afterwards, no error in its log.
  assert.ok(r.rss.samples >= 20, `RSS sampled ${r.rss.samples} times`);
  assert.ok(r.rss.peakMb < r.rss.unloadedMb + RSS_HEADROOM_MB, `peak RSS ${r.rss.peakMb.toFixed(0)} MB, unloaded ${r.rss.unloadedMb.toFixed(0)} MB + ${RSS_HEADROOM_MB}`);
  assert.equal(r.aliveAfter, true, `the agent died:\n${lab.agent.tail()}`);
  assert.equal(r.after.correct, r.after.sent, `after the attack: ${brief(r.after)}`);
  assert.deepEqual(lab.agent.errorLines, [], 'error lines in the agent log');

  // (a) No token, garbage, another mesh's key or name, a tampered signature: never in.
  assert.ok(a.unauth.attempts > 100, `only ${a.unauth.attempts} unauthenticated attempts`);
  assert.equal(a.unauth.accepted, 0, 'an unauthenticated client got CONNACK 0');
  assert.equal(a.unauth.timeouts, 0, 'the broker did not answer a CONNECT within 3 s');
  assert.equal(a.unauth.refused + a.unauth.closedWithoutConnack, a.unauth.attempts);
  assert.ok(d.connectRefused >= a.unauth.attempts, `the agent logged ${d.connectRefused} refused connections of ${a.unauth.attempts}`);
  if (lab.agent.tls) {
    assert.ok(a.unauth.plainAttempts > 0);
    assert.equal(a.unauth.plainClosed, a.unauth.plainAttempts, 'plain MQTT to a TLS-only broker');
    assert.ok(d.plainRefused >= a.unauth.plainClosed);
  }
  // (b) The flooder is cut off at every connection; the paced one, under its allowance, is not,
  // and its requests beyond the 1,000 that may wait are refused.
  assert.ok(a.flooder.cycles >= 5 && a.flooder.published > a.flooder.cycles * r.options.limits.publishBurst);
  assert.equal(a.flooder.connectRefused, 0);
  assert.equal(a.flooder.cutOff, a.flooder.cycles, `flooder connections not cut: ${a.flooder.notCut}`);
  assert.ok(d.cutFlood >= a.flooder.cutOff, `the agent logged ${d.cutFlood} flood cut-offs of ${a.flooder.cutOff}`);
  assert.equal(a.paced.disconnects, 0, 'the paced flooder (under its allowance) was cut off');
  assert.ok((a.paced.replies.KZ_ERR_OVERLOADED ?? 0) > 0, `paced flooder replies: ${JSON.stringify(a.paced.replies)}`);
  assert.deepEqual(Object.keys(a.paced.replies).filter((k) => k !== 'ok' && k !== 'KZ_ERR_OVERLOADED'), []);
  // (c) Oversized packets and a malformed remaining length: cut off, every one.
  assert.ok(a.oversize.attempts > 20);
  assert.equal(a.oversize.cutOff, a.oversize.attempts, `oversized packets not cut: ${a.oversize.notCut}, connections refused: ${a.oversize.refusedConnect}`);
  assert.ok(d.cutTooLarge + d.cutMalformed >= a.oversize.cutOff, `the agent logged ${d.cutTooLarge} too-large and ${d.cutMalformed} malformed cut-offs of ${a.oversize.cutOff}`);
  // (d) Malformed payloads: each gets its own stable error code, and the sender is not cut off.
  assert.ok(a.malformed.sent > 100);
  assert.deepEqual(a.malformed.unexpected, {});
  assert.equal(a.malformed.unanswered, 0);
  assert.equal(a.malformed.asExpected, a.malformed.sent);
  assert.equal(a.malformed.disconnects, 0);
  // (e) Access rules: every forbidden subscription refused, every forbidden publish closes the connection.
  assert.ok(a.acl.connections > 20);
  assert.equal(a.acl.connectRefused, 0);
  assert.equal(a.acl.subscribeGranted, 0);
  assert.equal(a.acl.subscribeRefused, 4 * a.acl.connections);
  assert.equal(a.acl.publishNotClosed, 0);
  assert.equal(a.acl.publishClosed, a.acl.connections);
  assert.ok(d.publishRefused >= a.acl.publishClosed - a.acl.publishClosedUnlogged);
  assert.ok(d.subscribeRefused >= a.acl.subscribeRefused);
});

test(
  'a flooder that reconnects at once after each cut-off is held to its publish allowance across connections',
  {
    timeout: 60_000,
  },
  async (t) => {
    const lab = await FloodLab.start({ baselineMs: 1000, attackMs: 4000, afterMs: 500, only: ['flooder'], flooderReconnectMs: 0 }, digits);
    t.after(() => lab.close());
    const r = await lab.run();
    const { publishPerSecond, publishBurst } = r.options.limits;
    const seconds = r.attack.elapsedMs / 1000;
    // Every reply on the flooder's topic answers a request the broker took from it (a floor:
    // replies still queued when the watch ended are not counted).
    const allowance = publishPerSecond * seconds + publishBurst;
    t.diagnostic(`${r.attack.flooder.cycles} connections in ${seconds.toFixed(1)} s; ${r.attack.flooder.replies} requests taken from the flooder, allowance ${allowance.toFixed(0)}; legitimate app: ${brief(r.underAttack)}`);
    assert.equal(r.underAttack.correct, r.underAttack.sent);
    assert.ok(r.attack.flooder.replies <= allowance * 1.1, `the broker took ${r.attack.flooder.replies} requests from one app in ${seconds.toFixed(1)} s: ${(r.attack.flooder.replies / seconds).toFixed(0)}/s against an allowance of ${publishPerSecond}/s (burst ${publishBurst})`);
  },
);

test(
  "an app cannot take over a board's or another app's MQTT client id",
  {
    timeout: 60_000,
  },
  async (t) => {
    const lab = await FloodLab.start({ baselineMs: 500 }, digits);
    t.after(() => lab.close());
    const { agent } = lab;
    const tls = lab.ca ? { ca: lab.ca } : undefined;
    const seen: (number | string)[] = [];
    let stop = false;
    // The impostor, with a valid app token of its own, takes the board's client id whenever it lost it.
    const impostor = (async () => {
      for (let i = 0; !stop && i < 500; i++) {
        const c = await RawConn.open(agent.port, tls);
        try {
          const rc = await c.connect({ clientId: `kizuna-agent-${agent.node}`, username: 'impostor', password: lab.tokens.impostor });
          seen.push(rc);
          if (rc !== 0) continue;
          await Promise.race([c.closed, new Promise((resolve) => setTimeout(resolve, 500))]);
        } finally {
          c.destroy();
        }
      }
    })();
    const run = await legitRun(lab.app, digits, { count: 60, perSecond: 20, deadlineMs: 5000 }).finally(() => (stop = true));
    await impostor;
    t.diagnostic(`impostor CONNACKs: ${seen.filter((x) => x === 0).length} accepted of ${seen.length}; legitimate app: ${brief(run)}`);
    assert.equal(seen.filter((x) => x === 0).length, 0, `an app was let in under the board's client id ${seen.filter((x) => x === 0).length} times of ${seen.length}`);
    assert.equal(run.correct, run.sent, `legitimate app: ${brief(run)}`);
  },
);

test(
  'a connection that never sends a byte is closed, as a held one is, within 10 s',
  {
    timeout: 30_000,
  },
  async (t) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-flood-silent-'));
    const agent = await spawnAgentProcess({ dataDir: path.join(root, 'a'), node: 'silent', simulateMs: 0 });
    t.after(async () => {
      await agent.stop();
      fs.rmSync(root, { recursive: true, force: true });
    });
    const conns = await Promise.all(Array.from({ length: 20 }, () => RawConn.open(agent.port)));
    try {
      const start = performance.now();
      const closed = await Promise.all(conns.map((c) => c.closedWithin(11_000)));
      t.diagnostic(`${closed.filter(Boolean).length} of ${conns.length} silent connections closed by the agent within ${((performance.now() - start) / 1000).toFixed(1)} s`);
      assert.equal(closed.filter((x) => !x).length, 0, `${closed.filter((x) => !x).length} of ${conns.length} silent connections still open after 11 s`);
    } finally {
      for (const c of conns) c.destroy();
    }
  },
);

test(
  'a connection cut off for flooding is cut off, and reported, once',
  {
    timeout: 30_000,
  },
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-flood-once-'));
    const creds = initMesh(dir, 'home', 'once');
    const agent = await startAgent({ dataDir: dir, node: 'once', logLevel: 'silent', publishPerSecond: 500, publishBurst: 1000 });
    t.after(async () => {
      await agent.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const ca = meshCa(dir);
    const events: string[] = [];
    agent.listener!.on('refused', (v: { kind: string }) => events.push(v.kind));
    const token = issueToken(creds, 'app', 'flooder');
    const burst = Buffer.concat(Array.from({ length: 250 }, (_, i) => publishPacket(`kizuna/v1/home/req/digits/flooder/f${i}`, Buffer.alloc(3000))));
    const connections = 5;
    for (let i = 0; i < connections; i++) {
      const c = await RawConn.open(Number(new URL(agent.brokerUrl).port), ca ? { ca } : undefined);
      try {
        assert.equal(await c.connect({ clientId: `kizuna-flooder-${i}`, username: 'flooder', password: token }), 0);
        // 3,000 publishes in slices of 250, each written when the socket took the last: 3x the burst.
        for (let n = 0; n < 12 && c.isOpen; n++) await c.write(burst);
        assert.equal(await c.closedWithin(3000), true, 'the flooder was not cut off');
      } finally {
        c.destroy();
      }
    }
    // Reports of a cut come at once; a second one would come with the data already decrypted.
    await new Promise<void>((resolve) => setImmediate(resolve));
    t.diagnostic(`${connections} connections cut off, reported ${events.length} times over ${ca ? 'TLS' : 'plain MQTT'}: ${events.join(', ')}`);
    assert.deepEqual(events, Array.from({ length: connections }, () => 'flood'));
  },
);
