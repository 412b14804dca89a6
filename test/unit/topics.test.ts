import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KizunaError } from '../../mesh/errors.js';
import { ROOT, assertSegment, isSegment, parseNodeStatusTopic, parseRequestTopic, parseShardResultTopic, parseShardTopic, topics } from '../../mesh/topics.js';

const BAD_SEGMENTS: [string, string][] = [
  ['empty', ''],
  ['129 chars', 'a'.repeat(129)],
  ['leading dot', '.hidden'],
  ['leading dash', '-x'],
  ['double dot', 'a..b'],
  ['only dots', '..'],
  ['slash', 'a/b'],
  ['plus', 'a+b'],
  ['hash', 'a#b'],
  ['lone plus', '+'],
  ['lone hash', '#'],
  ['space', 'a b'],
  ['leading space', ' a'],
  ['trailing newline', 'a\n'],
  ['unicode letter', 'caf\u00e9'],
  ['emoji', 'model\u{1F600}'],
  ['NUL', 'a\u0000b'],
  ['dollar', '$SYS'],
];

test('topic builders give the documented layout', () => {
  assert.equal(ROOT, 'kizuna/v1');
  assert.equal(topics.request('home', 'digits', 'app', 'r-1'), 'kizuna/v1/home/req/digits/app/r-1');
  assert.equal(topics.allRequests('home'), 'kizuna/v1/home/req/#');
  assert.equal(topics.reply('home', 'app', 'r-1'), 'kizuna/v1/home/res/app/r-1');
  assert.equal(topics.repliesTo('home', 'app'), 'kizuna/v1/home/res/app/+');
  assert.equal(topics.nodeStatus('home', 'pi-1'), 'kizuna/v1/home/node/pi-1/status');
  assert.equal(topics.allNodeStatus('home'), 'kizuna/v1/home/node/+/status');
});

test('isSegment accepts every allowed character, up to 128 of them', () => {
  for (const ok of ['a', '0', '_', 'A_z-0.9:x', 'digits-int8', 'v1.0.0', 'x.', 'a.b.c', 'a'.repeat(128), '_hidden', 'n:1']) {
    assert.equal(isSegment(ok), true, JSON.stringify(ok));
    assert.doesNotThrow(() => assertSegment('model', ok));
  }
});

for (const [why, bad] of BAD_SEGMENTS) {
  test(`isSegment and assertSegment refuse a segment with ${why}`, () => {
    assert.equal(isSegment(bad), false);
    assert.throws(
      () => assertSegment('client', bad),
      (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_BAD_NAME' && e.message.startsWith('client '),
    );
  });
}

test('assertSegment quotes at most 140 characters of a long bad value', () => {
  assert.throws(
    () => assertSegment('model', 'x'.repeat(10_000)),
    (e: unknown) => e instanceof KizunaError && !e.message.includes('x'.repeat(141)) && e.message.includes('x'.repeat(140)),
  );
});

test('topics.request refuses each unsafe part and names it', () => {
  const cases: [string, string[]][] = [
    ['mesh', ['a/b', 'm', 'c', 'i']],
    ['model', ['home', 'a+b', 'c', 'i']],
    ['client', ['home', 'm', '#', 'i']],
    ['request id', ['home', 'm', 'c', '']],
  ];
  for (const [kind, [mesh, model, client, id]] of cases) {
    assert.throws(
      () => topics.request(mesh!, model!, client!, id!),
      (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_BAD_NAME' && e.message.startsWith(`${kind} `),
      kind,
    );
  }
});

test('parseRequestTopic reads a valid topic, and what it parses builds the same topic back', () => {
  const topic = topics.request('home', 'digits-int8', 'app_1', 'req:42.a');
  const parsed = parseRequestTopic(topic);
  assert.deepEqual(parsed, { ok: true, topic: { mesh: 'home', model: 'digits-int8', client: 'app_1', id: 'req:42.a' } });
  assert.ok(parsed.ok);
  const { mesh, model, client, id } = parsed.topic;
  assert.equal(topics.request(mesh, model, client, id), topic);
  // The reply topic is the one the client subscribed to with repliesTo.
  const reply = topics.reply(mesh, client, id);
  assert.equal(reply, 'kizuna/v1/home/res/app_1/req:42.a');
  assert.equal(topics.repliesTo(mesh, client).replace(/\+$/, id), reply);
});

test('parseRequestTopic: not a request topic is KZ_ERR_BAD_TOPIC with no reply topic', () => {
  for (const topic of [
    'kizuna/v2/home/req/digits/app/1', // wrong version
    'kizuna/v1x/home/req/digits/app/1',
    'other/v1/home/req/digits/app/1', // wrong root
    'kizuna/v1/home/res/digits/app/1', // wrong kind
    'kizuna/v1/home/node/digits/app/1',
    'kizuna/v1/home/req/digits/app', // too few levels
    'kizuna/v1/home/req/app',
    'kizuna/v1/home/req',
    'kizuna/v1',
    '',
    'kizuna/v1/b+d/req/digits/app/1', // bad mesh
    'kizuna/v1//req/digits/app/1',
  ]) {
    const parsed = parseRequestTopic(topic);
    assert.equal(parsed.ok, false, topic);
    assert.ok(!parsed.ok);
    assert.equal(parsed.error.code, 'KZ_ERR_BAD_TOPIC', topic);
    assert.equal(parsed.replyTo, undefined, topic);
  }
});

test('parseRequestTopic: a bad client or id is KZ_ERR_BAD_NAME with no reply topic', () => {
  for (const topic of [
    'kizuna/v1/home/req/digits/a b/1',
    'kizuna/v1/home/req/digits/app/..',
    'kizuna/v1/home/req/digits//1',
    'kizuna/v1/home/req/digits/app/',
    'kizuna/v1/home/req/digits/app/-1',
    'kizuna/v1/home/req/digits/app/' + 'i'.repeat(129),
  ]) {
    const parsed = parseRequestTopic(topic);
    assert.ok(!parsed.ok, topic);
    assert.equal(parsed.error.code, 'KZ_ERR_BAD_NAME', topic);
    assert.equal(parsed.replyTo, undefined, topic);
  }
});

test('parseRequestTopic: a bad model or extra levels is KZ_ERR_BAD_NAME that can still be answered', () => {
  const cases: [string, string][] = [
    ['kizuna/v1/home/req/bad..model/app/7', 'bad..model'],
    ['kizuna/v1/home/req/.x/app/7', '.x'],
    ['kizuna/v1/home/req//app/7', ''],
    ['kizuna/v1/home/req/vision/resnet/app/7', 'vision/resnet'],
    ['kizuna/v1/home/req/a/b/c/app/7', 'a/b/c'],
  ];
  for (const [topic, model] of cases) {
    const parsed = parseRequestTopic(topic);
    assert.ok(!parsed.ok, topic);
    assert.equal(parsed.error.code, 'KZ_ERR_BAD_NAME', topic);
    assert.deepEqual(parsed.replyTo, { mesh: 'home', client: 'app', id: '7' }, topic);
    assert.ok(parsed.error.message.includes(JSON.stringify(model)), parsed.error.message);
    assert.equal(topics.reply(parsed.replyTo!.mesh, parsed.replyTo!.client, parsed.replyTo!.id), 'kizuna/v1/home/res/app/7');
  }
});

test('parseRequestTopic quotes at most 200 characters of a long topic', () => {
  const parsed = parseRequestTopic('x/'.repeat(5000));
  assert.ok(!parsed.ok);
  assert.ok(parsed.error.message.length < 260, `${parsed.error.message.length} chars`);
});

test('parseNodeStatusTopic returns the node id of a status topic only', () => {
  assert.equal(parseNodeStatusTopic(topics.nodeStatus('home', 'pi-1')), 'pi-1');
  assert.equal(parseNodeStatusTopic('kizuna/v1/other/node/n2/status'), 'n2');
  for (const topic of [
    'kizuna/v1/home/node/pi-1', // no status level
    'kizuna/v1/home/node/pi-1/status/x',
    'kizuna/v1/home/node/pi-1/state',
    'kizuna/v1/home/nodes/pi-1/status',
    'kizuna/v2/home/node/pi-1/status',
    'other/v1/home/node/pi-1/status',
    'kizuna/v1/home/req/pi-1/status',
    '',
  ]) {
    assert.equal(parseNodeStatusTopic(topic), undefined, topic);
  }
});

test(
  'parseNodeStatusTopic refuses an empty or unsafe node id',
  () => {
    assert.equal(parseNodeStatusTopic('kizuna/v1/home/node//status'), undefined);
    assert.equal(parseNodeStatusTopic('kizuna/v1/home/node/a..b/status'), undefined);
  },
);

test('a shard has one spelling: ranges are start < end, decimal, without leading zeros', () => {
  const ref = { model: 'digits', client: 'cam', job: 'j1', start: 0, end: 12 };
  assert.deepEqual(parseShardTopic(topics.shard('home', 'pi-1', ref)), { mesh: 'home', node: 'pi-1', ...ref });
  assert.deepEqual(parseShardResultTopic(topics.shardResult('home', ref)), { client: 'cam', job: 'j1', start: 0, end: 12 });
  for (const range of ['00-12', '0-012', '01-2', '5-5', '6-5', '-1-2', '1e3-2000', '0x1-2', '1-', '1']) {
    assert.equal(parseShardTopic(`kizuna/v1/home/shard/pi-1/digits/cam/j1/${range}`), undefined, range);
    assert.equal(parseShardResultTopic(`kizuna/v1/home/shardres/cam/j1/${range}`), undefined, range);
  }
});
