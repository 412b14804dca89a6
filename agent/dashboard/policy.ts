/**
 * Who the dashboard lets in, decided once at start from where it listens and what the mesh is:
 *
 *  - on loopback: anyone on this machine, as for the mesh's own port;
 *  - elsewhere, on a mesh with credentials: only with the dashboard's app token (`dashboardToken`,
 *    checked here against the mesh key: an app's, of this mesh); without one the agent refuses to
 *    start (KZ_ERR_CONFIG);
 *  - elsewhere, on an open mesh (--insecure): open like the mesh, unless a token is set, which then
 *    serves as its password.
 *
 * Without a login, requests must name this machine in their Host header (an IP address,
 * localhost or this host's name), so a web page elsewhere cannot reach the dashboard through a
 * DNS name it points at 127.0.0.1 (DNS rebinding).
 */
import type { KeyObject } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { KizunaError } from '../../mesh/errors.js';
import { verifyToken } from '../../mesh/tokens.js';
import { isLoopback } from '../security.js';

export interface Policy {
  loginRequired: boolean;
}

export function dashboardPolicy(o: { host: string; mesh: string; token?: string; publicKey?: KeyObject }): Policy {
  if (o.publicKey && o.token !== undefined) {
    let kind: string;
    try {
      kind = verifyToken(o.token, o.publicKey, { mesh: o.mesh }).kind;
    } catch (err) {
      throw new KizunaError('KZ_ERR_CONFIG', `dashboardToken: ${(err as Error).message} (make one with \`kizuna token app dashboard\`)`);
    }
    if (kind !== 'app') throw new KizunaError('KZ_ERR_CONFIG', 'dashboardToken: a board\'s token; the dashboard needs an app token (`kizuna token app dashboard`)');
  }
  if (isLoopback(o.host)) return { loginRequired: false };
  if (o.publicKey && o.token === undefined) {
    throw new KizunaError(
      'KZ_ERR_CONFIG',
      `the dashboard listens on ${o.host} and this mesh has credentials: give it an app token as its login (--dashboard-token, from \`kizuna token app dashboard\`), or keep it on 127.0.0.1`,
    );
  }
  return { loginRequired: o.token !== undefined };
}

/** Whether a Host header names this machine: an IP address, localhost, or this host's name. */
export function trustedHost(header: string | undefined): boolean {
  if (!header) return false;
  const name = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d+$/, '');
  if (net.isIP(name)) return true;
  const lower = name.toLowerCase().replace(/\.$/, '');
  const me = os.hostname().toLowerCase();
  return lower === 'localhost' || lower === me || lower === `${me}.local`;
}
