/**
 * Proof of membership in hello answers. Anyone on the LAN can multicast an mDNS advert or answer a
 * hello claiming to be the mesh's broker with a higher term; on a mesh with credentials a board
 * acts (follows, steps down, walks to a candidate) only on an answer that proves it comes from a
 * board of the mesh: the answerer signs the prober's fresh nonce and its advert with its board
 * key, and sends the board certificate that the mesh CA signed for that node id.
 *
 * What is signed is a fixed text of the advert's fields (addresses excluded: the prober knows
 * where it connected), so both sides build the same bytes whatever JSON key order was used.
 */
import crypto, { X509Certificate } from 'node:crypto';
import type { Advert } from '../advert.js';
import { parseIdentity } from '../../mesh/x509.js';

export interface HelloProof {
  /** The board certificate, DER in base64. */
  cert: string;
  /** ECDSA P-256 SHA-256 (DER) over helloPayload(advert, nonce), base64. */
  sig: string;
}

/** Signs an advert for the nonce a prober sent. */
export type HelloProver = (advert: Advert, nonce: string) => HelloProof;
/** Why an answer does not prove membership, or undefined when it does. */
export type HelloVerifier = (advert: Advert, proof: unknown, nonce: string) => string | undefined;

/** A nonce is 16 random bytes in hex: unique per probe, so an old answer cannot be replayed. */
export const NONCE = /^[0-9a-f]{32}$/;
export const newNonce = (): string => crypto.randomBytes(16).toString('hex');

export function helloPayload(a: Advert, nonce: string): Buffer {
  const fields = [a.v, a.mesh, a.node, a.instance, a.role, a.term, a.port, a.eligible ? 1 : 0, a.ramMiB, a.cores, a.throttled ? 1 : 0];
  return Buffer.from(['kizuna-hello/1', nonce, ...fields].join('\n'));
}

/** A prover from this board's TLS identity (PEM certificate and key, as in the credentials). */
export function helloProver(identity: { cert: string; key: string }): HelloProver {
  const cert = new X509Certificate(identity.cert).raw.toString('base64');
  const key = crypto.createPrivateKey(identity.key);
  return (advert, nonce) => ({ cert, sig: crypto.sign('sha256', helloPayload(advert, nonce), key).toString('base64') });
}

export interface VerifierOptions {
  /** The mesh CA certificate (PEM). */
  ca: string;
  mesh: string;
  /** Whether a board is revoked now (the list changes while the agent runs). */
  isRevoked: (node: string) => boolean;
  now?: () => number;
}

export function helloVerifier(opts: VerifierOptions): HelloVerifier {
  const caKey = new X509Certificate(opts.ca).publicKey;
  const now = opts.now ?? Date.now;
  return (advert, proof, nonce) => {
    if (!isProof(proof)) return 'it sent no proof of membership';
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(proof.cert, 'base64'));
    } catch {
      return 'its certificate does not parse';
    }
    if (!cert.verify(caKey)) return "its certificate is not signed by this mesh's CA";
    const t = now();
    if (t < Date.parse(cert.validFrom) || t > Date.parse(cert.validTo)) return 'its certificate is expired or not valid yet';
    const id = parseIdentity(cert);
    if (!id || id.kind !== 'board' || id.mesh !== opts.mesh) return 'its certificate is not a board certificate of this mesh';
    if (id.subject !== advert.node || advert.mesh !== opts.mesh) return `it answers as ${advert.node} with the certificate of board ${id.subject}`;
    if (opts.isRevoked(id.subject)) return `board ${id.subject} is revoked`;
    let signed = false;
    try {
      signed = crypto.verify('sha256', helloPayload(advert, nonce), cert.publicKey, Buffer.from(proof.sig, 'base64'));
    } catch {
      signed = false;
    }
    return signed ? undefined : 'its signature does not match its certificate and this probe';
  };
}

function isProof(p: unknown): p is HelloProof {
  const o = p as Partial<HelloProof> | null;
  return typeof o === 'object' && o !== null && typeof o.cert === 'string' && typeof o.sig === 'string' && o.cert.length < 8192 && o.sig.length < 512;
}
