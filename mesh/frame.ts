/**
 * KZB1, the compact binary framing for tensors (requests and results):
 *
 *   bytes 0..3   "KZB1"
 *   bytes 4..7   H, uint32 little-endian: length of the header
 *   bytes 8..    H bytes of UTF-8 JSON: the same object as the JSON form, except that each tensor
 *                carries "offset" and "length" (bytes, relative to the data section) instead of data
 *   then         the data section: raw little-endian tensor bytes at those offsets
 *
 * Our writer pads the header with spaces and each tensor to 8 bytes so typed arrays can view the
 * data without a copy; readers must not rely on that.
 */
import { KizunaError } from './errors.js';

export const FRAME_MAGIC = 'KZB1';
const PREFIX = 8;

export interface TensorRef {
  offset: number;
  length: number;
}

export function isFrame(payload: Uint8Array): boolean {
  return payload.length >= 4 && payload[0] === 0x4b && payload[1] === 0x5a && payload[2] === 0x42 && payload[3] === 0x31;
}

/** Splits a frame into its header object and its data section. */
export function readFrame(payload: Uint8Array): { header: unknown; data: Uint8Array } {
  if (!isFrame(payload) || payload.length < PREFIX) throw new KizunaError('KZ_ERR_MALFORMED', 'not a KZB1 frame');
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const headerLength = view.getUint32(4, true);
  if (PREFIX + headerLength > payload.length) {
    throw new KizunaError('KZ_ERR_MALFORMED', `KZB1 header length ${headerLength} runs past the end of the ${payload.length}-byte frame`);
  }
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset + PREFIX, headerLength).toString('utf8'));
  } catch (err) {
    throw new KizunaError('KZ_ERR_MALFORMED', `KZB1 header is not JSON: ${(err as Error).message}`);
  }
  return { header, data: payload.subarray(PREFIX + headerLength) };
}

/** The bytes of one tensor reference, checked against the data section. */
export function sliceRef(data: Uint8Array, ref: TensorRef): Uint8Array {
  const { offset, length } = ref;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > data.length) {
    throw new KizunaError('KZ_ERR_MALFORMED', `tensor bytes ${offset}+${length} are outside the ${data.length}-byte data section`);
  }
  return data.subarray(offset, offset + length);
}

/**
 * Writes a frame. `build` receives a function that places a tensor's bytes in the data section and
 * returns its reference, and returns the header object (which embeds those references).
 */
export function writeFrame(build: (place: (bytes: Uint8Array) => TensorRef) => object): Buffer {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const place = (bytes: Uint8Array): TensorRef => {
    const ref = { offset: size, length: bytes.length };
    chunks.push(bytes);
    size += bytes.length;
    const padding = (8 - (size % 8)) % 8;
    if (padding) {
      chunks.push(new Uint8Array(padding));
      size += padding;
    }
    return ref;
  };
  let headerText = JSON.stringify(build(place));
  const headerBytes = Buffer.byteLength(headerText);
  headerText += ' '.repeat((8 - ((PREFIX + headerBytes) % 8)) % 8);
  const headerLength = Buffer.byteLength(headerText);
  const out = Buffer.allocUnsafe(PREFIX + headerLength + size);
  out.write(FRAME_MAGIC, 0, 'latin1');
  out.writeUInt32LE(headerLength, 4);
  out.write(headerText, PREFIX, 'utf8');
  let at = PREFIX + headerLength;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
