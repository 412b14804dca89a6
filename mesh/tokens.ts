/**
 * Mesh tokens: small credentials signed with the mesh's key (ECDSA P-256), checked by any board
 * with the mesh's public key, no server to ask.
 *
 *   kz1.<base64url(JSON claims)>.<base64url(DER ECDSA signature of "kz1.<claims>")>
 *
 * An app token names the app (its client name in topics: it may publish requests and read
 * answers in that name only). Tokens travel as the MQTT password over TLS, to a broker whose
 * certificate the client has checked first, so a rogue broker never sees one.
 */
import crypto, { type KeyObject } from 'node:crypto';
import { KizunaError } from './errors.js';
import { isSegment } from './topics.js';

export type TokenKind = 'app' | 'board';

export interface TokenClaims {
  v: 1;
  mesh: string;
  kind: TokenKind;
  /** The app's client name, or the board's node id. */
  sub: string;
  /** Issued at (Unix seconds). */
  iat: number;
  /** Expires at (Unix seconds); absent: until revoked. */
  exp?: number;
  /** The token's id, for revocation. */
  jti: string;
}

const PREFIX = 'kz1';

/** How a board or app is named in a revocation list (and keyed anywhere one identity is meant). */
export const revocationKey = (kind: TokenKind, sub: string): string => `${kind}:${sub}`;
const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export function signToken(claims: Omit<TokenClaims, 'v' | 'jti' | 'iat'> & { iat?: number; jti?: string }, key: KeyObject): string {
  if (!isSegment(claims.sub)) throw new KizunaError('KZ_ERR_BAD_NAME', `token subject ${JSON.stringify(claims.sub)} is not a valid client or node name`);
  const full: TokenClaims = {
    v: 1,
    mesh: claims.mesh,
    kind: claims.kind,
    sub: claims.sub,
    iat: claims.iat ?? Math.floor(Date.now() / 1000),
    ...(claims.exp !== undefined ? { exp: claims.exp } : {}),
    jti: claims.jti ?? crypto.randomBytes(9).toString('base64url'),
  };
  const body = `${PREFIX}.${b64url(JSON.stringify(full))}`;
  return `${body}.${b64url(crypto.sign('sha256', Buffer.from(body), key))}`;
}

/**
 * The name a token gives its holder, read WITHOUT checking the signature (the broker checks it):
 * what an app passes as its client name. Undefined for anything that is not a kz1 token.
 */
export function tokenSubject(token: string): string | undefined {
  const [prefix, claims] = token.split('.');
  if (prefix !== PREFIX || !claims) return undefined;
  try {
    const sub = (JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as { sub?: unknown }).sub;
    return typeof sub === 'string' && isSegment(sub) ? sub : undefined;
  } catch {
    return undefined;
  }
}

const deny = (why: string) => new KizunaError('KZ_ERR_UNAUTHORIZED', why);

/**
 * The claims of a token that the mesh's public key signed, for this mesh, unexpired and not
 * revoked; otherwise KZ_ERR_UNAUTHORIZED saying why.
 */
export function verifyToken(
  token: string, key: KeyObject, expect: { mesh: string; nowS?: number; revoked?: ReadonlySet<string> },
): TokenClaims {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== PREFIX || token.length > 4096) throw deny('not a Kizuna token (kz1.<claims>.<signature>)');
  const [, claimsB64, sigB64] = parts as [string, string, string];
  let ok = false;
  try {
    ok = crypto.verify('sha256', Buffer.from(`${PREFIX}.${claimsB64}`), key, Buffer.from(sigB64, 'base64url'));
  } catch {
    ok = false;
  }
  if (!ok) throw deny('the token is not signed by this mesh');
  let c: Partial<TokenClaims>;
  try {
    c = JSON.parse(Buffer.from(claimsB64, 'base64url').toString('utf8')) as Partial<TokenClaims>;
  } catch {
    throw deny('the token claims are not JSON');
  }
  if (c.v !== 1 || (c.kind !== 'app' && c.kind !== 'board') || typeof c.sub !== 'string' || !isSegment(c.sub) || typeof c.jti !== 'string' || !Number.isSafeInteger(c.iat)) {
    throw deny('the token claims are incomplete');
  }
  if (c.mesh !== expect.mesh) throw deny(`the token is for mesh ${JSON.stringify(c.mesh)}, not ${expect.mesh}`);
  const now = expect.nowS ?? Math.floor(Date.now() / 1000);
  if (c.exp !== undefined && !(Number.isSafeInteger(c.exp) && c.exp > now)) throw deny('the token has expired');
  if (expect.revoked?.has(c.jti) || expect.revoked?.has(revocationKey(c.kind, c.sub))) throw deny(`the token of ${c.kind} ${c.sub} is revoked`);
  return c as TokenClaims;
}
