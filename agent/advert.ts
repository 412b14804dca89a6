/**
 * What an agent tells the others about itself: in mDNS TXT records, in the answer to a hello probe
 * on its mesh port (static discovery), and in its retained status on the broker. Everything the
 * election ranks by is here, so every agent ranks from the same facts.
 */
import { MAX_ADDRESSES } from '../mesh/status.js';
import { isSegment, PROTOCOL_VERSION } from '../mesh/topics.js';

export type Role = 'joining' | 'agent' | 'standby' | 'broker';
/**
 * Terms stay far below 2^53: a claim above this is invalid, and nextTerm never passes it, so a
 * high claim can never push a new broker's term out of the safe integers.
 */
export const MAX_TERM = 2 ** 32;
const ROLES: readonly Role[] = ['joining', 'agent', 'standby', 'broker'];

export interface Advert {
  v: number;
  mesh: string;
  node: string;
  /** Random per process start: tells a restarted agent, or a copied SD card, from the original. */
  instance: string;
  role: Role;
  /** The broker term this agent follows (or leads); 0 before it joins. */
  term: number;
  /** The mesh port: MQTT for apps and agents, and the hello probe. */
  port: number;
  /** Addresses this agent can be reached at (IPv4 first). */
  addresses: string[];
  /** Rank inputs. */
  eligible: boolean;
  ramMiB: number;
  cores: number;
  throttled: boolean;
}

/** TXT records are strings of at most 255 bytes each: short keys, plain values. */
export function advertToTxt(a: Advert): Record<string, string> {
  return {
    v: String(a.v),
    mesh: a.mesh,
    node: a.node,
    inst: a.instance,
    role: a.role,
    term: String(a.term),
    port: String(a.port),
    elig: a.eligible ? '1' : '0',
    ram: String(a.ramMiB),
    cores: String(a.cores),
    thr: a.throttled ? '1' : '0',
  };
}

/** An advert from TXT records (addresses come from the mDNS answer), or undefined if not ours or invalid. */
export function advertFromTxt(txt: Record<string, unknown>, addresses: string[]): Advert | undefined {
  const s = (k: string) => (typeof txt[k] === 'string' ? (txt[k] as string) : Buffer.isBuffer(txt[k]) ? (txt[k] as Buffer).toString() : undefined);
  const int = (k: string) => {
    const n = Number(s(k));
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  };
  const candidate = {
    v: int('v'),
    mesh: s('mesh'),
    node: s('node'),
    instance: s('inst'),
    role: s('role'),
    term: int('term'),
    port: int('port'),
    addresses,
    eligible: s('elig') === '1',
    ramMiB: int('ram'),
    cores: int('cores'),
    throttled: s('thr') === '1',
  };
  return validAdvert(candidate) ? candidate : undefined;
}

/** Bounds as in a node status (mesh/status.ts), so an advert and a status rank a board alike. */
export function validAdvert(a: Partial<Record<keyof Advert, unknown>>): a is Advert {
  return (
    a.v === PROTOCOL_VERSION &&
    typeof a.mesh === 'string' && isSegment(a.mesh) &&
    typeof a.node === 'string' && isSegment(a.node) &&
    typeof a.instance === 'string' && /^[0-9a-f]{8,32}$/.test(a.instance) &&
    ROLES.includes(a.role as Role) &&
    Number.isSafeInteger(a.term) && (a.term as number) >= 0 && (a.term as number) <= MAX_TERM &&
    Number.isInteger(a.port) && (a.port as number) > 0 && (a.port as number) < 65536 &&
    Array.isArray(a.addresses) && a.addresses.length <= MAX_ADDRESSES && a.addresses.every((x) => typeof x === 'string' && x.length <= 256) &&
    typeof a.eligible === 'boolean' &&
    Number.isSafeInteger(a.ramMiB) && (a.ramMiB as number) >= 0 &&
    Number.isSafeInteger(a.cores) && (a.cores as number) >= 0 &&
    typeof a.throttled === 'boolean'
  );
}
