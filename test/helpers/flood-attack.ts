/**
 * The flood attackers, in a process of their own (forked by flood-lab.ts) so the legitimate app's
 * event loop, where latency is measured, never runs attack code. Every attacker is bounded in count
 * and in time, and talks to 127.0.0.1 only:
 *
 *   unauth     loops connecting without a token, with garbage, with a token of another mesh key or
 *              mesh name, with a tampered signature (each should get CONNACK 5); over TLS when the
 *              broker takes TLS only, and then every other time in plain MQTT too (closed at once);
 *              plus sockets that connect and never send a byte, held until the end
 *   flooder    an app with a valid token writing valid requests as fast as its socket takes them,
 *              well past --publish-burst (it should be cut off), reconnecting after each cut (at
 *              once, or at most every flooderReconnectMs); a second connection of it only listens
 *              to its answers, to count what the broker took
 *   paced      an app with a valid token publishing valid requests just under its allowance (it is
 *              not cut off; it should get KZ_ERR_OVERLOADED once its 1,000 waiting are queued)
 *   oversize   packets over --max-packet-bytes (an oversized CONNECT before any token, an app's
 *              oversized PUBLISH) and a malformed remaining length (each should be cut off)
 *   malformed  an app with a valid token sending bad payloads that rotate through the cases of
 *              flood-cases.ts, each with the error code it should get back
 *   acl        an app with a valid token subscribing to another app's answers, to `#`, to every
 *              request (SUBACK 0x80), and publishing tasks, another app's requests, a forged
 *              answer, a board's status, the broker record, a revocation list, $SYS (closed)
 *
 * Run as `node flood-attack.js --flood-attack` with an IPC channel: it waits for an AttackPlan,
 * prepares, says 'ready', runs on 'go' until the plan's duration is over, sends its AttackStats
 * and exits.
 */
import crypto from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { badCases, type BadCase } from './flood-cases.js';
import { RawConn, publishPacket, subscribePacket, type WireTls } from './flood-wire.js';
import { remainingLength } from './raw-mqtt.js';
import { signToken } from '../../mesh/tokens.js';

export interface AttackPlan {
  port: number;
  mesh: string;
  /** The agent's node id (its task topic, its status). */
  node: string;
  /** The legitimate app's client name (others' requests and answers are its). */
  victim: string;
  tokens: { flooder: string; paced: string; oversize: string; malformed: string; acl: string };
  /** A valid request payload (a KZB1 digit), base64. */
  request: string;
  limits: { maxPacketBytes: number; maxPayloadBytes: number; publishPerSecond: number; publishBurst: number };
  durationMs: number;
  /** The mesh CA when the broker takes MQTT over TLS only (a mesh with credentials and certificates). */
  tls?: WireTls;
  /** Which attackers run (all by default). */
  only?: AttackerName[];
  unauthLoops?: number;
  silentSockets?: number;
  malformedPerSecond?: number;
  /**
   * The flooder starts a new connection at most this often (ms; 0: at once after each cut, the
   * default). 1000 is what a stock mqtt.js client does (reconnectPeriod).
   */
  flooderReconnectMs?: number;
}

export type AttackerName = 'unauth' | 'flooder' | 'paced' | 'oversize' | 'malformed' | 'acl';

export interface AttackStats {
  elapsedMs: number;
  /** Every MQTT packet the attackers wrote (CONNECT, PUBLISH, SUBSCRIBE), and per second. */
  packets: number;
  packetsPerSecond: number;
  unauth: {
    attempts: number; refused: number; accepted: number; closedWithoutConnack: number; timeouts: number;
    /** Plain MQTT to a broker that takes TLS only: closed before any CONNACK. */
    plainAttempts: number; plainClosed: number;
    silentOpened: number; silentStillOpen: number;
  };
  flooder: {
    cycles: number; connectRefused: number; published: number; cutOff: number; notCut: number;
    /** Replies to the flooder's requests seen by a connection of its own that only listens: a floor of what the broker took. */
    replies: number;
  };
  paced: { published: number; replies: Record<string, number>; disconnects: number };
  oversize: { attempts: number; cutOff: number; notCut: number; refusedConnect: number };
  malformed: { sent: number; asExpected: number; unexpected: Record<string, number>; unanswered: number; disconnects: number };
  acl: {
    connections: number; connectRefused: number; subscribeRefused: number; subscribeGranted: number; publishClosed: number; publishNotClosed: number;
    /** Of publishClosed: the topics aedes's hook refuses before the access rules ($SYS, a wildcard), which the agent does not log. */
    publishClosedUnlogged: number;
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- the attackers

class Attack {
  readonly stats: AttackStats = {
    elapsedMs: 0, packets: 0, packetsPerSecond: 0,
    unauth: { attempts: 0, refused: 0, accepted: 0, closedWithoutConnack: 0, timeouts: 0, plainAttempts: 0, plainClosed: 0, silentOpened: 0, silentStillOpen: 0 },
    flooder: { cycles: 0, connectRefused: 0, published: 0, cutOff: 0, notCut: 0, replies: 0 },
    paced: { published: 0, replies: {}, disconnects: 0 },
    oversize: { attempts: 0, cutOff: 0, notCut: 0, refusedConnect: 0 },
    malformed: { sent: 0, asExpected: 0, unexpected: {}, unanswered: 0, disconnects: 0 },
    acl: { connections: 0, connectRefused: 0, subscribeRefused: 0, subscribeGranted: 0, publishClosed: 0, publishNotClosed: 0, publishClosedUnlogged: 0 },
  };
  private end = 0;
  private readonly request: Buffer;
  private readonly foreignKey = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

  constructor(private readonly plan: AttackPlan) {
    this.request = Buffer.from(plan.request, 'base64');
  }

  private get running(): boolean {
    return Date.now() < this.end;
  }

  private topic(kind: string, ...rest: string[]): string {
    return ['kizuna/v1', this.plan.mesh, kind, ...rest].join('/');
  }

  async run(): Promise<AttackStats> {
    const start = Date.now();
    this.end = start + this.plan.durationMs;
    const on = (name: AttackerName) => !this.plan.only || this.plan.only.includes(name);
    const tasks: Promise<unknown>[] = [];
    if (on('unauth')) {
      tasks.push(this.silent());
      for (let i = 0; i < (this.plan.unauthLoops ?? 4); i++) tasks.push(this.unauth(i));
    }
    if (on('flooder')) tasks.push(this.flooder());
    if (on('paced')) tasks.push(this.paced());
    if (on('oversize')) tasks.push(this.oversize());
    if (on('malformed')) tasks.push(this.malformed());
    if (on('acl')) tasks.push(this.acl());
    await Promise.all(tasks);
    this.stats.elapsedMs = Date.now() - start;
    this.stats.packetsPerSecond = Math.round(this.stats.packets / (this.plan.durationMs / 1000));
    return this.stats;
  }

  /** Connects raw; the CONNACK code or 'closed'/'timeout'. Counts the packet. */
  private async rawConnect(o: { clientId: string; username?: string; password?: string }, plain = false): Promise<{ conn: RawConn; rc: number | 'closed' | 'timeout' }> {
    const conn = await RawConn.open(this.plan.port, plain ? undefined : this.plan.tls);
    this.stats.packets++;
    return { conn, rc: await conn.connect(o, 3000) };
  }

  // (a) -------------------------------------------------------------- no or bad credentials

  private unauthCredentials(i: number): { username?: string; password?: string } {
    const claims = { mesh: this.plan.mesh, kind: 'app' as const, sub: this.plan.victim };
    switch (i % 6) {
      case 0: return {};
      case 1: return { username: this.plan.victim };
      case 2: return { username: 'x', password: 'not a token' };
      case 3: return { username: this.plan.victim, password: signToken(claims, this.foreignKey) };
      case 4: return { username: 'x', password: signToken({ ...claims, mesh: 'elsewhere' }, this.foreignKey) };
      default: {
        // A well-formed token of this app with its signature flipped.
        const t = signToken(claims, this.foreignKey);
        return { username: this.plan.victim, password: t.slice(0, -4) + (t.endsWith('AAAA') ? 'BBBB' : 'AAAA') };
      }
    }
  }

  private async unauth(loop: number): Promise<void> {
    const s = this.stats.unauth;
    for (let i = loop; this.running && s.attempts + s.plainAttempts < 50_000; i += this.plan.unauthLoops ?? 4) {
      // A broker that takes TLS only is also tried in plain MQTT, every other time.
      const plain = Boolean(this.plan.tls) && i % 8 >= 4;
      if (plain) s.plainAttempts++;
      else s.attempts++;
      let conn: RawConn | undefined;
      try {
        const r = await this.rawConnect({ clientId: `anon-${loop}-${i}`, ...this.unauthCredentials(i) }, plain);
        conn = r.conn;
        if (plain) {
          if (r.rc === 'closed') s.plainClosed++;
          else if (r.rc === 0) s.accepted++;
          continue;
        }
        if (r.rc === 5) s.refused++;
        else if (r.rc === 0) s.accepted++;
        else if (r.rc === 'timeout') s.timeouts++;
        else s.closedWithoutConnack++;
      } catch {
        if (plain) s.plainClosed++;
        else s.closedWithoutConnack++;
      } finally {
        conn?.destroy();
      }
    }
  }

  /** Sockets that connect and never send a byte, held until the end. */
  private async silent(): Promise<void> {
    const conns: RawConn[] = [];
    for (let i = 0; i < (this.plan.silentSockets ?? 50) && this.running; i++) {
      conns.push(await RawConn.open(this.plan.port));
      this.stats.unauth.silentOpened++;
    }
    await sleep(Math.max(0, this.end - Date.now()));
    this.stats.unauth.silentStillOpen = conns.filter((c) => c.isOpen).length;
    for (const c of conns) c.destroy();
  }

  // (b) -------------------------------------------------------------- valid requests, flooded

  private async flooder(): Promise<void> {
    const s = this.stats.flooder;
    const { publishBurst } = this.plan.limits;
    // Well past the burst in one go: far more than the guard lets one connection publish.
    const perCycle = publishBurst + 1000;
    // Its answers (KZ_ERR_OVERLOADED mostly) on a connection that never publishes, so never cut.
    const watch = await this.mqttClient('flooder', this.plan.tokens.flooder, 'kizuna-flooder-watch');
    watch.on('message', () => s.replies++);
    await watch.subscribeAsync(this.topic('res', 'flooder', '+'), { qos: 0 });
    const every = this.plan.flooderReconnectMs ?? 0;
    for (let cycle = 0, next = Date.now(); this.running && cycle < 200; cycle++, next += every) {
      if (next > Date.now()) await sleep(Math.min(next, this.end) - Date.now());
      if (!this.running) break;
      s.cycles++;
      const { conn, rc } = await this.rawConnect({ clientId: `kizuna-flooder-${cycle}`, username: 'flooder', password: this.plan.tokens.flooder });
      try {
        if (rc !== 0) {
          s.connectRefused++;
          continue;
        }
        // Written in slices of 250 packets, each slice only when the socket took the last.
        for (let i = 0; i < perCycle && conn.isOpen; i += 250) {
          const slice: Buffer[] = [];
          for (let j = i; j < Math.min(perCycle, i + 250); j++) slice.push(publishPacket(this.topic('req', 'digits', 'flooder', `c${cycle}-${j}`), this.request));
          if (!(await conn.write(Buffer.concat(slice)))) break;
          s.published += slice.length;
          this.stats.packets += slice.length;
        }
        if (await conn.closedWithin(3000)) s.cutOff++;
        else s.notCut++;
      } finally {
        conn.destroy();
      }
    }
    await sleep(500); // the replies on their way
    await watch.endAsync(true);
  }

  private async paced(): Promise<void> {
    const s = this.stats.paced;
    const perSecond = Math.floor(this.plan.limits.publishPerSecond * 0.8);
    const client = await this.mqttClient('paced', this.plan.tokens.paced);
    const onClose = () => s.disconnects++;
    client.on('close', onClose);
    client.on('message', (_t, payload) => {
      let code = 'unreadable';
      try {
        const r = JSON.parse(payload.toString()) as { ok?: boolean; error?: { code?: string } };
        code = r.ok ? 'ok' : r.error?.code ?? 'no code';
      } catch {
        code = payload[0] === 0x4b ? 'ok' : 'unreadable'; // a KZB1 result
      }
      s.replies[code] = (s.replies[code] ?? 0) + 1;
    });
    await client.subscribeAsync(this.topic('res', 'paced', '+'), { qos: 0 });
    const tickMs = 20;
    const start = Date.now();
    for (let n = 0; this.running && n < 1_000_000; ) {
      // As many as the rate allows by now: no drift, no burst beyond one tick.
      const due = Math.floor(((Date.now() - start) / 1000) * perSecond);
      for (; n < due && client.connected; n++) {
        client.publish(this.topic('req', 'digits', 'paced', `p${n}`), this.request, { qos: 0 });
        s.published++;
        this.stats.packets++;
      }
      await sleep(tickMs);
    }
    await sleep(300); // the last replies
    client.off('close', onClose);
    await client.endAsync(true);
  }

  // (c) -------------------------------------------------------------- oversized and malformed packets

  private async oversize(): Promise<void> {
    const s = this.stats.oversize;
    const { maxPacketBytes } = this.plan.limits;
    for (let i = 0; this.running && s.attempts < 2000; i++) {
      s.attempts++;
      let conn: RawConn | undefined;
      try {
        conn = await RawConn.open(this.plan.port, this.plan.tls);
        if (i % 3 === 0) {
          // A CONNECT claiming more than the limit, before any token is checked.
          await conn.write(Buffer.concat([Buffer.from([0x10]), Buffer.from([0xff, 0xff, 0xff, 0x7f])]));
          this.stats.packets++;
        } else {
          const rc = await conn.connect({ clientId: `kizuna-big-${i}`, username: 'big', password: this.plan.tokens.oversize });
          this.stats.packets++;
          if (rc !== 0) {
            s.refusedConnect++;
            continue;
          }
          if (i % 3 === 1) {
            // A PUBLISH one KiB over the limit, streamed in 64 KiB pieces until the broker cuts.
            const head = Buffer.concat([Buffer.from([0x30]), remainingLength(maxPacketBytes + 1024)]);
            await conn.write(head);
            this.stats.packets++;
            for (let sent = 0; sent < maxPacketBytes + 1024 && conn.isOpen; sent += 65536) await conn.write(Buffer.alloc(65536, 0x41));
          } else {
            // A remaining length of five continuation bytes: not MQTT.
            await conn.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
            this.stats.packets++;
          }
        }
        if (await conn.closedWithin(2000)) s.cutOff++;
        else s.notCut++;
      } catch {
        s.cutOff++; // refused while connecting: closed all the same
      } finally {
        conn?.destroy();
      }
    }
  }

  // (d) -------------------------------------------------------------- malformed payloads

  private async malformed(): Promise<void> {
    const s = this.stats.malformed;
    const cases = badCases(this.plan.limits);
    const expected = new Map<string, BadCase>();
    const client = await this.mqttClient('malformed', this.plan.tokens.malformed);
    const onClose = () => s.disconnects++;
    client.on('close', onClose);
    const prefix = this.topic('res', 'malformed', '');
    client.on('message', (topic, payload) => {
      const id = topic.slice(prefix.length);
      const c = expected.get(id);
      if (!c) return;
      expected.delete(id);
      let code = 'unreadable';
      try {
        const r = JSON.parse(payload.toString()) as { ok?: boolean; error?: { code?: string } };
        code = r.ok ? 'ok' : r.error?.code ?? 'no code';
      } catch {
        /* counted as unreadable */
      }
      if (code === c.code) s.asExpected++;
      else s.unexpected[`${c.name}: ${code}`] = (s.unexpected[`${c.name}: ${code}`] ?? 0) + 1;
    });
    await client.subscribeAsync(this.topic('res', 'malformed', '+'), { qos: 1 });
    const every = 1000 / (this.plan.malformedPerSecond ?? 40);
    for (let n = 0; this.running && n < 100_000; n++) {
      const c = cases[n % cases.length]!;
      const id = `m${n}`;
      expected.set(id, c);
      client.publish(`kizuna/v1/${this.plan.mesh}/req/${c.model}/malformed/${id}`, c.payload, { qos: 1 });
      s.sent++;
      this.stats.packets++;
      await sleep(every);
    }
    // The last answers: a deadline, not a guess.
    for (let waited = 0; expected.size && waited < 5000; waited += 50) await sleep(50);
    s.unanswered = expected.size;
    client.off('close', onClose);
    await client.endAsync(true);
  }

  // (e) -------------------------------------------------------------- access rules

  private async acl(): Promise<void> {
    const s = this.stats.acl;
    const { mesh, node, victim } = this.plan;
    const forbidden: { topic: string; retain?: boolean; payload?: Buffer; unlogged?: true }[] = [
      { topic: this.topic('task', node, 'digits', victim, 'x1'), payload: this.request }, // handing out work
      { topic: this.topic('req', 'digits', victim, 'x2'), payload: this.request }, // a request in another app's name
      { topic: this.topic('res', victim, 'x3'), payload: Buffer.from('{"v":1,"id":"x3","ok":true}') }, // a forged answer
      { topic: this.topic('node', node, 'status'), retain: true, payload: Buffer.from('{"online":false}') }, // a board's status
      { topic: this.topic('broker'), retain: true }, // claiming the broker role
      { topic: this.topic('revoked'), retain: true, payload: Buffer.from('{"list":"{}","sig":"AAAA"}') }, // a forged revocation list
      { topic: this.topic('shard', node, 'digits', victim, 'j', '0-1') }, // a shard
      { topic: '$SYS/broker/x', unlogged: true },
      { topic: `kizuna/v1/${mesh}/req/+/acl/x`, unlogged: true }, // a wildcard in a topic name
    ];
    for (let i = 0; this.running && s.connections < 5000; i++) {
      let conn: RawConn | undefined;
      try {
        const r = await this.rawConnect({ clientId: `kizuna-acl-${i}`, username: 'acl', password: this.plan.tokens.acl });
        conn = r.conn;
        s.connections++;
        if (r.rc !== 0) {
          s.connectRefused++;
          continue;
        }
        const suback = conn.next((p) => p.type === 9, 2000);
        await conn.write(subscribePacket(1, [this.topic('res', victim, '+'), '#', this.topic('req', '#'), this.topic('task', '#')]));
        this.stats.packets++;
        const sa = await suback;
        if (typeof sa !== 'string') for (const code of sa.body.subarray(2)) code === 0x80 ? s.subscribeRefused++ : s.subscribeGranted++;
        const f = forbidden[i % forbidden.length]!;
        await conn.write(publishPacket(f.topic, f.payload ?? Buffer.from('x'), { qos: 1, id: 7, ...(f.retain ? { retain: true } : {}) }));
        this.stats.packets++;
        if (await conn.closedWithin(2000)) {
          s.publishClosed++;
          if (f.unlogged) s.publishClosedUnlogged++;
        } else s.publishNotClosed++;
      } catch {
        s.connectRefused++;
      } finally {
        conn?.destroy();
      }
    }
  }

  private async mqttClient(name: string, token: string, clientId = `kizuna-${name}`): Promise<MqttClient> {
    this.stats.packets++;
    const tls = this.plan.tls ? { ca: this.plan.tls.ca, rejectUnauthorized: true, checkServerIdentity: () => undefined } : {};
    return mqtt.connectAsync(`${this.plan.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.plan.port}`, {
      protocolVersion: 4, clientId, username: name, password: token, reconnectPeriod: 500, connectTimeout: 5000, keepalive: 30, ...tls,
    });
  }
}

// ---------------------------------------------------------------- as a child process

if (process.argv.includes('--flood-attack') && process.send) {
  process.once('message', (plan: AttackPlan) => {
    const attack = new Attack(plan);
    process.send!({ type: 'ready' });
    process.once('message', () => {
      attack.run().then(
        (stats) => process.send!({ type: 'stats', stats }, () => process.disconnect()),
        (err: Error) => process.send!({ type: 'error', message: err.stack ?? String(err) }, () => process.disconnect()),
      );
    });
  });
}
