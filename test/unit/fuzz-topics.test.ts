/**
 * Property-based fuzzing (fast-check) of the topic registry (mesh/topics.ts): name segments, every
 * parser on arbitrary and near-valid topics ('+', '#', '..', empty levels, unicode, wrong
 * kinds and lengths), builder -> parser round trips, and MQTT wildcard matching against a
 * reference. Parsers never throw: they return undefined, or an error value with a code.
 * Seeds are fixed, so a failure reproduces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KizunaError } from '../../mesh/errors.js';
import {
  ROOT, assertSegment, isSegment, parseJobTopic, parseNodeStatusTopic, parseReplyTopic, parseRequestTopic, parseShardResultTopic,
  parseShardTopic, parseTaskTopic, topicMatches, topics,
} from '../../mesh/topics.js';

const SLOW_MS = 1000;
const check = <Ts>(property: fc.IRawProperty<Ts>, seed: number, numRuns: number) => fc.assert(property, { seed, numRuns, includeErrorInReport: true });

/** f's value; a throw or a slow call fails the property. */
function total<T>(f: () => T): T {
  const started = performance.now();
  let value: T;
  try {
    value = f();
  } catch (err) {
    throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
  }
  const ms = performance.now() - started;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return value;
}

// ---------------------------------------------------------------- generators

const FIRST = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_'];
const REST = [...FIRST, '.', ':', '-'];
/** The segment rule, written out: 1-128 of A-Z a-z 0-9 _ . : -, not starting with '.' or '-', no '..'. */
const isSegmentRef = (s: string) =>
  s.length >= 1 && s.length <= 128 && FIRST.includes(s[0]!) && [...s].every((c) => REST.includes(c)) && !s.includes('..');

/** Valid segments, short and up to the 128-character limit. */
const segmentArb = fc.oneof(
  fc.tuple(fc.constantFrom(...FIRST), fc.string({ unit: fc.constantFrom(...REST), maxLength: 12 })).map(([a, b]) => (a + b).replace(/\.{2,}/g, '.')),
  fc.tuple(fc.constantFrom(...FIRST), fc.string({ unit: fc.constantFrom(...REST), minLength: 110, maxLength: 127 })).map(([a, b]) => (a + b).replace(/\.{2,}/g, '.')),
  fc.constantFrom('a', '0', '_', 'digits-int8', 'v1.0.0', 'x.', 'n:1', 'a'.repeat(128), 'req', 'res', 'status', '0-1'),
);
/** Near-segments: the segment alphabet plus what breaks it, lengths around 128. */
const nearSegmentArb = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'aZ09_.:-/+#$ \n\u0000\u00e9\u{1F600}'), maxLength: 8 }),
  fc.string({ unit: fc.constantFrom('a', '.', '-'), minLength: 120, maxLength: 136 }),
  fc.string({ maxLength: 10 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.constantFrom('', '.', '..', 'a..b', '.a', '-a', 'a'.repeat(129), 'a/b', '+', '#', 'a\n', 'caf\u00e9', '$SYS', 'a'.repeat(100_000), 'a.'.repeat(50_000)),
);
const anySegmentArb = fc.oneof(segmentArb, nearSegmentArb);

const KINDS = ['req', 'res', 'job', 'jobres', 'task', 'shard', 'shardres', 'node', 'broker', 'status', ''];
const rangeArb = fc.oneof(
  fc.tuple(fc.nat(999_999_998), fc.integer({ min: 1, max: 1000 })).map(([s, n]) => `${s}-${Math.min(s + n, 999_999_999)}`),
  fc.tuple(fc.nat(2e9), fc.nat(2e9)).map(([a, b]) => `${a}-${b}`),
  fc.constantFrom('0-1', '1-0', '0-0', '01-2', '00-5', '999999999-1000000000', '5-', '-5', '1--2', '+1-2', '1-2 ', '\u0661-\u0662', '1e3-2e3'),
);
const levelArb = fc.oneof(
  { weight: 5, arbitrary: segmentArb },
  { weight: 3, arbitrary: nearSegmentArb },
  { weight: 2, arbitrary: fc.constantFrom(...KINDS, 'kizuna', 'v1') },
  { weight: 1, arbitrary: rangeArb },
);
const refArb = fc.record({ mesh: segmentArb, node: segmentArb, model: segmentArb, client: segmentArb, id: segmentArb });
const shardArb = fc.tuple(refArb, fc.nat(999_999_998), fc.integer({ min: 1, max: 100_000 }))
  .map(([r, start, n]) => ({ ...r, job: r.id, start, end: Math.min(start + n, 999_999_999) }));
type Parts = { mesh: string; node: string; model: string; client: string; id: string; job: string; start: number; end: number };
const BUILDERS: Record<string, (p: Parts) => string> = {
  req: (p) => topics.request(p.mesh, p.model, p.client, p.id),
  job: (p) => topics.job(p.mesh, p.model, p.client, p.job),
  res: (p) => topics.reply(p.mesh, p.client, p.id),
  task: (p) => topics.task(p.mesh, p.node, p),
  jobres: (p) => topics.jobResults(p.mesh, p.client, p.job),
  shard: (p) => topics.shard(p.mesh, p.node, p),
  shardres: (p) => topics.shardResult(p.mesh, p),
  status: (p) => topics.nodeStatus(p.mesh, p.node),
  broker: (p) => topics.brokerRecord(p.mesh),
};
/** A valid topic of any kind with 0-2 levels replaced, deleted or inserted. */
const nearTopicArb = fc
  .tuple(shardArb, fc.constantFrom(...Object.keys(BUILDERS)), fc.array(fc.record({ op: fc.constantFrom('replace', 'delete', 'insert'), at: fc.nat(), level: levelArb }), { maxLength: 2 }))
  .map(([parts, kind, edits]) => {
    const levels = BUILDERS[kind]!(parts).split('/');
    for (const e of edits) {
      const at = e.at % (levels.length + 1);
      if (e.op === 'insert') levels.splice(at, 0, e.level);
      else if (at < levels.length) levels.splice(at, 1, ...(e.op === 'replace' ? [e.level] : []));
    }
    return levels.join('/');
  });
/** Near-valid topics of every kind, topics under kizuna/v1 (or near it) with random levels, and any strings. */
const topicArb = fc.oneof(
  { weight: 6, arbitrary: nearTopicArb },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(ROOT, ROOT, ROOT, 'kizuna/v2', 'kizuna', 'Kizuna/v1', '', '/kizuna/v1'), levelArb, fc.constantFrom(...KINDS), fc.array(levelArb, { maxLength: 7 }), fc.constantFrom('', '', '/status', '/', '//'))
      .map(([root, mesh, kind, rest, tail]) => [root, mesh, kind, ...rest].join('/') + tail),
  },
  { weight: 1, arbitrary: fc.array(levelArb, { maxLength: 10 }).map((l) => l.join('/')) },
  { weight: 1, arbitrary: fc.string() },
);

const RUNS = { segment: 10_000, builders: 5_000, parsers: 20_000, matchRef: 8_000, matchAny: 3_000 };

// ---------------------------------------------------------------- segments

test('isSegment is the documented rule for any string, and assertSegment throws KZ_ERR_BAD_NAME exactly when it is false', () => {
  check(fc.property(anySegmentArb, (s) => {
    const ok = total(() => isSegment(s));
    assert.equal(ok, isSegmentRef(s));
    if (ok) assert.ok(!/[/+#]/.test(s) && s !== '.' && s !== '..', 'a segment is one topic level, never a wildcard');
    const started = performance.now();
    try {
      assertSegment('model', s);
      assert.ok(ok, 'assertSegment accepted a bad name');
    } catch (err) {
      assert.ok(!ok, 'assertSegment refused a good name');
      assert.ok(err instanceof KizunaError && err.code === 'KZ_ERR_BAD_NAME', String(err));
      assert.ok(err.message.length < 400, 'the message quotes at most 140 characters of the name');
    }
    assert.ok(performance.now() - started < SLOW_MS);
  }), 0x7001, RUNS.segment);
});

// ---------------------------------------------------------------- builders -> parsers

test('every topic a builder makes parses back to its parts, matches its subscription, and no other parser takes it', () => {
  check(fc.property(shardArb, segmentArb, (s, other) => {
    const { mesh, node, model, client, id, job, start, end } = s;
    const req = topics.request(mesh, model, client, id);
    const jobTopic = topics.job(mesh, model, client, job);
    const built = {
      req, job: jobTopic,
      res: topics.reply(mesh, client, id),
      task: topics.task(mesh, node, { model, client, id }),
      jobres: topics.jobResults(mesh, client, job),
      shard: topics.shard(mesh, node, { model, client, job, start, end }),
      shardres: topics.shardResult(mesh, { client, job, start, end }),
      status: topics.nodeStatus(mesh, node),
      broker: topics.brokerRecord(mesh),
    };
    assert.deepEqual(parseRequestTopic(req), { ok: true, topic: { mesh, model, client, id } });
    assert.deepEqual(parseJobTopic(jobTopic), { ok: true, topic: { mesh, model, client, id: job } });
    assert.deepEqual(parseReplyTopic(built.res), { client, id });
    assert.deepEqual(parseTaskTopic(built.task), { mesh, node, model, client, id });
    assert.deepEqual(parseShardTopic(built.shard), { mesh, node, model, client, job, start, end });
    assert.deepEqual(parseShardResultTopic(built.shardres), { client, job, start, end });
    assert.equal(parseNodeStatusTopic(built.status), node);

    const subscriptions: [string, string][] = [
      [topics.allRequests(mesh), req], [topics.allJobs(mesh), jobTopic], [topics.repliesTo(mesh, client), built.res], [topics.allReplies(mesh), built.res],
      [topics.tasksFor(mesh, node), built.task], [topics.jobResultsTo(mesh, client), built.jobres], [topics.shardsFor(mesh, node), built.shard],
      [topics.allShardResults(mesh), built.shardres], [topics.allNodeStatus(mesh), built.status], [topics.brokerRecord(mesh), built.broker],
    ];
    for (const [filter, topic] of subscriptions) {
      assert.ok(topicMatches(filter, topic), `${filter} matches ${topic}`);
      if (other !== mesh) assert.ok(!topicMatches(filter.replace(`${ROOT}/${mesh}/`, `${ROOT}/${other}/`), topic), 'no other mesh hears it');
    }

    // Each parser takes only its own kind of topic.
    for (const [kind, topic] of Object.entries(built)) {
      if (kind !== 'req') assert.equal(parseRequestTopic(topic).ok, false, `${kind} is no request`);
      if (kind !== 'job') assert.equal(parseJobTopic(topic).ok, false, `${kind} is no job`);
      if (kind !== 'res') assert.equal(parseReplyTopic(topic), undefined, `${kind} is no reply`);
      if (kind !== 'task') assert.equal(parseTaskTopic(topic), undefined, `${kind} is no task`);
      if (kind !== 'shard') assert.equal(parseShardTopic(topic), undefined, `${kind} is no shard`);
      if (kind !== 'shardres') assert.equal(parseShardResultTopic(topic), undefined, `${kind} is no shard result`);
      if (kind !== 'status') assert.equal(parseNodeStatusTopic(topic), undefined, `${kind} is no status`);
    }
  }), 0x7002, RUNS.builders);
});

test('topics.request and topics.job throw KZ_ERR_BAD_NAME exactly when a part is not a segment', () => {
  check(fc.property(fc.array(anySegmentArb, { minLength: 4, maxLength: 4 }), fc.boolean(), (parts, asJob) => {
    const [mesh, model, client, id] = parts as [string, string, string, string];
    const valid = parts.every(isSegmentRef);
    try {
      const topic = asJob ? topics.job(mesh, model, client, id) : topics.request(mesh, model, client, id);
      assert.ok(valid, `built ${topic.slice(0, 80)} from a bad name`);
    } catch (err) {
      assert.ok(!valid);
      assert.ok(err instanceof KizunaError && err.code === 'KZ_ERR_BAD_NAME', String(err));
    }
  }), 0x7003, RUNS.builders);
});

// ---------------------------------------------------------------- parsers on anything

test('every parser takes any topic without throwing, and what it accepts is exactly what the builders make', () => {
  check(fc.property(topicArb, (topic) => {
    const levels = topic.split('/');
    for (const [parse, builder] of [[parseRequestTopic, topics.request], [parseJobTopic, topics.job]] as const) {
      const r = total(() => parse(topic));
      if (r.ok) {
        const { mesh, model, client, id } = r.topic;
        assert.equal(builder(mesh, model, client, id), topic);
        continue;
      }
      assert.ok(r.error instanceof KizunaError && (r.error.code === 'KZ_ERR_BAD_TOPIC' || r.error.code === 'KZ_ERR_BAD_NAME'), r.error.code);
      assert.ok(r.error.message.length < 600);
      if (r.replyTo) {
        // Usable for an error reply: every part a segment, and they are the topic's own.
        assert.equal(r.error.code, 'KZ_ERR_BAD_NAME');
        assert.ok([r.replyTo.mesh, r.replyTo.client, r.replyTo.id].every(isSegmentRef));
        assert.deepEqual([r.replyTo.mesh, r.replyTo.client, r.replyTo.id], [levels[2], levels.at(-2), levels.at(-1)]);
      }
    }

    const task = total(() => parseTaskTopic(topic));
    if (task) assert.equal(topics.task(task.mesh, task.node, task), topic);

    const reply = total(() => parseReplyTopic(topic));
    if (reply) {
      assert.ok(isSegmentRef(reply.client) && isSegmentRef(reply.id));
      assert.equal(topics.reply(levels[2]!, reply.client, reply.id), topic);
    }

    const node = total(() => parseNodeStatusTopic(topic));
    if (node !== undefined) {
      assert.ok(isSegmentRef(node));
      assert.equal(topics.nodeStatus(levels[2]!, node), topic);
    }

    // Shard ranges: start < end, at most 9 digits each; "01-2" reads as 1-2 (same shard).
    const canonical = (t: string) => t.replace(/\/0*(\d+)-0*(\d+)$/, (_, a: string, b: string) => `/${Number(a)}-${Number(b)}`);
    const shard = total(() => parseShardTopic(topic));
    if (shard) {
      assert.ok([shard.mesh, shard.node, shard.model, shard.client, shard.job].every(isSegmentRef));
      assert.ok(Number.isSafeInteger(shard.start) && shard.start >= 0 && shard.start < shard.end && shard.end <= 999_999_999);
      assert.equal(topics.shard(shard.mesh, shard.node, shard), canonical(topic));
    }
    const shardres = total(() => parseShardResultTopic(topic));
    if (shardres) {
      assert.ok(isSegmentRef(shardres.client) && isSegmentRef(shardres.job));
      assert.ok(Number.isSafeInteger(shardres.start) && shardres.start >= 0 && shardres.start < shardres.end && shardres.end <= 999_999_999);
      assert.equal(topics.shardResult(levels[2]!, shardres), canonical(topic));
    }
  }), 0x7004, RUNS.parsers);
});

// ---------------------------------------------------------------- wildcard matching

/** MQTT matching as a regular expression: '+' any one level (empty too), a last '#' the parent and everything below. */
function matchesRef(filter: string, topic: string): boolean {
  const levels = filter.split('/');
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const hash = levels.at(-1) === '#';
  const body = (hash ? levels.slice(0, -1) : levels).map((l) => (l === '+' ? '[^/]*' : escape(l))).join('/');
  const pattern = hash ? (levels.length === 1 ? '.*' : `${body}(/.*)?`) : body;
  return new RegExp(`^${pattern}$`, 's').test(topic);
}

test('topicMatches agrees with MQTT wildcard matching on valid filters', () => {
  const level = fc.constantFrom('a', 'b', '', 'kizuna');
  const filterArb = fc.tuple(fc.array(fc.oneof(level, fc.constant('+')), { maxLength: 5 }), fc.boolean())
    .map(([ls, hash]) => (hash ? [...ls, '#'] : ls.length ? ls : ['a']).join('/'));
  const topicArb2 = fc.array(level, { minLength: 1, maxLength: 6 }).map((ls) => ls.join('/'));
  check(fc.property(filterArb, topicArb2, (filter, topic) => {
    assert.equal(topicMatches(filter, topic), matchesRef(filter, topic), `${filter} vs ${topic}`);
  }), 0x7005, RUNS.matchRef);
});

test('topicMatches takes any strings without throwing; a topic matches itself and "#"', () => {
  check(fc.property(topicArb, topicArb, (a, b) => {
    total(() => topicMatches(a, b));
    assert.ok(topicMatches('#', b));
    if (!/[+#]/.test(b)) assert.ok(topicMatches(b, b));
  }), 0x7006, RUNS.matchAny);
});
