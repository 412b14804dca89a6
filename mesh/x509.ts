/**
 * The mesh certificate authority: X.509 v3 certificates built with node:crypto alone (Node can
 * verify certificates but not create them). `kizuna init` makes the mesh CA; every board and app
 * gets a certificate for its own P-256 key; the elected broker serves TLS with its board
 * certificate, and clients present theirs (mutual TLS), all checked against the pinned CA.
 *
 * Identity lives in one subjectAltName URI, kizuna://<mesh>/<kind>/<subject>, read back by
 * parseIdentity. Subject names (CN/O/OU) are for people reading `openssl x509 -text`; a CN over
 * RFC 5280's 64-character bound (names may have 128) is kept whole: OpenSSL and Node accept it.
 *
 * For node:tls, pass key.export({ type: 'pkcs8', format: 'pem' }): Node 20's tls takes no KeyObject.
 *
 * Lifetimes: 3650 days for the CA and every certificate. The 398/825-day limits are CA/Browser
 * Forum rules for the public web; these certificates are private to one mesh, and a short life
 * would only make boards without a real-time clock, or left unplugged for a year, drop out of the
 * mesh with nobody there to renew them (renewal is not automatic yet). A board is removed by
 * refusing its serial or fingerprint at the broker, or by making a new CA.
 */
import crypto, { KeyObject, X509Certificate } from 'node:crypto';
import net from 'node:net';
import * as der from './der.js';
import { KizunaError } from './errors.js';
import { assertSegment, isSegment } from './topics.js';

export const CA_DAYS = 3650;
export const CERT_DAYS = 3650;
/** notBefore is this far in the past, for boards whose clock lags (no RTC, NTP not yet synced). */
export const CLOCK_SKEW_MS = 60 * 60 * 1000;

export type CertKind = 'board' | 'app';
export interface Identity {
  mesh: string;
  kind: CertKind;
  /** The board's node id, or the app's name. */
  subject: string;
}
export interface MeshCA {
  /** The CA's private key: keep it on the board that ran `kizuna init`, mode 0600. */
  key: KeyObject;
  cert: string;
  certDer: Buffer;
  /** sha256 of the DER, lowercase hex: what apps and boards pin. */
  fingerprint: string;
}
export interface IssuedCert {
  cert: string;
  der: Buffer;
  /** The serial number in lowercase hex (as X509Certificate.serialNumber, lowercased). */
  serial: string;
  fingerprint: string;
}
export interface IssueOptions {
  ca: { key: KeyObject; cert: string | Buffer | X509Certificate };
  /** The holder's P-256 public key (a private key is accepted: its public half is used). */
  publicKey: KeyObject;
  mesh: string;
  subject: string;
  kind: CertKind;
  /** Hex; default 16 random bytes, positive, 126 bits of randomness. */
  serial?: string;
  days?: number;
  now?: Date;
  /** Extra subjectAltNames, for clients that do check host names. */
  dnsNames?: string[];
  ips?: string[];
}

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  subjectKeyId: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyId: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;
/** keyUsage bit numbers (RFC 5280 4.2.1.3). */
const KU = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;
/** GeneralName choices, [n] IMPLICIT (RFC 5280 4.2.1.6). */
const GN = { dns: 0x82, uri: 0x86, ip: 0x87 } as const;

/** A fresh ECDSA P-256 key pair, the only key type the mesh uses. */
export function generateKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

export function createCA(opts: { mesh: string; days?: number; now?: Date; /** An existing P-256 private key (the mesh key), else a new one. */ key?: KeyObject }): MeshCA {
  assertSegment('mesh', opts.mesh);
  const { privateKey, publicKey } = opts.key ? { privateKey: opts.key, publicKey: crypto.createPublicKey(opts.key) } : generateKeyPair();
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const name = distinguishedName([[OID.organization, 'kizuna'], [OID.commonName, `Kizuna mesh ${opts.mesh}`]]);
  const { notBefore, notAfter } = validity(opts.now ?? new Date(), opts.days ?? CA_DAYS);
  const certDer = signCertificate(privateKey, {
    serial: randomSerial(),
    issuer: name,
    subject: name,
    notBefore,
    notAfter,
    spki,
    extensions: [
      extension(OID.basicConstraints, true, der.sequence(der.boolean(true), der.integer(0))),
      extension(OID.keyUsage, true, der.namedBits([KU.keyCertSign, KU.cRLSign])),
      extension(OID.subjectKeyId, false, der.octetString(keyId(spki))),
    ],
  });
  return { key: privateKey, cert: toPem(certDer), certDer, fingerprint: sha256(certDer) };
}

/** A board or app certificate signed by the mesh CA. Its notAfter never passes the CA's. */
export function issueCert(opts: IssueOptions): IssuedCert {
  if (opts.kind !== 'board' && opts.kind !== 'app') throw config(`kind must be 'board' or 'app', not ${String(opts.kind)}`);
  assertSegment('mesh', opts.mesh);
  assertSegment(opts.kind === 'app' ? 'app name' : 'node id', opts.subject);
  const ca = readCertificate(opts.ca.cert);
  if (!ca.ca) throw config('the CA certificate is not a CA (basicConstraints CA:TRUE)');
  assertP256(opts.ca.key, 'the CA key');
  const caSpki = ca.publicKey.export({ type: 'spki', format: 'der' });
  if (opts.ca.key.type !== 'private' || !crypto.createPublicKey(opts.ca.key).export({ type: 'spki', format: 'der' }).equals(caSpki)) {
    throw config('the CA key is not the private key of the CA certificate');
  }
  const holder = opts.publicKey.type === 'private' ? crypto.createPublicKey(opts.publicKey) : opts.publicKey;
  assertP256(holder, 'the public key');
  const spki = holder.export({ type: 'spki', format: 'der' });
  const serial = opts.serial === undefined ? randomSerial() : parseSerial(opts.serial);
  const v = validity(opts.now ?? new Date(), opts.days ?? CERT_DAYS);
  const caNotAfter = new Date(ca.validTo);
  const notAfter = caNotAfter < v.notAfter ? caNotAfter : v.notAfter;
  const caFields = tbsFields(ca.raw);
  const caSki = caFields.extensions.get(OID.subjectKeyId);
  const authorityKeyId = caSki ? der.readTlv(caSki).contents : keyId(caSpki); // extnValue wraps an OCTET STRING
  const names = [
    der.ia5String(identityUri(opts), GN.uri),
    ...(opts.dnsNames ?? []).map((d) => der.ia5String(checkDnsName(d), GN.dns)),
    ...(opts.ips ?? []).map((ip) => der.tlv(GN.ip, ipBytes(ip))),
  ];
  const usages = opts.kind === 'board' ? [OID.serverAuth, OID.clientAuth] : [OID.clientAuth];
  const certDer = signCertificate(opts.ca.key, {
    serial,
    issuer: caFields.subject.raw,
    subject: distinguishedName([
      [OID.organization, 'kizuna'],
      [OID.organizationalUnit, opts.kind],
      [OID.commonName, opts.subject],
    ]),
    notBefore: v.notBefore,
    notAfter,
    spki,
    extensions: [
      extension(OID.basicConstraints, true, der.sequence()),
      // ECDHE-ECDSA TLS only signs with the key; keyAgreement would be for static ECDH.
      extension(OID.keyUsage, true, der.namedBits([KU.digitalSignature])),
      extension(OID.extKeyUsage, false, der.sequence(...usages.map((u) => der.oid(u)))),
      extension(OID.subjectAltName, false, der.sequence(...names)),
      extension(OID.subjectKeyId, false, der.octetString(keyId(spki))),
      extension(OID.authorityKeyId, false, der.sequence(der.tlv(0x80, authorityKeyId))),
    ],
  });
  return { cert: toPem(certDer), der: certDer, serial: hexOf(serial), fingerprint: sha256(certDer) };
}

/** kizuna://<mesh>/<kind>/<subject>; ':' (legal in names) is percent-encoded, nothing else needs it. */
export function identityUri(id: Identity): string {
  return `kizuna://${encodeURIComponent(id.mesh)}/${id.kind}/${encodeURIComponent(id.subject)}`;
}

/**
 * The identity in a certificate's kizuna:// URI, or undefined when there is none, more than one,
 * or anything is malformed. It checks no signature: use it on a peer certificate that TLS has
 * verified against the mesh CA (socket.authorized), e.g. parseIdentity(socket.getPeerCertificate()).
 */
export function parseIdentity(cert: X509Certificate | { raw?: Buffer } | string | Buffer): Identity | undefined {
  try {
    const raw = typeof cert === 'string' || Buffer.isBuffer(cert) ? new X509Certificate(cert).raw : cert.raw;
    if (!raw) return undefined;
    const san = tbsFields(raw).extensions.get(OID.subjectAltName);
    if (!san) return undefined;
    const list = der.readTlv(san);
    if (list.tag !== der.TAG.SEQUENCE || list.end !== san.length) return undefined;
    const uris = der.children(list.contents).filter((n) => n.tag === GN.uri).map((n) => n.contents.toString('latin1'));
    const ours = uris.filter((u) => u.toLowerCase().startsWith('kizuna:'));
    const m = ours.length === 1 ? /^kizuna:\/\/([^/]+)\/(board|app)\/([^/]+)$/.exec(ours[0]!) : null;
    if (!m) return undefined;
    const mesh = decodeURIComponent(m[1]!);
    const subject = decodeURIComponent(m[3]!);
    return isSegment(mesh) && isSegment(subject) ? { mesh, kind: m[2] as CertKind, subject } : undefined;
  } catch {
    return undefined;
  }
}

export function toPem(certDer: Buffer): string {
  const lines = certDer.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

interface Tbs {
  serial: bigint;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Buffer[];
}

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } (RFC 5280 4.1). */
function signCertificate(key: KeyObject, t: Tbs): Buffer {
  const algorithm = der.sequence(der.oid(OID.ecdsaWithSha256)); // parameters absent (RFC 5758 3.2)
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)), // v3
    der.integer(t.serial),
    algorithm,
    t.issuer,
    der.sequence(der.time(t.notBefore), der.time(t.notAfter)),
    t.subject,
    t.spki,
    der.explicit(3, der.sequence(...t.extensions)),
  );
  return der.sequence(tbs, algorithm, der.bitString(crypto.sign('sha256', tbs, key)));
}

function readCertificate(cert: string | Buffer | X509Certificate): X509Certificate {
  if (cert instanceof X509Certificate) return cert;
  try {
    return new X509Certificate(cert);
  } catch (err) {
    throw new KizunaError('KZ_ERR_CONFIG', 'the CA certificate cannot be read (PEM or DER expected)', { cause: err });
  }
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  // DER leaves out a BOOLEAN equal to its DEFAULT (critical FALSE).
  return der.sequence(der.oid(id), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
}

/** RDNSequence with one attribute per RDN, each a UTF8String (RFC 5280 4.1.2.6). */
function distinguishedName(attrs: [string, string][]): Buffer {
  return der.sequence(...attrs.map(([id, value]) => der.set(der.sequence(der.oid(id), der.utf8String(value)))));
}

function validity(now: Date, days: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(days) || days <= 0) throw config(`days must be a positive number, not ${days}`);
  const t = Math.floor(now.getTime() / 1000) * 1000;
  if (!Number.isFinite(t)) throw config('now is not a valid date');
  return { notBefore: new Date(t - CLOCK_SKEW_MS), notAfter: new Date(t + Math.round(days * 86_400) * 1000) };
}

/** RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits. */
function keyId(spki: Buffer): Buffer {
  const key = der.children(der.readTlv(spki).contents)[1];
  if (key?.tag !== der.TAG.BIT_STRING) throw config('not a SubjectPublicKeyInfo');
  return crypto.createHash('sha256').update(key.contents.subarray(1)).digest().subarray(0, 20);
}

/** The subject Name (copied verbatim as the issuer of what a CA signs) and extensions by OID. */
function tbsFields(certDer: Buffer): { subject: der.Tlv; extensions: Map<string, Buffer> } {
  const [tbs] = der.children(der.readTlv(certDer).contents);
  const fields = der.children(tbs?.contents ?? Buffer.alloc(0));
  const first = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const subject = fields[first + 4]; // serial, signature, issuer, validity, subject
  if (subject?.tag !== der.TAG.SEQUENCE) throw new RangeError('not a certificate');
  const extensions = new Map<string, Buffer>();
  const wrapper = fields.slice(first + 6).find((f) => f.tag === 0xa3);
  for (const ext of wrapper ? der.children(der.readTlv(wrapper.contents).contents) : []) {
    const parts = der.children(ext.contents);
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (id?.tag !== der.TAG.OID || value?.tag !== der.TAG.OCTET_STRING) throw new RangeError('bad extension');
    const key = oidToString(id.contents);
    if (extensions.has(key)) throw new RangeError(`extension ${key} appears twice`);
    extensions.set(key, value.contents);
  }
  return { subject, extensions };
}

function oidToString(body: Buffer): string {
  const arcs: bigint[] = [];
  let v = 0n;
  for (const b of body) {
    v = (v << 7n) | BigInt(b & 0x7f);
    if (b & 0x80) continue;
    arcs.push(v);
    v = 0n;
  }
  const first = arcs.shift() ?? 0n;
  const top = first < 80n ? first / 40n : 2n;
  return [top, first - top * 40n, ...arcs].join('.');
}

function randomSerial(): bigint {
  const b = crypto.randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40; // positive and always 16 bytes long
  return BigInt(`0x${b.toString('hex')}`);
}

function parseSerial(hex: string): bigint {
  const v = /^[0-9a-f]{1,40}$/i.test(hex) ? BigInt(`0x${hex}`) : 0n;
  // RFC 5280 4.1.2.2: positive, at most 20 octets as encoded.
  if (v <= 0n || der.integer(v).length > 22) throw config(`serial must be 1-20 bytes of positive hex, not ${JSON.stringify(hex)}`);
  return v;
}

function hexOf(v: bigint): string {
  const h = v.toString(16);
  return h.length % 2 ? `0${h}` : h;
}

/** iPAddress is 4 or 16 network-order bytes. Zone ids (fe80::1%eth0) cannot be encoded. */
export function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!net.isIPv6(ip) || ip.includes('%')) throw config(`not an IP address: ${JSON.stringify(ip)}`);
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip); // ::ffff:192.0.2.1
  const text = v4 ? `${v4[1]}${((+v4[2]! << 8) | +v4[3]!).toString(16)}:${((+v4[4]! << 8) | +v4[5]!).toString(16)}` : ip;
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function checkDnsName(name: string): string {
  const label = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
  if (name.length > 253 || !new RegExp(`^${label}(?:\\.${label})*$`).test(name)) throw config(`not a DNS name: ${JSON.stringify(name)}`);
  return name;
}

function assertP256(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw config(`${what} must be an ECDSA P-256 key`);
}

const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
const config = (message: string): KizunaError => new KizunaError('KZ_ERR_CONFIG', message);
