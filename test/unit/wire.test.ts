import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { KizunaError, type ErrorCode } from '../../mesh/errors.js';
import { isFrame, readFrame, type TensorRef } from '../../mesh/frame.js';
import { JSON_NUMBERS_MAX_ELEMENTS } from '../../mesh/codec.js';
import { sniffImage, type ImageFormat } from '../../mesh/image.js';
import { decodeReply, decodeRequest, encodeError, encodeImageRequest, encodeResult, encodeTensorRequest, type DecodedRequest, type InferenceResult, type Reply } from '../../mesh/messages.js';
import type { Tensor } from '../../mesh/tensor.js';

const LIMITS = { maxPayloadBytes: 1 << 20, maxElements: 1 << 20 };
const json = (o: unknown) => Buffer.from(JSON.stringify(o));
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const hasCode = (c: ErrorCode) => (e: unknown) => e instanceof KizunaError && e.code === c;
const refuses = (payload: Uint8Array, c: ErrorCode, limits = LIMITS, msg?: RegExp) =>
  assert.throws(() => decodeRequest(payload, limits), (e: unknown) => hasCode(c)(e) && (!msg || msg.test((e as Error).message)));
const one = (dtype: string, data: unknown[], shape: unknown = [data.length]) => json({ inputs: { x: { dtype, shape, data } } });
const tensorsOf = (d: DecodedRequest) => (d.body.kind === 'tensors' ? d.body.inputs : assert.fail(`got ${d.body.kind}`));
const outputsOf = (r: Reply) => (r.ok ? r.outputs : assert.fail(r.error.message));
const imagesOf = (d: DecodedRequest) => (d.body.kind === 'images' ? d.body.images : assert.fail(`got ${d.body.kind}`));
const timings = { queue_ms: 1, pre_ms: 2, infer_ms: 3, post_ms: 4, total_ms: 10 };
const result = (outputs: Record<string, Tensor>, answers?: unknown[]): InferenceResult => ({ id: 'r1', model: 'm', version: '1.0.0', agent: 'pi', outputs, ...(answers ? { answers } : {}), timings });

/** Every dtype, at sizes that need padding; int64 uses the full 64-bit range (frames carry it exactly). */
const ALL: Record<string, Tensor> = {
  f32: { dtype: 'float32', shape: [3], data: Float32Array.from([1.5, -0.25, 3e38]) },
  f64: { dtype: 'float64', shape: [2], data: Float64Array.from([Math.PI, -1e-300]) },
  i8: { dtype: 'int8', shape: [3], data: Int8Array.from([-128, 127, 0]) },
  u8: { dtype: 'uint8', shape: [1, 3], data: Uint8Array.from([0, 255, 7]) },
  i16: { dtype: 'int16', shape: [3], data: Int16Array.from([-32768, 32767, 1]) },
  u16: { dtype: 'uint16', shape: [1], data: Uint16Array.from([65535]) },
  i32: { dtype: 'int32', shape: [2], data: Int32Array.from([-(2 ** 31), 2 ** 31 - 1]) },
  i64: { dtype: 'int64', shape: [3], data: BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 5n]) },
  'bool ✓': { dtype: 'bool', shape: [3], data: Uint8Array.from([0, 1, 1]) },
};
/** The same, with int64 values JSON numbers can hold. */
const SAFE: Record<string, Tensor> = { ...ALL, i64: { dtype: 'int64', shape: [3], data: BigInt64Array.from([-(2n ** 53n - 1n), 2n ** 53n - 1n, 5n]) } };

const blank = sharp({ create: { width: 3, height: 2, channels: 3, background: '#123456' } });
const IMG: Record<ImageFormat, Buffer> = {
  png: await blank.clone().png().toBuffer(),
  jpeg: await blank.clone().jpeg().toBuffer(),
  webp: await blank.clone().webp().toBuffer(),
  gif: await blank.clone().gif().toBuffer(),
  tiff: await blank.clone().tiff().toBuffer(),
};

function rawFrame(header: string, data: Uint8Array = new Uint8Array(0), claimed?: number): Buffer {
  const h = Buffer.from(header);
  const out = Buffer.alloc(8 + h.length + data.length);
  out.write('KZB1', 0, 'latin1');
  out.writeUInt32LE(claimed ?? h.length, 4);
  h.copy(out, 8);
  out.set(data, 8 + h.length);
  return out;
}
const refFrame = (t: object, data: Uint8Array) => rawFrame(JSON.stringify({ inputs: { x: t } }), data);

test('KZB1: every dtype round-trips, header and each tensor on 8-byte boundaries, read without a copy', () => {
  const payload = new Uint8Array(encodeTensorRequest(ALL)); // its own ArrayBuffer, at offset 0
  assert.ok(isFrame(payload));
  const headerLength = new DataView(payload.buffer).getUint32(4, true);
  assert.equal((8 + headerLength) % 8, 0, 'data section starts on 8 bytes');
  const { header, data } = readFrame(payload);
  const refs = (header as { inputs: Record<string, TensorRef> }).inputs;
  let end = 0;
  for (const [name, t] of Object.entries(ALL)) {
    const ref = refs[name]!;
    assert.equal(ref.offset % 8, 0, name);
    assert.equal(ref.length, t.data.byteLength, name);
    assert.ok(ref.offset >= end, `${name} overlaps the previous tensor`);
    end = ref.offset + ref.length;
  }
  assert.ok(data.length - end < 8, 'only padding after the last tensor');
  const inputs = tensorsOf(decodeRequest(payload, LIMITS));
  assert.deepStrictEqual(inputs, ALL);
  for (const t of Object.values(inputs)) assert.equal(t.data.buffer, payload.buffer, `${t.dtype} was copied`);
});

test('KZB1: a frame at an odd address (inside an MQTT packet) still reads every dtype', () => {
  const frame = encodeTensorRequest(ALL);
  const packet = new Uint8Array(frame.length + 3);
  packet.set(frame, 3);
  assert.deepStrictEqual(tensorsOf(decodeRequest(packet.subarray(3), LIMITS)), ALL);
});

test('KZB1: truncated or broken frames are refused with their code', () => {
  refuses(Buffer.from('KZB1'), 'KZ_ERR_MALFORMED');
  refuses(Buffer.from('KZB1\x02\x00'), 'KZ_ERR_MALFORMED');
  refuses(rawFrame('{"inputs":{}}', new Uint8Array(0), 100), 'KZ_ERR_MALFORMED', LIMITS, /runs past the end/);
  refuses(rawFrame('{"inputs":'), 'KZ_ERR_MALFORMED', LIMITS, /not JSON/);
  const f32 = { dtype: 'float32', shape: [2] };
  refuses(refFrame({ ...f32, offset: 0, length: 8 }, new Uint8Array(4)), 'KZ_ERR_MALFORMED', LIMITS, /outside/);
  refuses(refFrame({ ...f32, offset: 8, length: 0 }, new Uint8Array(4)), 'KZ_ERR_MALFORMED', LIMITS, /outside/);
  refuses(refFrame({ ...f32, offset: 0, length: 4 }, new Uint8Array(8)), 'KZ_ERR_BAD_SHAPE');
  refuses(refFrame({ ...f32, offset: -8, length: 8 }, new Uint8Array(8)), 'KZ_ERR_BAD_REQUEST');
  refuses(refFrame({ dtype: 'float16', shape: [2], offset: 0, length: 4 }, new Uint8Array(8)), 'KZ_ERR_BAD_DTYPE');
  refuses(refFrame({ dtype: 'int8', shape: [-2], offset: 0, length: 2 }, new Uint8Array(8)), 'KZ_ERR_BAD_SHAPE');
  refuses(refFrame({ ...f32, data: [1, 2] }, new Uint8Array(0)), 'KZ_ERR_BAD_REQUEST');
  refuses(rawFrame('[]'), 'KZ_ERR_BAD_REQUEST');
});

test('JSON tensors in data and b64 forms decode to the same typed arrays', () => {
  assert.deepStrictEqual(tensorsOf(decodeRequest(encodeTensorRequest(SAFE, {}, 'json'), LIMITS)), SAFE);
  const i16 = Int16Array.from([-2, 300, 7]);
  const viaB64 = tensorsOf(decodeRequest(json({ inputs: { x: { dtype: 'int16', shape: [3], b64: b64(new Uint8Array(i16.buffer)) } } }), LIMITS));
  assert.deepStrictEqual(viaB64.x, { dtype: 'int16', shape: [3], data: i16 });
  // Padding optional, whitespace ignored.
  for (const text of ['AQI=', 'AQI', ' A Q\nI= ']) {
    assert.deepStrictEqual(tensorsOf(decodeRequest(json({ inputs: { x: { dtype: 'uint8', shape: [2], b64: text } } }), LIMITS)).x?.data, Uint8Array.from([1, 2]));
  }
  assert.deepStrictEqual(tensorsOf(decodeRequest(one('bool', [true, false, 1, 0]), LIMITS)).x?.data, Uint8Array.from([1, 0, 1, 0]));
  assert.deepStrictEqual(tensorsOf(decodeRequest(one('float32', [], [0, 5]), LIMITS)).x?.data, new Float32Array(0));
});

test('images: base64 image and images, and raw PNG/JPEG/WebP/GIF/TIFF bytes', () => {
  assert.deepStrictEqual(imagesOf(decodeRequest(json({ image: b64(IMG.png) }), LIMITS)), [IMG.png]);
  assert.deepStrictEqual(imagesOf(decodeRequest(json({ images: [b64(IMG.jpeg), b64(IMG.webp)] }), LIMITS)), [IMG.jpeg, IMG.webp]);
  for (const [format, bytes] of Object.entries(IMG)) {
    const d = decodeRequest(bytes, LIMITS);
    assert.deepStrictEqual(d, { body: { kind: 'images', images: [bytes] }, options: { rawOutputs: true, reply: 'json' } }, format);
  }
  refuses(json({ images: [] }), 'KZ_ERR_BAD_REQUEST');
  refuses(json({ image: '@@@@' }), 'KZ_ERR_MALFORMED');
});

test('options map from wire names; reply defaults to json for JSON and images, binary for frames', () => {
  const all = { version: '2.0', top_k: 5, raw_outputs: false, reply: 'binary' };
  const mapped = { version: '2.0', topK: 5, rawOutputs: false, reply: 'binary' };
  assert.deepStrictEqual(decodeRequest(json({ inputs: {}, ...all }), LIMITS).options, mapped);
  assert.deepStrictEqual(decodeRequest(encodeTensorRequest({}, { version: '2.0', topK: 5, rawOutputs: false }), LIMITS).options, mapped);
  assert.deepStrictEqual(decodeRequest(json({ inputs: {} }), LIMITS).options, { rawOutputs: true, reply: 'json' });
  assert.deepStrictEqual(decodeRequest(json({ image: b64(IMG.png) }), LIMITS).options, { rawOutputs: true, reply: 'json' });
  assert.deepStrictEqual(decodeRequest(encodeTensorRequest({}), LIMITS).options, { rawOutputs: true, reply: 'binary' });
  assert.deepStrictEqual(decodeRequest(encodeTensorRequest({}, { reply: 'json' }), LIMITS).options, { rawOutputs: true, reply: 'json' });
  for (const bad of [{ top_k: 0 }, { top_k: 1001 }, { top_k: 1.5 }, { version: 'v'.repeat(33) }, { reply: 'xml' }, { raw_outputs: 'yes' }, { v: 1 }, { id: 'x' }]) {
    refuses(json({ inputs: {}, ...bad }), 'KZ_ERR_BAD_REQUEST');
  }
});

test('payload limit, and an element limit summed across inputs (JSON and KZB1)', () => {
  const payload = json({ inputs: {} });
  assert.doesNotThrow(() => decodeRequest(payload, { ...LIMITS, maxPayloadBytes: payload.length }));
  refuses(payload, 'KZ_ERR_TOO_LARGE', { ...LIMITS, maxPayloadBytes: payload.length - 1 });
  refuses(IMG.png, 'KZ_ERR_TOO_LARGE', { ...LIMITS, maxPayloadBytes: IMG.png.length - 1 });
  const two: Record<string, Tensor> = { a: { dtype: 'uint8', shape: [3], data: Uint8Array.from([1, 2, 3]) }, b: { dtype: 'uint8', shape: [3], data: Uint8Array.from([4, 5, 6]) } };
  for (const payload of [encodeTensorRequest(two, {}, 'json'), encodeTensorRequest(two)]) {
    assert.doesNotThrow(() => decodeRequest(payload, { ...LIMITS, maxElements: 6 }));
    refuses(payload, 'KZ_ERR_TOO_MANY_ELEMENTS', { ...LIMITS, maxElements: 5 });
  }
  // A huge shape is refused before its (missing) data is even looked at.
  refuses(one('float32', [], [100_000, 100_000]), 'KZ_ERR_TOO_MANY_ELEMENTS');
});

test('malformed JSON tensors get the precise code', () => {
  refuses(one('float16', [1]), 'KZ_ERR_BAD_DTYPE');
  for (const shape of [[-1], [1.5], '3', [1, 1, 1, 1, 1, 1, 1, 1, 1]]) refuses(one('float32', [1], shape), 'KZ_ERR_BAD_SHAPE');
  refuses(one('float32', [1, 2, 3], [2]), 'KZ_ERR_BAD_SHAPE');
  refuses(json({ inputs: { x: { dtype: 'float32', shape: [2], b64: 'AAAAAA==' } } }), 'KZ_ERR_BAD_SHAPE');
  refuses(json({ inputs: { x: { dtype: 'uint8', shape: [1], b64: 'A' } } }), 'KZ_ERR_MALFORMED');
  refuses(json({ inputs: { x: { dtype: 'uint8', shape: [1], b64: 'AQ==', data: [1] } } }), 'KZ_ERR_BAD_REQUEST');
  refuses(json({ inputs: { x: { dtype: 'uint8', shape: [1] } } }), 'KZ_ERR_BAD_REQUEST');
  const outOfRange: [string, number][] = [['int8', 128], ['int8', -129], ['uint8', -1], ['uint8', 256], ['int16', 32768], ['uint16', 65536], ['int32', 2 ** 31], ['int32', 1.5], ['int64', 2 ** 53], ['int64', -(2 ** 53)], ['bool', 2], ['bool', -1], ['bool', 0.5]];
  for (const [dtype, v] of outOfRange) refuses(one(dtype, [v]), 'KZ_ERR_BAD_DTYPE');
  assert.deepStrictEqual(tensorsOf(decodeRequest(one('int64', [2 ** 53 - 1, -(2 ** 53 - 1)]), LIMITS)).x?.data, BigInt64Array.from([2n ** 53n - 1n, -(2n ** 53n - 1n)]));
  refuses(one('float32', [true]), 'KZ_ERR_BAD_DTYPE');
});

test('not JSON, not a frame, not an image: KZ_ERR_MALFORMED; JSON of the wrong shape: KZ_ERR_BAD_REQUEST', () => {
  for (const p of ['', 'hello', '[1,2]', '{"inputs":', 'KZB', '\x89PN']) refuses(Buffer.from(p), 'KZ_ERR_MALFORMED');
  assert.doesNotThrow(() => decodeRequest(Buffer.from(' \r\n\t{"inputs":{}}'), LIMITS));
  refuses(json({}), 'KZ_ERR_BAD_REQUEST');
  refuses(json({ inputs: {}, image: b64(IMG.png) }), 'KZ_ERR_BAD_REQUEST');
});

test('a non-finite float in JSON data is KZ_ERR_BAD_DTYPE, as docs/PROTOCOL.md says', () => {
  refuses(Buffer.from('{"inputs":{"x":{"dtype":"float32","shape":[1],"data":[1e999]}}}'), 'KZ_ERR_BAD_DTYPE');
});

test('encodeResult as JSON and as KZB1: decodeReply gives back outputs, answers and timings', () => {
  const answers = [{ label: '5', index: 5, score: 0.9 }];
  for (const [as, outputs] of [['json', SAFE], ['binary', ALL]] as const) {
    const payload = encodeResult(result(outputs, answers), as);
    assert.equal(isFrame(payload), as === 'binary');
    const r = decodeReply(payload);
    assert.deepStrictEqual(r, { v: 1, id: 'r1', ok: true, model: 'm', version: '1.0.0', agent: 'pi', outputs, answers, timings });
  }
  const header = readFrame(encodeResult(result(ALL, answers), 'binary')).header as Record<string, unknown>;
  assert.deepStrictEqual([header.answers, header.timings], [answers, timings]);
  assert.deepStrictEqual(JSON.parse(encodeResult(result(SAFE), 'json').toString()).outputs.u8, { dtype: 'uint8', shape: [1, 3], data: [0, 255, 7] });
  for (const as of ['json', 'binary'] as const) assert.deepStrictEqual(outputsOf(decodeReply(encodeResult({ ...result({}), outputs: undefined }, as))), {});
});

test(`outputs over ${JSON_NUMBERS_MAX_ELEMENTS} elements travel as b64 in JSON and come back equal`, () => {
  const at = (n: number): Tensor => ({ dtype: 'float32', shape: [n], data: Float32Array.from({ length: n }, (_, i) => i * 0.5 - 7) });
  const wire = JSON.parse(encodeResult(result({ small: at(4096), big: at(4097) }), 'json').toString());
  assert.ok(Array.isArray(wire.outputs.small.data) && wire.outputs.small.b64 === undefined);
  assert.ok(typeof wire.outputs.big.b64 === 'string' && wire.outputs.big.data === undefined);
  const back = decodeReply(encodeResult(result({ small: at(4096), big: at(4097) }), 'json'));
  assert.ok(back.ok);
  assert.deepStrictEqual(back.outputs, { small: at(4096), big: at(4097) });
});

test('a JSON reply keeps NaN and Infinity outputs', () => {
  const r = decodeReply(encodeResult(result({ y: { dtype: 'float32', shape: [3], data: Float32Array.from([NaN, Infinity, -Infinity]) } }), 'json'));
  assert.ok(r.ok);
  assert.deepStrictEqual(Array.from(r.outputs.y!.data as Float32Array), [NaN, Infinity, -Infinity]);
});

test('a JSON reply with int64 outputs beyond 2^53 is readable (with the documented precision loss)', () => {
  const r = decodeReply(encodeResult(result({ y: { dtype: 'int64', shape: [1], data: BigInt64Array.from([2n ** 60n]) } }), 'json'));
  assert.ok(r.ok);
  assert.equal(r.outputs.y!.data[0], 2n ** 60n);
});

test('encodeError and decodeReply of errors; an unknown code becomes KZ_ERR_INTERNAL', () => {
  const withModel = encodeError('r2', 'pi', new KizunaError('KZ_ERR_UNKNOWN_MODEL', 'no model "x"'), 'x');
  const expected = { v: 1, id: 'r2', ok: false, agent: 'pi', model: 'x', error: { code: 'KZ_ERR_UNKNOWN_MODEL', message: 'no model "x"' } };
  assert.deepStrictEqual(JSON.parse(withModel.toString()), expected);
  assert.deepStrictEqual(decodeReply(withModel), expected);
  assert.equal('model' in JSON.parse(encodeError('r3', 'pi', new KizunaError('KZ_ERR_BAD_TOPIC', 'no')).toString()), false);
  const unknown = decodeReply(json({ v: 1, id: 'r', ok: false, agent: 'a', error: { code: 'KZ_ERR_FROM_THE_FUTURE', message: 'm' } }));
  assert.deepStrictEqual(unknown.ok ? null : unknown.error, { code: 'KZ_ERR_INTERNAL', message: 'm' });
  const bare = decodeReply(json({ id: 'r', ok: false }));
  assert.deepStrictEqual(bare.ok ? null : bare.error, { code: 'KZ_ERR_INTERNAL', message: '' });
  for (const bad of ['hello', '[]', 'null', '{"ok":true}', '{"id":"r"}', '{"id":1,"ok":true}']) {
    assert.throws(() => decodeReply(Buffer.from(bad)), hasCode('KZ_ERR_MALFORMED'), bad);
  }
});

test('encodeImageRequest: one image, a batch, and options, as decodeRequest reads them', () => {
  assert.deepStrictEqual(JSON.parse(encodeImageRequest([IMG.png]).toString()), { image: b64(IMG.png) });
  const batch = encodeImageRequest([IMG.png, new Uint8Array(IMG.jpeg)], { version: '1', topK: 2, rawOutputs: false, reply: 'binary' });
  assert.deepStrictEqual(JSON.parse(batch.toString()), { images: [b64(IMG.png), b64(IMG.jpeg)], version: '1', top_k: 2, raw_outputs: false, reply: 'binary' });
  const d = decodeRequest(batch, LIMITS);
  assert.deepStrictEqual(imagesOf(d), [IMG.png, IMG.jpeg]);
  assert.deepStrictEqual(d.options, { version: '1', topK: 2, rawOutputs: false, reply: 'binary' });
  // A view into a bigger buffer encodes only its own bytes.
  const host = Buffer.concat([Buffer.from('xx'), IMG.gif, Buffer.from('yy')]);
  assert.deepStrictEqual(imagesOf(decodeRequest(encodeImageRequest([host.subarray(2, 2 + IMG.gif.length)]), LIMITS)), [IMG.gif]);
});

test('sniffImage knows each signature and nothing else', () => {
  for (const [format, bytes] of Object.entries(IMG)) assert.equal(sniffImage(bytes), format);
  assert.equal(sniffImage(Buffer.from('MM\x00*\x00\x00\x00\x08', 'latin1')), 'tiff');
  assert.equal(sniffImage(Buffer.from('GIF87a')), 'gif');
  const not = ['', 'GIF8', 'GIF', '\x89PNG', '\x89PNG\r\n\x1a', 'RIFF\0\0\0\0WAVEfmt ', 'RIFF\0\0\0\0WEB', '\xff\xd8', 'II+\0', 'MM\0\0', 'KZB1\0\0\0\0', '{"image":"x"}', 'BM\0\0\0\0'];
  for (const s of not) assert.equal(sniffImage(Buffer.from(s, 'latin1')), undefined, JSON.stringify(s));
});
