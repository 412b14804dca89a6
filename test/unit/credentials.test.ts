import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initMesh, issueToken, joinMesh, joinToken, loadCredentials, parseRevocations, revoke, signRevocations, storeRevocations } from '../../agent/credentials.js';
import { KizunaError } from '../../mesh/errors.js';
import { verifyToken } from '../../mesh/tokens.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-cred-unit-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const dir = (name: string) => path.join(root, name);
const code = (c: string) => (e: unknown) => e instanceof KizunaError && e.code === c;

test('init: the mesh key only on this board, files private, this board has its token; a second init is refused', () => {
  const creds = initMesh(dir('a'), 'home', 'pi-a');
  assert.equal(fs.statSync(creds.dir).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(creds.dir, 'authority.key')).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.join(creds.dir, 'board.token')).mode & 0o777, 0o600);
  assert.equal(creds.board?.sub, 'pi-a');
  assert.ok(creds.authorityKey);
  assert.throws(() => initMesh(dir('a'), 'home', 'pi-a'), code('KZ_ERR_CONFIG'));
});

test('join: a board joins with its token, gets its node id and no mesh key; another mesh of the same name is refused', () => {
  const a = loadCredentials(dir('a'), 'home')!;
  const joined = joinMesh(dir('b'), joinToken(a, 'pi-b'));
  assert.equal(joined.node, 'pi-b');
  assert.equal(joined.authorityKey, undefined);
  assert.deepEqual(verifyToken(joined.boardToken!, a.publicKey, { mesh: 'home' }).sub, 'pi-b');
  const other = initMesh(dir('x'), 'home', 'pi-x');
  assert.throws(() => joinMesh(dir('b'), joinToken(other, 'pi-b')), code('KZ_ERR_CONFIG'));
  const withAppToken = (jt: string) => {
    const j = JSON.parse(Buffer.from(jt.slice(5), 'base64url').toString());
    j.token = issueToken(a, 'app', 'cam');
    return `kzj1.${Buffer.from(JSON.stringify(j)).toString('base64url')}`;
  };
  assert.throws(() => joinMesh(dir('c'), withAppToken(joinToken(a, 'pi-c'))), code('KZ_ERR_UNAUTHORIZED'), 'an app token is not a join token');
  // Certificates of another mesh in an otherwise valid token.
  const mixed = JSON.parse(Buffer.from(joinToken(a, 'pi-c').slice(5), 'base64url').toString());
  mixed.cert = JSON.parse(Buffer.from(joinToken(other, 'pi-c').slice(5), 'base64url').toString()).cert;
  assert.throws(() => joinMesh(dir('c'), `kzj1.${Buffer.from(JSON.stringify(mixed)).toString('base64url')}`), code('KZ_ERR_UNAUTHORIZED'));
  assert.ok(joined.tls && /BEGIN CERTIFICATE/.test(joined.tls.cert) && /PRIVATE KEY/.test(joined.tls.key));
  assert.equal(fs.statSync(path.join(joined.dir, 'board.key')).mode & 0o777, 0o600);
  assert.throws(() => joinMesh(dir('c'), 'kzj1.garbage'), code('KZ_ERR_UNAUTHORIZED'));
  assert.throws(() => issueToken(joined, 'app', 'cam'), code('KZ_ERR_CONFIG'), 'only the first board makes tokens');
});

test('credentials readable by others are refused', () => {
  const creds = loadCredentials(dir('b'), 'home')!;
  fs.chmodSync(creds.dir, 0o755);
  try {
    assert.throws(() => loadCredentials(dir('b'), 'home'), code('KZ_ERR_CONFIG'));
  } finally {
    fs.chmodSync(creds.dir, 0o700);
  }
});

test('revocations: signed by the mesh key, newer only; forged or older lists are refused', () => {
  const a = loadCredentials(dir('a'), 'home')!;
  const b = loadCredentials(dir('b'), 'home')!;
  const first = revoke(a, 'board:pi-z');
  const second = revoke(a, 'app:cam');
  assert.deepEqual(second.list.entries, ['app:cam', 'board:pi-z']);
  assert.equal(storeRevocations(b, second.payload), true);
  assert.equal(storeRevocations(b, first.payload), false, 'older');
  assert.equal(storeRevocations(b, second.payload), false, 'same');
  const rogue = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const forged = signRevocations({ v: 1, mesh: 'home', seq: 99, entries: [] }, rogue.privateKey);
  assert.equal(storeRevocations(b, forged), false, 'not signed by the mesh');
  assert.equal(parseRevocations(forged, b.publicKey, 'home'), undefined);
  assert.equal(parseRevocations(second.payload, b.publicKey, 'work'), undefined, 'another mesh');
  // The board keeps it across restarts.
  assert.deepEqual(loadCredentials(dir('b'), 'home')!.revoked.entries, ['app:cam', 'board:pi-z']);
});
