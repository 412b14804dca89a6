/**
 * Signed model manifests. The mesh key (the one that signs tokens) signs a manifest; every board
 * checks it with the mesh's public key alone. The manifest carries the sha256 of its .onnx file,
 * so a valid signature covers the model's bytes too (the store checks those as it loads them).
 *
 * The signature is detached, in `<manifest>.sig` beside the manifest (`digits.json` ->
 * `digits.json.sig`), one line:
 *
 *   kzm1.<base64url(DER ECDSA P-256 signature over SHA-256 of the payload)>
 *   payload = "kizuna-manifest-v1\n" + canonical JSON of the manifest (keys sorted, no spaces)
 *
 * The payload is the parsed manifest in canonical form, not the file's bytes: re-indenting a
 * manifest keeps its signature, and what is verified is exactly what the store then uses (a
 * key given twice counts once, as JSON.parse reads it). The prefix keeps a manifest signature
 * from ever being taken for a token or a revocation list the same key signed.
 */
import crypto, { type KeyObject } from 'node:crypto';
import { KizunaError } from '../mesh/errors.js';
import { parseManifest } from './manifest.js';

const PREFIX = 'kzm1.';
const DOMAIN = 'kizuna-manifest-v1\n';
/** A P-256 DER signature is at most 72 bytes (96 characters of base64url); anything longer is not one. */
const MAX_SIGNATURE_CHARS = 256;

/** Where the signature of a manifest lives. */
export const signaturePath = (manifestPath: string): string => `${manifestPath}.sig`;

/** JSON with every object's keys sorted, no whitespace: one text per JSON value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new KizunaError('KZ_ERR_MANIFEST', `${value} has no JSON form`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  throw new KizunaError('KZ_ERR_MANIFEST', `a ${typeof value} has no JSON form`);
}

const parse = (manifest: string | object): unknown => (typeof manifest === 'string' ? JSON.parse(manifest) : manifest);
const payload = (manifest: unknown): Buffer => Buffer.from(DOMAIN + canonicalJson(manifest), 'utf8');

/**
 * The signature of a manifest (its JSON text or the parsed object), made with the mesh's private
 * key. Refuses what is not a valid manifest (KZ_ERR_MANIFEST): the mesh never vouches for one.
 */
export function signManifest(manifestJson: string | object, authorityKey: KeyObject): string {
  let value: unknown;
  try {
    value = parse(manifestJson);
  } catch (err) {
    throw new KizunaError('KZ_ERR_MANIFEST', `not JSON: ${(err as Error).message}`);
  }
  const manifest = parseManifest(value, 'the manifest to sign');
  return PREFIX + crypto.sign('sha256', payload(manifest), authorityKey).toString('base64url');
}

/**
 * Whether `signature` (the text of a .sig file; surrounding whitespace ignored) is the mesh key's
 * signature of this manifest. False for anything else: another key, another manifest, garbage.
 */
export function verifyManifest(manifestJson: string | object, signature: string, meshPublicKey: KeyObject): boolean {
  const sig = signature.trim();
  if (!sig.startsWith(PREFIX) || sig.length > MAX_SIGNATURE_CHARS || !/^[A-Za-z0-9_-]+$/.test(sig.slice(PREFIX.length))) return false;
  try {
    return crypto.verify('sha256', payload(parse(manifestJson)), meshPublicKey, Buffer.from(sig.slice(PREFIX.length), 'base64url'));
  } catch {
    return false;
  }
}
