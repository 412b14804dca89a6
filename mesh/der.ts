/**
 * A minimal DER (X.690) encoder, and a reader just strong enough to walk certificates we made.
 * Only what X.509 needs: single-byte tags, definite lengths, the universal types below.
 * Every encoder returns the whole TLV (tag, length, contents) as a Buffer.
 */

/** Tag bytes: universal types, and the context-specific classes used by X.509. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Definite length: short form below 128, else 0x80 | count followed by the big-endian length. */
export function derLength(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`bad DER length ${n}`);
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, ...contents: Buffer[]): Buffer {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) throw new RangeError(`bad DER tag ${tag}`);
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

export const sequence = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...items);

/** SET OF: DER sorts the encoded elements (X.690 11.6). */
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, ...[...items].sort(Buffer.compare));

export const boolean = (value: boolean): Buffer => tlv(TAG.BOOLEAN, Buffer.from([value ? 0xff : 0x00]));

export const nul = (): Buffer => tlv(TAG.NULL);

/** Minimal two's complement: no redundant leading 0x00 or 0xff byte; 128 is 02 02 00 80. */
export function integer(value: bigint | number): Buffer {
  let v = BigInt(value);
  const bytes: number[] = [];
  for (;;) {
    const byte = Number(v & 0xffn);
    bytes.unshift(byte);
    v >>= 8n; // arithmetic shift: -1 stays -1
    if ((v === 0n && (byte & 0x80) === 0) || (v === -1n && (byte & 0x80) !== 0)) break;
  }
  return tlv(TAG.INTEGER, Buffer.from(bytes));
}

/** Base-128 with the continuation bit on every byte but the last. */
function base128(n: bigint): number[] {
  const out = [Number(n & 0x7fn)];
  for (let v = n >> 7n; v > 0n; v >>= 7n) out.unshift(Number(v & 0x7fn) | 0x80);
  return out;
}

/** Dotted OID such as "1.2.840.10045.2.1"; the first two arcs share a subidentifier (40 * a + b). */
export function oid(dotted: string): Buffer {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) throw new RangeError(`bad OID ${dotted}`);
  const arcs = dotted.split('.').map(BigInt);
  const [first, second] = arcs as [bigint, bigint];
  if (first < 2n && second > 39n) throw new RangeError(`bad OID ${dotted}: second arc over 39`);
  const body = [first * 40n + second, ...arcs.slice(2)].flatMap(base128);
  return tlv(TAG.OID, Buffer.from(body));
}

export const octetString = (bytes: Buffer): Buffer => tlv(TAG.OCTET_STRING, bytes);

/** A BIT STRING of whole bytes (keys, signatures): zero unused bits. */
export const bitString = (bytes: Buffer): Buffer => tlv(TAG.BIT_STRING, Buffer.from([0]), bytes);

/**
 * A named-bit BIT STRING (keyUsage): bit 0 is the high bit of the first byte, and DER drops
 * trailing zero bits, so {keyCertSign(5), cRLSign(6)} is 03 02 01 06.
 */
export function namedBits(bits: number[]): Buffer {
  if (bits.length === 0) return tlv(TAG.BIT_STRING, Buffer.from([0]));
  const last = Math.max(...bits);
  const bytes = Buffer.alloc((last >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return tlv(TAG.BIT_STRING, Buffer.from([7 - (last & 7)]), bytes);
}

export const utf8String = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));

export function ia5String(s: string, tag: number = TAG.IA5_STRING): Buffer {
  if (!/^[\x00-\x7f]*$/.test(s)) throw new RangeError('IA5String must be ASCII');
  return tlv(tag, Buffer.from(s, 'latin1'));
}

/**
 * RFC 5280 4.1.2.5: UTCTime (YYMMDDHHMMSSZ) for 1950-2049, GeneralizedTime (YYYYMMDDHHMMSSZ)
 * otherwise; always UTC, whole seconds (fractions are dropped).
 */
export function time(date: Date): Buffer {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError('invalid date');
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError(`year ${year} cannot be encoded`);
  const p2 = (n: number) => String(n).padStart(2, '0');
  const rest = `${p2(date.getUTCMonth() + 1)}${p2(date.getUTCDate())}${p2(date.getUTCHours())}${p2(date.getUTCMinutes())}${p2(date.getUTCSeconds())}Z`;
  if (year >= 1950 && year < 2050) return tlv(TAG.UTC_TIME, Buffer.from(p2(year % 100) + rest, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(year).padStart(4, '0') + rest, 'latin1'));
}

/** [n] EXPLICIT: a constructed context-specific wrapper around a whole TLV. */
export const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);

/** One element found by the reader: its tag, where its contents are, and its whole encoding. */
export interface Tlv {
  tag: number;
  contents: Buffer;
  /** The element's own bytes, header included (to copy a Name verbatim). */
  raw: Buffer;
}

/** Reads the element at `offset`; throws on truncation, indefinite or non-minimal lengths. */
export function readTlv(buf: Buffer, offset = 0): Tlv & { end: number } {
  const tag = buf[offset];
  const first = buf[offset + 1];
  if (tag === undefined || first === undefined) throw new RangeError('DER: truncated header');
  if ((tag & 0x1f) === 0x1f) throw new RangeError('DER: multi-byte tags are not supported');
  let length = first;
  let start = offset + 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw new RangeError('DER: indefinite or oversized length');
    if (start + count > buf.length) throw new RangeError('DER: truncated length');
    length = buf.readUIntBE(start, count);
    if (length < 0x80 || buf[start] === 0) throw new RangeError('DER: non-minimal length');
    start += count;
  }
  const end = start + length;
  if (end > buf.length) throw new RangeError('DER: truncated contents');
  return { tag, contents: buf.subarray(start, end), raw: buf.subarray(offset, end), end };
}

/** The elements inside a constructed element's contents, in order. */
export function children(contents: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < contents.length; ) {
    const t = readTlv(contents, at);
    out.push(t);
    at = t.end;
  }
  return out;
}
