/**
 * Malformed request payloads for the flood attackers, each with the stable error code the mesh
 * answers it with (docs/PROTOCOL.md): not JSON, not a frame, wrong fields, shapes and dtypes, too
 * many elements, an unknown or forbidden model name, a payload over --max-payload-bytes, an image
 * claiming too many pixels.
 */
import { fakePng } from './images.js';
import { writeFrame } from '../../mesh/frame.js';

export interface BadCase {
  name: string;
  model: string;
  payload: Buffer;
  code: string;
}

export function badCases(limits: { maxPayloadBytes: number }): BadCase[] {
  const good = { dtype: 'float32', shape: [1, 1, 28, 28], data: Array.from({ length: 784 }, () => 0) };
  const json = (o: unknown) => Buffer.from(JSON.stringify(o));
  return [
    { name: 'garbage JSON', model: 'digits', payload: Buffer.from('{"inputs": {'), code: 'KZ_ERR_MALFORMED' },
    { name: 'neither JSON, frame nor image', model: 'digits', payload: Buffer.from('hello'), code: 'KZ_ERR_MALFORMED' },
    { name: 'empty', model: 'digits', payload: Buffer.alloc(0), code: 'KZ_ERR_MALFORMED' },
    { name: 'wrong field type', model: 'digits', payload: Buffer.from('{"image": 42}'), code: 'KZ_ERR_BAD_REQUEST' },
    { name: 'bad base64', model: 'digits', payload: Buffer.from('{"image": "not base64 at all!"}'), code: 'KZ_ERR_MALFORMED' },
    { name: 'truncated KZB1 frame', model: 'digits', payload: Buffer.from('KZB1\xff\xff\x00\x00{}', 'latin1'), code: 'KZ_ERR_MALFORMED' },
    {
      name: 'KZB1 tensor outside its data',
      model: 'digits',
      payload: writeFrame(() => ({ inputs: { input: { dtype: 'float32', shape: [1, 1, 28, 28], offset: 0, length: 3136 } } })),
      code: 'KZ_ERR_MALFORMED',
    },
    { name: 'wrong shape', model: 'digits', payload: json({ inputs: { input: { ...good, shape: [1, 1, 28, 27], data: good.data.slice(0, 756) } } }), code: 'KZ_ERR_BAD_SHAPE' },
    { name: 'wrong dtype', model: 'digits', payload: json({ inputs: { input: { ...good, dtype: 'int32' } } }), code: 'KZ_ERR_BAD_DTYPE' },
    { name: 'too many elements', model: 'digits', payload: json({ inputs: { input: { dtype: 'float32', shape: [4096, 4096], b64: '' } } }), code: 'KZ_ERR_TOO_MANY_ELEMENTS' },
    { name: 'unknown model', model: 'no-such-model', payload: json({ inputs: { input: good } }), code: 'KZ_ERR_UNKNOWN_MODEL' },
    { name: 'model name ..', model: '..', payload: json({ inputs: { input: good } }), code: 'KZ_ERR_BAD_NAME' },
    {
      name: 'payload over --max-payload-bytes',
      model: 'digits',
      payload: Buffer.concat([Buffer.from('{"image":"'), Buffer.alloc(limits.maxPayloadBytes + 1024, 65), Buffer.from('"}')]),
      code: 'KZ_ERR_TOO_LARGE',
    },
    { name: 'image claiming 50000x50000 pixels', model: 'digits', payload: Buffer.from(fakePng(50_000, 50_000)), code: 'KZ_ERR_IMAGE_TOO_LARGE' },
  ];
}
