import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prng } from '../helpers/prng.js';
import { PacketScanner, type GuardLimits } from '../../broker/packet-guard.js';
import { remainingLength } from '../helpers/raw-mqtt.js';

/** An MQTT packet: type nibble, remaining length (1-4 bytes), body. */
function packet(type: number, bodyLength: number): Buffer {
  return Buffer.concat([header(type, bodyLength), Buffer.alloc(bodyLength, 0xab)]);
}

/** A packet's fixed header alone: the type byte and the remaining length. */
function header(type: number, bodyLength: number): Buffer {
  return Buffer.concat([Buffer.from([(type << 4) | (type === 8 ? 2 : 0)]), remainingLength(bodyLength)]);
}

/** The stream cut into random pieces, as TCP may deliver it. */
function chunks(stream: Buffer, rng: ReturnType<typeof prng>): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < stream.length; ) {
    const n = 1 + rng.int(Math.min(300, stream.length - i));
    out.push(stream.subarray(i, i + n));
    i += n;
  }
  return out;
}

const roomy: GuardLimits = { maxPacketBytes: 20_000, publishPerSecond: 1e9, publishBurst: 1e9 };

test('well-formed packets within the limit pass, however the stream is cut (2,000 generated streams)', () => {
  const rng = prng(0x67756172);
  for (let c = 0; c < 2000; c++) {
    const packets = Array.from({ length: rng.range(1, 30) }, () => packet(rng.range(1, 14), rng.pick([0, 1, 2, 127, 128, 16_383, 16_384, rng.int(20_001)])));
    const scanner = new PacketScanner(roomy);
    for (const chunk of chunks(Buffer.concat(packets), rng)) assert.equal(scanner.scan(chunk), undefined);
  }
});

test('a packet over the limit is caught at its header, before its body arrives (1,000 generated cases)', () => {
  const rng = prng(0x6c617267);
  for (let c = 0; c < 1000; c++) {
    const before = Array.from({ length: rng.int(10) }, () => packet(3, rng.int(20_001)));
    const big = rng.range(20_001, 200_000_000);
    const scanner = new PacketScanner(roomy);
    let violation;
    // Only the header of the big one is sent: the scanner must refuse it before any body.
    for (const chunk of chunks(Buffer.concat([...before, header(3, big)]), rng)) violation ??= scanner.scan(chunk);
    assert.deepEqual(violation, { kind: 'too-large', bytes: big });
  }
});

test('a remaining length longer than 4 bytes is malformed', () => {
  const scanner = new PacketScanner(roomy);
  assert.deepEqual(scanner.scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), { kind: 'malformed' });
});

test('publishes beyond the burst are a flood; the allowance refills with time; other packets never count', () => {
  let now = 0;
  const scanner = new PacketScanner({ maxPacketBytes: 1000, publishPerSecond: 100, publishBurst: 10 }, () => now);
  for (let i = 0; i < 50; i++) assert.equal(scanner.scan(packet(12, 0)), undefined, 'PINGREQ is not a publish');
  for (let i = 0; i < 10; i++) assert.equal(scanner.scan(packet(3, 10)), undefined, `publish ${i} within the burst`);
  assert.deepEqual(scanner.scan(packet(3, 10)), { kind: 'flood', rate: 100 });
  now += 50; // 5 more at 100/s
  const fresh = new PacketScanner({ maxPacketBytes: 1000, publishPerSecond: 100, publishBurst: 10 }, () => now);
  for (let i = 0; i < 10; i++) fresh.scan(packet(3, 10));
  now += 50;
  for (let i = 0; i < 5; i++) assert.equal(fresh.scan(packet(3, 10)), undefined, `refilled publish ${i}`);
  assert.deepEqual(fresh.scan(packet(3, 10)), { kind: 'flood', rate: 100 });
});
