import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { signToken, verifyToken } from '../../mesh/tokens.js';
import { KizunaError } from '../../mesh/errors.js';

const mesh = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const other = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

const unauthorized = (fn: () => unknown, re: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_UNAUTHORIZED' && re.test(e.message));

test('a token signed by the mesh key verifies, with its claims', () => {
  const t = signToken({ mesh: 'home', kind: 'app', sub: 'cam', iat: 1000, jti: 'j1' }, mesh.privateKey);
  assert.match(t, /^kz1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  assert.deepEqual(verifyToken(t, mesh.publicKey, { mesh: 'home', nowS: 2000 }), { v: 1, mesh: 'home', kind: 'app', sub: 'cam', iat: 1000, jti: 'j1' });
});

test('refused: another key, another mesh, expired, revoked (by id or by name), tampered, not a token', () => {
  const t = signToken({ mesh: 'home', kind: 'app', sub: 'cam', jti: 'j1', exp: 5000 }, mesh.privateKey);
  unauthorized(() => verifyToken(t, other.publicKey, { mesh: 'home', nowS: 10 }), /not signed by this mesh/);
  unauthorized(() => verifyToken(t, mesh.publicKey, { mesh: 'work', nowS: 10 }), /for mesh "home", not work/);
  unauthorized(() => verifyToken(t, mesh.publicKey, { mesh: 'home', nowS: 5000 }), /expired/);
  unauthorized(() => verifyToken(t, mesh.publicKey, { mesh: 'home', nowS: 10, revoked: new Set(['j1']) }), /revoked/);
  unauthorized(() => verifyToken(t, mesh.publicKey, { mesh: 'home', nowS: 10, revoked: new Set(['app:cam']) }), /revoked/);
  // Another subject with the same signature: the signature covers the claims.
  const [head, claims, sig] = t.split('.') as [string, string, string];
  const forged = JSON.parse(Buffer.from(claims, 'base64url').toString());
  forged.sub = 'door';
  unauthorized(() => verifyToken(`${head}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${sig}`, mesh.publicKey, { mesh: 'home' }), /not signed/);
  for (const junk of ['', 'kz1', 'kz1..', 'kz2.a.b', 'x'.repeat(5000), `kz1.${claims}.AAAA`]) unauthorized(() => verifyToken(junk, mesh.publicKey, { mesh: 'home' }), /./);
});

test('a signed token with incomplete claims is refused; a bad subject is refused at signing', () => {
  const body = `kz1.${Buffer.from(JSON.stringify({ v: 1, mesh: 'home', kind: 'root', sub: 'x', iat: 1, jti: 'j' })).toString('base64url')}`;
  const t = `${body}.${crypto.sign('sha256', Buffer.from(body), mesh.privateKey).toString('base64url')}`;
  unauthorized(() => verifyToken(t, mesh.publicKey, { mesh: 'home' }), /incomplete/);
  assert.throws(() => signToken({ mesh: 'home', kind: 'app', sub: 'a/b' }, mesh.privateKey), (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_BAD_NAME');
});
