/**
 * Signed manifests (models/signature.ts) and the model store's trust policy and path checks
 * (models/store.ts), with real files, real keys and the real onnxruntime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KizunaError } from '../../mesh/errors.js';
import type { Manifest } from '../../models/manifest.js';
import { unsafePath } from '../../models/manifest.js';
import { OnnxEngine } from '../../models/onnx-engine.js';
import { canonicalJson, signaturePath, signManifest, verifyManifest } from '../../models/signature.js';
import { ModelStore, PACKAGE_BUILTIN_DIR, readModel, sha256, type TrustPolicy } from '../../models/store.js';
import { modelFolders } from '../helpers/model-folders.js';

const builtin = (file: string) => fs.readFileSync(path.join(PACKAGE_BUILTIN_DIR, file));
const DIGITS = JSON.parse(builtin('digits.json').toString()) as Manifest;
const ONNX = builtin('digits.onnx');
const mesh = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const rogue = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const policy: TrustPolicy = { publicKey: mesh.publicKey };

const folders = modelFolders('signature');
test.after(() => folders.remove());
const { folder, root } = folders;
const sign = (m: object, key = mesh.privateKey) => `${signManifest(m, key)}\n`;

async function storeOf(dirs: string[], trust?: TrustPolicy, t?: { after(fn: () => unknown): void }): Promise<ModelStore> {
  const store = new ModelStore(new OnnxEngine(), {}, trust);
  t?.after(() => store.close());
  await store.loadFolders(dirs);
  return store;
}
const problems = (store: ModelStore) => Object.fromEntries(store.problems.map((p) => [path.basename(p.manifest), p.code]));
const problemOf = (store: ModelStore, file: string) => store.problems.find((p) => path.basename(p.manifest) === file)?.message ?? '';
const names = (store: ModelStore) => store.list().map((m) => m.manifest.name).sort();
const isCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof KizunaError && e.code === code && (!message || message.test(e.message));

// ------------------------------------------------------------------- sign and verify

test('a signature verifies the manifest it signed, as text or object, re-indented or with its keys in another order', () => {
  const sig = signManifest(JSON.stringify(DIGITS), mesh.privateKey);
  assert.match(sig, /^kzm1\.[A-Za-z0-9_-]+$/);
  assert.ok(verifyManifest(DIGITS, sig, mesh.publicKey));
  assert.ok(verifyManifest(JSON.stringify(DIGITS, null, 4), `${sig}\n`, mesh.publicKey));
  const reordered = Object.fromEntries(Object.entries(DIGITS).reverse());
  assert.ok(verifyManifest(reordered, sig, mesh.publicKey));
  assert.equal(canonicalJson(reordered), canonicalJson(DIGITS));
  assert.equal(canonicalJson({ b: [1, { d: 1, c: 'é\n' }], a: null }), '{"a":null,"b":[1,{"c":"é\\n","d":1}]}');
});

test('verify refuses a changed field, another key, another manifest, and garbage', () => {
  const sig = signManifest(DIGITS, mesh.privateKey);
  const changed: Record<string, unknown> = {
    sha256: { ...DIGITS, sha256: sha256(Buffer.from('other bytes')) },
    file: { ...DIGITS, file: 'other.onnx' },
    labels: { ...DIGITS, labels: [...DIGITS.labels!].reverse() },
    topK: { ...DIGITS, postprocess: { ...DIGITS.postprocess!, topK: 4 } },
    scale: { ...DIGITS, preprocess: { ...DIGITS.preprocess!, scale: 254 } },
    added: { ...DIGITS, license: 'mine now' },
  };
  for (const [field, m] of Object.entries(changed)) assert.equal(verifyManifest(m as object, sig, mesh.publicKey), false, field);
  assert.equal(verifyManifest(DIGITS, signManifest(DIGITS, rogue.privateKey), mesh.publicKey), false, 'another key');
  for (const junk of ['', 'kzm1.', 'kzm1.!!!', sig.replace('kzm1.', 'kz1.'), `${sig}AAAA`, `kzm1.${'A'.repeat(300)}`, sig.slice(0, -4)]) {
    assert.equal(verifyManifest(DIGITS, junk, mesh.publicKey), false, junk);
  }
  assert.equal(verifyManifest('{not json', sig, mesh.publicKey), false);
});

test('the mesh never signs what is not a valid manifest', () => {
  assert.throws(() => signManifest('{"name": "digits",', mesh.privateKey), isCode('KZ_ERR_MANIFEST', /not JSON/));
  assert.throws(() => signManifest({ ...DIGITS, colour: 'red' }, mesh.privateKey), isCode('KZ_ERR_MANIFEST'));
  assert.throws(() => signManifest({ ...DIGITS, sha256: 'abc' }, mesh.privateKey), isCode('KZ_ERR_MANIFEST', /sha256/));
});

// ------------------------------------------------------------------- the store's trust policy

test('with a policy: a signed model loads, an unsigned, tampered, rogue-signed or borrowed-signature one is refused and listed; the others keep serving', async (t) => {
  const tampered = { ...DIGITS, name: 'tampered' };
  const dir = folder({
    'digits.onnx': ONNX,
    'signed.json': { ...DIGITS, name: 'signed' },
    'signed.json.sig': sign({ ...DIGITS, name: 'signed' }),
    'unsigned.json': { ...DIGITS, name: 'unsigned' },
    'tampered.json': { ...tampered, labels: DIGITS.labels!.map((l) => `not ${l}`) },
    'tampered.json.sig': sign(tampered),
    'rogue.json': { ...DIGITS, name: 'rogue' },
    'rogue.json.sig': sign({ ...DIGITS, name: 'rogue' }, rogue.privateKey),
    'borrowed.json': { ...DIGITS, name: 'borrowed' },
    'borrowed.json.sig': sign({ ...DIGITS, name: 'signed' }),
    'garbage.json': { ...DIGITS, name: 'garbage' },
    'garbage.json.sig': 'kzm1.garbage',
  });
  const store = await storeOf([PACKAGE_BUILTIN_DIR, dir], policy, t);
  assert.deepEqual(names(store), ['digits', 'digits-int8', 'signed']);
  const refused = ['unsigned', 'tampered', 'rogue', 'borrowed', 'garbage'];
  assert.deepEqual(problems(store), Object.fromEntries(refused.map((r) => [`${r}.json`, 'KZ_ERR_MODEL_INTEGRITY'])));
  for (const r of refused) assert.match(problemOf(store, `${r}.json`), /not signed by this mesh/, r);
  assert.match(problemOf(store, 'unsigned.json'), new RegExp(`no signature ${signaturePath(path.join(dir, 'unsigned.json'))}`));
  assert.match(problemOf(store, 'tampered.json'), /changed since it was signed, or another key signed it/);
  assert.equal(store.get('signed')?.trust, 'signed');
  assert.equal(store.get('digits')?.trust, 'builtin');
  await assert.rejects(readModel(path.join(dir, 'unsigned.json'), policy), isCode('KZ_ERR_MODEL_INTEGRITY', /not signed by this mesh/));
});

test('a signed manifest whose model bytes changed is refused by the sha256 (KZ_ERR_MODEL_INTEGRITY)', async (t) => {
  const bytes = Buffer.from(ONNX);
  bytes[bytes.length >> 1]! ^= 0x01;
  const dir = folder({ 'digits.onnx': bytes, 'mine.json': { ...DIGITS, name: 'mine' }, 'mine.json.sig': sign({ ...DIGITS, name: 'mine' }) });
  const store = await storeOf([dir], policy, t);
  assert.deepEqual(problems(store), { 'mine.json': 'KZ_ERR_MODEL_INTEGRITY' });
  assert.match(problemOf(store, 'mine.json'), new RegExp(`sha256 is ${sha256(bytes)}, the manifest says ${DIGITS.sha256}`));
});

test('the package\'s own models need no signature, also through a symlink to their folder; a copy of them elsewhere does', async (t) => {
  const link = path.join(root, 'builtin-link');
  fs.symlinkSync(PACKAGE_BUILTIN_DIR, link);
  const copy = folder({ 'digits.json': DIGITS, 'digits.onnx': ONNX });
  const store = await storeOf([link, copy], policy, t);
  assert.deepEqual(names(store), ['digits', 'digits-int8']);
  assert.deepEqual(problems(store), { 'digits.json': 'KZ_ERR_MODEL_INTEGRITY' });
  assert.equal(store.problems[0]?.manifest, path.join(copy, 'digits.json'));
  // A policy may name another folder as the built-in one (an installation that keeps them elsewhere).
  const other = await storeOf([copy], { ...policy, builtinDir: copy }, t);
  assert.deepEqual(names(other), ['digits']);
});

test('without a policy (an open mesh) an unsigned model loads as before', async (t) => {
  const store = await storeOf([folder({ 'digits.json': DIGITS, 'digits.onnx': ONNX })], undefined, t);
  assert.deepEqual(store.problems, []);
  assert.equal(store.get('digits')?.trust, 'unchecked');
});

// ------------------------------------------------------------------- paths stay inside the folder

test('unsafePath: absolute, "..", NUL are refused by their text; names that merely contain dots are not', () => {
  for (const p of ['/etc/passwd', '/dev/zero', '\\\\server\\share\\m.onnx', 'C:\\m.onnx', '\\m.onnx']) assert.equal(unsafePath(p), 'is an absolute path', p);
  for (const p of ['..', '../m.onnx', 'a/../m.onnx', 'a/b/../../../m.onnx', 'a/..', '..\\m.onnx', 'a\\..\\..\\m.onnx']) assert.equal(unsafePath(p), 'climbs out with ".."', p);
  assert.equal(unsafePath('m.onnx\0.txt'), 'contains a NUL character');
  for (const p of ['m.onnx', './m.onnx', 'sub/m.onnx', '...', '..m.onnx', 'm..onnx', 'a/.../b']) assert.equal(unsafePath(p), undefined, p);
});

test('a manifest naming a file out of its folder is KZ_ERR_MANIFEST: absolute, ../, nested ../, symlink out, NUL, labels too', async (t) => {
  const outside = folder({ 'digits.onnx': ONNX, 'labels.txt': 'a\nb\n' });
  const { labels: _labels, ...unlabelled } = DIGITS;
  const dir = folder({
    'digits.onnx': ONNX,
    'sub/labels.txt': Array.from({ length: 10 }, (_, i) => `digit ${i}`).join('\n'),
    'absolute.json': { ...DIGITS, name: 'absolute', file: path.join(outside, 'digits.onnx') },
    'parent.json': { ...DIGITS, name: 'parent', file: `../${path.basename(outside)}/digits.onnx` },
    'nested.json': { ...DIGITS, name: 'nested', file: 'sub/../../x/../digits.onnx' },
    'inner-dots.json': { ...DIGITS, name: 'inner-dots', file: 'sub/../digits.onnx' },
    'link-out.json': { ...DIGITS, name: 'link-out', file: 'out.onnx' },
    'link-dir-out.json': { ...DIGITS, name: 'link-dir-out', file: 'outdir/digits.onnx' },
    'nul.json': { ...DIGITS, name: 'nul', file: 'digits.onnx\u0000.txt' },
    'labels-out.json': { ...unlabelled, name: 'labels-out', labelsFile: '../labels.txt' },
    'labels-link-out.json': { ...unlabelled, name: 'labels-link-out', labelsFile: 'labels-out.txt' },
    'not-a-file.json': { ...DIGITS, name: 'not-a-file', file: 'sub' },
    'link-in.json': { ...DIGITS, name: 'link-in', file: 'in.onnx' },
    'labels-in.json': { ...unlabelled, name: 'labels-in', labelsFile: 'sub/labels.txt' },
  });
  fs.symlinkSync(path.join(outside, 'digits.onnx'), path.join(dir, 'out.onnx'));
  fs.symlinkSync(outside, path.join(dir, 'outdir'));
  fs.symlinkSync(path.join(outside, 'labels.txt'), path.join(dir, 'labels-out.txt'));
  fs.symlinkSync('digits.onnx', path.join(dir, 'in.onnx')); // a relative link to a file of the same folder
  const store = await storeOf([dir], undefined, t);
  assert.deepEqual(names(store), ['labels-in', 'link-in']);
  const refused = ['absolute', 'parent', 'nested', 'inner-dots', 'link-out', 'link-dir-out', 'nul', 'labels-out', 'labels-link-out', 'not-a-file'];
  assert.deepEqual(problems(store), Object.fromEntries(refused.map((r) => [`${r}.json`, 'KZ_ERR_MANIFEST'])));
  assert.match(problemOf(store, 'absolute.json'), new RegExp(`model file "${path.join(outside, 'digits.onnx')}" is an absolute path; it must name a file inside ${dir}`));
  for (const r of ['parent', 'nested', 'inner-dots']) assert.match(problemOf(store, `${r}.json`), /model file ".*" climbs out with "\.\."/, r);
  assert.match(problemOf(store, 'link-out.json'), new RegExp(`model file ${path.join(dir, 'out.onnx')} leads to ${path.join(fs.realpathSync(outside), 'digits.onnx')}, outside the model folder`));
  assert.match(problemOf(store, 'link-dir-out.json'), /leads to .*, outside the model folder/);
  assert.match(problemOf(store, 'nul.json'), /contains a NUL character/);
  assert.match(problemOf(store, 'labels-out.json'), /labels file "\.\.\/labels\.txt" climbs out/);
  assert.match(problemOf(store, 'labels-link-out.json'), /labels file .* outside the model folder/);
  assert.match(problemOf(store, 'not-a-file.json'), /is not a regular file/);
  assert.deepEqual(store.get('labels-in')?.labels, Array.from({ length: 10 }, (_, i) => `digit ${i}`));
});

test('a model folder that is itself a symlink serves its files; a signature cannot bless a path out', async (t) => {
  const real = folder({ 'digits.onnx': ONNX, 'digits.json': DIGITS, 'digits.json.sig': sign(DIGITS) });
  const link = path.join(root, 'linked-models');
  fs.symlinkSync(real, link);
  const store = await storeOf([link], policy, t);
  assert.deepEqual(names(store), ['digits']);
  const escaping = { ...DIGITS, file: `../${path.basename(real)}/digits.onnx` };
  const dir = folder({ 'esc.json': escaping, 'esc.json.sig': sign(escaping) });
  await assert.rejects(readModel(path.join(dir, 'esc.json'), policy), isCode('KZ_ERR_MANIFEST', /climbs out/));
});

test('a signature file must be a small regular file of the folder', async (t) => {
  const outside = folder({ 'x.sig': sign({ ...DIGITS, name: 'linked-sig' }) });
  const dir = folder({
    'digits.onnx': ONNX,
    'linked-sig.json': { ...DIGITS, name: 'linked-sig' },
    'huge.json': { ...DIGITS, name: 'huge' },
    'huge.json.sig': `${sign({ ...DIGITS, name: 'huge' })}${' '.repeat(5000)}`,
  });
  fs.symlinkSync(path.join(outside, 'x.sig'), path.join(dir, 'linked-sig.json.sig'));
  const store = await storeOf([dir], policy, t);
  assert.deepEqual(problems(store), { 'linked-sig.json': 'KZ_ERR_MANIFEST', 'huge.json': 'KZ_ERR_MODEL_INTEGRITY' });
  assert.match(problemOf(store, 'linked-sig.json'), /signature .* outside the model folder/);
  assert.match(problemOf(store, 'huge.json'), /bytes, not a signature/);
});
