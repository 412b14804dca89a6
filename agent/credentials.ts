/**
 * A board's mesh credentials, in its data directory (`<dataDir>/mesh-<mesh>/`, mode 0700):
 *
 *   mesh.pub        the mesh's public key (verifies every token and the revocation list)
 *   authority.key   the mesh's private key: only on the board where `kizuna init` ran (0600)
 *   ca.pem          the mesh CA certificate (the same key): apps and boards check the broker with it
 *   board.token     this board's own token (0600)
 *   board.pem, board.key   this board's TLS certificate (signed by the CA) and key (0600)
 *   revoked.json    the latest signed revocation list this board has seen
 *
 * The join token carries what a new board needs: the mesh name, its public key, the CA
 * certificate, the board's own token (so also its node id), certificate and key:
 *   kzj1.<base64url(JSON {mesh, pub, token, ca, cert, key})>
 * It is a secret, like a password: whoever holds it is that board.
 */
import crypto, { X509Certificate, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KizunaError } from '../mesh/errors.js';
import { revocationKey, signToken, verifyToken, type TokenClaims, type TokenKind } from '../mesh/tokens.js';
import { assertSegment } from '../mesh/topics.js';
import { createCA, generateKeyPair, issueCert } from '../mesh/x509.js';

export interface MeshCredentials {
  mesh: string;
  dir: string;
  publicKey: KeyObject;
  /** Only where the mesh was created: it signs tokens and revocations. */
  authorityKey?: KeyObject;
  /** This board's token and what it says (its node id). */
  boardToken?: string;
  board?: TokenClaims;
  /** TLS: the CA certificate, and this board's certificate and key (PEM). */
  tls?: { ca: string; cert: string; key: string };
  revoked: RevocationList;
  /** That list as signed (what a broker keeps retained for the others); absent before the first. */
  revokedPayload?: Buffer;
}

export interface RevocationList {
  v: 1;
  mesh: string;
  /** Grows with every change: a board keeps the list with the highest seq it has seen. */
  seq: number;
  /** `board:<node>`, `app:<name>` or a token id. */
  entries: string[];
}

const DIR_MODE = 0o700;
const SECRET_MODE = 0o600;

export const credentialsDir = (dataDir: string, mesh: string): string => path.join(dataDir, `mesh-${mesh}`);

function write(file: string, data: string, mode: number): void {
  fs.writeFileSync(file, data, { mode });
  fs.chmodSync(file, mode); // an existing file keeps its old mode otherwise
}

const readIf = (file: string): string | undefined => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined);

/** The credentials of `mesh` on this board, or undefined when it has none (an open mesh). */
export function loadCredentials(dataDir: string, mesh: string): MeshCredentials | undefined {
  const dir = credentialsDir(dataDir, mesh);
  const pub = readIf(path.join(dir, 'mesh.pub'));
  if (!pub) return undefined;
  const mode = fs.statSync(dir).mode & 0o777;
  if (mode & 0o077) throw new KizunaError('KZ_ERR_CONFIG', `${dir} is readable by others (mode ${mode.toString(8)}); run chmod 700 ${dir}`);
  const publicKey = crypto.createPublicKey(pub);
  const authority = readIf(path.join(dir, 'authority.key'));
  const boardToken = readIf(path.join(dir, 'board.token'))?.trim();
  const signed = readIf(path.join(dir, 'revoked.json'));
  const parsed = parseRevocations(signed, publicKey, mesh);
  const revoked = parsed ?? { v: 1 as const, mesh, seq: 0, entries: [] };
  const board = boardToken ? verifyToken(boardToken, publicKey, { mesh }) : undefined;
  const [ca, cert, key] = ['ca.pem', 'board.pem', 'board.key'].map((f) => readIf(path.join(dir, f)));
  if (board && board.kind !== 'board') throw new KizunaError('KZ_ERR_CONFIG', `${dir}/board.token is an ${board.kind} token, not a board's`);
  return {
    mesh, dir, publicKey, revoked,
    ...(parsed && signed ? { revokedPayload: Buffer.from(signed) } : {}),
    ...(authority ? { authorityKey: crypto.createPrivateKey(authority) } : {}),
    ...(boardToken && board ? { boardToken, board } : {}),
    ...(ca && cert && key ? { tls: { ca, cert, key } } : {}),
  };
}

/**
 * Creates a mesh: its key pair and this board's token (node `node`). Refuses when this board
 * already has credentials for the mesh (creating them again would lock every other board out).
 */
export function initMesh(dataDir: string, mesh: string, node: string): MeshCredentials {
  assertSegment('mesh', mesh);
  const dir = credentialsDir(dataDir, mesh);
  if (fs.existsSync(path.join(dir, 'mesh.pub'))) {
    throw new KizunaError('KZ_ERR_CONFIG', `this board already has credentials for mesh ${mesh} (${dir}); use kizuna token to add boards and apps`);
  }
  fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  fs.chmodSync(dir, DIR_MODE);
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  write(path.join(dir, 'authority.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), SECRET_MODE);
  write(path.join(dir, 'mesh.pub'), publicKey.export({ type: 'spki', format: 'pem' }).toString(), 0o644);
  write(path.join(dir, 'board.token'), signToken({ mesh, kind: 'board', sub: node }, privateKey) + '\n', SECRET_MODE);
  // The mesh key is also the CA key: one secret to keep, on one board.
  const ca = createCA({ mesh, key: privateKey });
  write(path.join(dir, 'ca.pem'), ca.cert, 0o644);
  const mine = boardCertificate(mesh, privateKey, ca.cert, node);
  write(path.join(dir, 'board.pem'), mine.cert, 0o644);
  write(path.join(dir, 'board.key'), mine.key, SECRET_MODE);
  return loadCredentials(dataDir, mesh)!;
}

/** A key pair and a CA-signed certificate for board `node` (PEM). */
function boardCertificate(mesh: string, caKey: KeyObject, caCert: string, node: string): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPair();
  const issued = issueCert({ ca: { key: caKey, cert: caCert }, publicKey, mesh, subject: node, kind: 'board' });
  return { cert: issued.cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** A token for a new board or app; only the board that created the mesh can make one. */
export function issueToken(creds: MeshCredentials, kind: TokenKind, sub: string): string {
  if (!creds.authorityKey) throw new KizunaError('KZ_ERR_CONFIG', `this board did not create mesh ${creds.mesh}: run this on the board where kizuna init ran`);
  return signToken({ mesh: creds.mesh, kind, sub }, creds.authorityKey);
}

/** A join token for board `node`: its token, and a TLS certificate and key made for it here. */
export function joinToken(creds: MeshCredentials, node: string): string {
  if (!creds.authorityKey || !creds.tls) throw new KizunaError('KZ_ERR_CONFIG', `only the board that created mesh ${creds.mesh} can make join tokens`);
  const token = issueToken(creds, 'board', node);
  const { cert, key } = boardCertificate(creds.mesh, creds.authorityKey, creds.tls.ca, node);
  const pub = creds.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  return `kzj1.${Buffer.from(JSON.stringify({ mesh: creds.mesh, pub, token, ca: creds.tls.ca, cert, key })).toString('base64url')}`;
}

/** Stores what a join token carries; returns the credentials and the node id the token gives this board. */
export function joinMesh(dataDir: string, token: string): MeshCredentials & { node: string } {
  const bad = (why: string) => new KizunaError('KZ_ERR_UNAUTHORIZED', `not a usable join token: ${why}`);
  if (!token.startsWith('kzj1.')) throw bad('it does not start with kzj1.');
  let j: { mesh?: unknown; pub?: unknown; token?: unknown; ca?: unknown; cert?: unknown; key?: unknown };
  try {
    j = JSON.parse(Buffer.from(token.slice(5), 'base64url').toString('utf8'));
  } catch {
    throw bad('it is damaged');
  }
  if (typeof j.mesh !== 'string' || typeof j.pub !== 'string' || typeof j.token !== 'string' || typeof j.ca !== 'string' || typeof j.cert !== 'string' || typeof j.key !== 'string') {
    throw bad('it lacks the mesh, its key, the board token or the certificates');
  }
  assertSegment('mesh', j.mesh);
  const publicKey = crypto.createPublicKey({ key: Buffer.from(j.pub, 'base64'), format: 'der', type: 'spki' });
  const claims = verifyToken(j.token, publicKey, { mesh: j.mesh });
  if (claims.kind !== 'board') throw bad(`it holds an ${claims.kind} token`);
  try {
    const ca = new X509Certificate(j.ca);
    if (!ca.publicKey.equals(publicKey) || !new X509Certificate(j.cert).verify(publicKey)) throw new Error('mismatch');
    crypto.createPrivateKey(j.key);
  } catch {
    throw bad('its certificates are not those of this mesh');
  }
  const dir = credentialsDir(dataDir, j.mesh);
  const existing = readIf(path.join(dir, 'mesh.pub'));
  if (existing && !crypto.createPublicKey(existing).equals(publicKey)) {
    throw new KizunaError('KZ_ERR_CONFIG', `this board already belongs to another mesh named ${j.mesh} (${dir}); remove that folder first`);
  }
  fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  fs.chmodSync(dir, DIR_MODE);
  write(path.join(dir, 'mesh.pub'), publicKey.export({ type: 'spki', format: 'pem' }).toString(), 0o644);
  write(path.join(dir, 'board.token'), j.token + '\n', SECRET_MODE);
  write(path.join(dir, 'ca.pem'), j.ca, 0o644);
  write(path.join(dir, 'board.pem'), j.cert, 0o644);
  write(path.join(dir, 'board.key'), j.key, SECRET_MODE);
  return { ...loadCredentials(dataDir, j.mesh)!, node: claims.sub };
}

// ---------------------------------------------------------------- revocations

/** The list with one more entry, signed: what `kizuna revoke` publishes (retained) to the mesh. */
export function revoke(creds: MeshCredentials, entry: string): { list: RevocationList; payload: Buffer } {
  if (!creds.authorityKey) throw new KizunaError('KZ_ERR_CONFIG', `only the board that created mesh ${creds.mesh} can revoke`);
  const list: RevocationList = { v: 1, mesh: creds.mesh, seq: creds.revoked.seq + 1, entries: [...new Set([...creds.revoked.entries, entry])].sort() };
  const payload = signRevocations(list, creds.authorityKey);
  storeRevocations(creds, payload);
  return { list, payload };
}

export function signRevocations(list: RevocationList, key: KeyObject): Buffer {
  const body = JSON.stringify(list);
  return Buffer.from(JSON.stringify({ list: body, sig: crypto.sign('sha256', Buffer.from(body), key).toString('base64') }));
}

/** A signed revocation list of this mesh, or undefined when it is not one (wrong key, damaged). */
export function parseRevocations(payload: Buffer | string | undefined, key: KeyObject, mesh: string): RevocationList | undefined {
  if (!payload) return undefined;
  try {
    const { list, sig } = JSON.parse(payload.toString()) as { list?: unknown; sig?: unknown };
    if (typeof list !== 'string' || typeof sig !== 'string') return undefined;
    if (!crypto.verify('sha256', Buffer.from(list), key, Buffer.from(sig, 'base64'))) return undefined;
    const l = JSON.parse(list) as RevocationList;
    if (l.v !== 1 || l.mesh !== mesh || !Number.isSafeInteger(l.seq) || !Array.isArray(l.entries) || !l.entries.every((e) => typeof e === 'string')) return undefined;
    return l;
  } catch {
    return undefined;
  }
}

/** Keeps a newer signed list (in memory and on disk); returns whether it was newer. */
export function storeRevocations(creds: MeshCredentials, payload: Buffer): boolean {
  const list = parseRevocations(payload, creds.publicKey, creds.mesh);
  if (!list || list.seq <= creds.revoked.seq) return false;
  creds.revoked = list;
  creds.revokedPayload = payload;
  write(path.join(creds.dir, 'revoked.json'), payload.toString(), 0o644);
  return true;
}

export function revokedSet(creds: MeshCredentials): Set<string> {
  return new Set(creds.revoked.entries);
}

export function isRevoked(creds: MeshCredentials, kind: TokenKind, name: string): boolean {
  return creds.revoked.entries.includes(revocationKey(kind, name));
}
